"""Raw llama.cpp speed of whichever llama_cpp is importable: prefill and decode tokens/s, as one JSON line.

    python bench/llama_speed.py [--prompt-tokens 1536] [--decode-tokens 64]

``bench/context.py --native-site DIR`` runs this twice, once with the venv's portable build and once with
a native build installed under DIR (``PYTHONPATH=DIR``), so the two builds are compared in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.llamacpp import bundled_model_path  # noqa: E402

CORPUS = Path(os.environ.get("QUIRE_CORPUS", Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"))
ESSAYS = CORPUS / "haystack" / "paul_graham_essays"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt-tokens", type=int, default=1536)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(model_path=str(bundled_model_path()), n_ctx=args.prompt_tokens + args.decode_tokens + 8,
                n_threads=args.threads, n_threads_batch=args.threads, n_batch=512, seed=0, verbose=False)
    text = " ".join(p.read_text(errors="replace") for p in sorted(ESSAYS.glob("*.txt"))[:6])
    tokens = llm.tokenize(text.encode(), add_bos=False)[: args.prompt_tokens]
    t = time.perf_counter()
    llm.eval(tokens)
    prefill_s = time.perf_counter() - t
    t = time.perf_counter()
    n = 0
    for _ in llm.generate(tokens, temp=0.0):  # the prompt is cached (one token is replayed): decode is timed
        n += 1
        if n >= args.decode_tokens:
            break
    decode_s = time.perf_counter() - t
    print(json.dumps({
        "llama_cpp": str(Path(llama_cpp.__file__).parent), "prompt_tokens": len(tokens),
        "prefill_tokens_per_s": round(len(tokens) / prefill_s, 1), "decode_tokens_per_s": round(n / decode_s, 1),
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
    }))


if __name__ == "__main__":
    main()
