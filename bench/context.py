"""Context-engine benchmark on the CPU default. One run prints ``name=value`` lines.

    .venv/bin/python bench/context.py [--window 8192] [--sweep-window 2048] [--skip-sweep] [--native-site DIR]

- portable_over_native_prefill / _decode: raw prefill and decode tokens/s of the installed (portable) llama.cpp
  build over a native (-march=native) build installed under DIR, alternated twice each (target >= 0.90). Make DIR
  with: CMAKE_ARGS="-DGGML_NATIVE=ON" .venv/bin/pip wheel --no-cache-dir --no-deps llama-cpp-python==VERSION -w W
  && .venv/bin/pip install --no-deps --target DIR W/*.whl

- followup_ttft_ratio: a follow-up's time to first token over the first question's, same ~window-sized corpus
  (target <= 0.05).
- reopen_ttft_ratio: a new runtime (as after a restart) that restores the persisted KV state, over recomputing
  the corpus (target <= 0.10).
- overhead_ratio: Quire's end-to-end answer time over a raw llama-cpp-python call on the same prompt, both cold
  (target <= 1.05).
- focus_s / shards_full_s / sweep_s: wall time on a corpus ten times the (smaller) sweep window.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.base import GenerateOptions  # noqa: E402
from backend.context import TokenCounter  # noqa: E402
from backend.llamacpp import LlamaCppRuntime  # noqa: E402
from backend import shards as sharding  # noqa: E402
from backend.sweep import map_part  # noqa: E402
from quire.api import Quire  # noqa: E402
from core.document import Locator, ParsedDocument, Segment  # noqa: E402
from core.settings import Settings  # noqa: E402

CORPUS = Path(os.environ.get("QUIRE_CORPUS", Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"))
ESSAYS = CORPUS / "haystack" / "paul_graham_essays"


def paragraphs() -> list[str]:
    out = []
    for f in sorted(ESSAYS.glob("*.txt")):
        lines = f.read_text(errors="replace").splitlines()
        out += ["\n".join(lines[i : i + 6]) for i in range(0, len(lines), 6)]
    return out


def corpus_session(q: Quire, name: str, tokens: int, rt: LlamaCppRuntime) -> int:
    s = q.session(name)
    segs, used = [], 0
    for i, p in enumerate(paragraphs()):
        n = rt.count_tokens(p) + 12
        if used + n > tokens:
            break
        segs.append(Segment("text", p, Locator(path="essays.txt", line_start=i + 1, line_end=i + 1), tokens=n))
        used += n
    q.add_parsed(s, ParsedDocument(f"{name}.txt", "text", segs), sha256=hashlib.sha256(name.encode()).hexdigest())
    return used


def timed_answer(q: Quire, session: str, question: str, **kw):
    t = time.perf_counter()
    a = q.answer(session, question, **kw)
    return a, time.perf_counter() - t


def llama_speed(site: Path | None) -> dict:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("llama_speed.py"))], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def portable_vs_native(site: Path) -> None:
    """The installed build against a -march=native one, alternated so that both see the same machine load."""
    runs: dict[str, list[dict]] = {"portable": [], "native": []}
    for _ in range(2):
        runs["portable"].append(llama_speed(None))
        runs["native"].append(llama_speed(site))
    best = {k: {m: max(r[m] for r in v) for m in ("prefill_tokens_per_s", "decode_tokens_per_s")} for k, v in runs.items()}
    assert runs["native"][0]["llama_cpp"] != runs["portable"][0]["llama_cpp"], "both runs used the same build"
    for kind in ("portable", "native"):
        print(f"{kind}_build={runs[kind][0]['llama_cpp']}")
        print(f"{kind}_system_info={runs[kind][0]['system_info']}")
        print(f"{kind}_prefill_tokens_per_s={best[kind]['prefill_tokens_per_s']}")
        print(f"{kind}_decode_tokens_per_s={best[kind]['decode_tokens_per_s']}")
    for m, name in (("prefill_tokens_per_s", "prefill"), ("decode_tokens_per_s", "decode")):
        print(f"portable_over_native_{name}={best['portable'][m] / best['native'][m]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=int, default=8192)
    ap.add_argument("--sweep-window", type=int, default=2048)
    ap.add_argument("--answer-tokens", type=int, default=48)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--native-site", type=Path, help="a folder with a native build of llama_cpp (see above)")
    args = ap.parse_args()
    if args.native_site:
        portable_vs_native(args.native_site)
    home = Path(tempfile.mkdtemp(prefix="quire-bench-"))
    base = Settings(home=home, threads=2, max_answer_tokens=args.answer_tokens)

    # 1. follow-up and reopen on a window-sized corpus
    s = base.replace(context_window=args.window)
    with Quire(s) as q:
        rt = q.runtime()
        tokens = corpus_session(q, "follow", args.window - 600, rt)
        print(f"corpus_tokens={tokens}")
        first, _ = timed_answer(q, "follow", "What does the author say about startups?", strategy="full")
        second, _ = timed_answer(q, "follow", "What does the author say about money?", strategy="full")
        print(f"first_ttft_s={first.turn.ttft_s:.3f}")
        decode_s = max(first.turn.total_s - first.turn.ttft_s, 1e-6)
        print(f"decode_tokens_per_s={max(first.turn.completion_tokens - 1, 0) / decode_s:.1f}")
        print(f"prefill_tokens_per_s={first.turn.prompt_tokens / first.turn.ttft_s:.1f}")
        print(f"followup_ttft_s={second.turn.ttft_s:.3f}")
        print(f"followup_cached_tokens={second.turn.cached_tokens}/{second.turn.prompt_tokens}")
        print(f"followup_ttft_ratio={second.turn.ttft_s / first.turn.ttft_s:.4f}")
    with Quire(s) as q:  # a new runtime: nothing in memory, the state comes from disk
        reopened, _ = timed_answer(q, "follow", "What does the author say about essays?", strategy="full")
        print(f"reopen_ttft_s={reopened.turn.ttft_s:.3f} (cache: {reopened.turn.meta.get('cache_source')})")
        print(f"reopen_ttft_ratio={reopened.turn.ttft_s / first.turn.ttft_s:.4f}")

    # 2. overhead against a raw llama-cpp-python call on the same prompt, both cold, small window
    s2 = base.replace(context_window=args.sweep_window, prefix_cache_mb=0, home=home / "overhead")
    question = "What does the author say about hackers?"
    with Quire(s2) as q:
        corpus_session(q, "over", args.sweep_window - 400, q.runtime())
        ctx = q.assemble("over", question, strategy="full")
        prompt_tokens = q.runtime().tokenize_prompt(ctx.prompt)
        q.runtime().reset_cache()
        _, quire_s = timed_answer(q, "over", question, strategy="full")
    from llama_cpp import Llama

    raw = Llama(model_path=str(LlamaCppRuntime(s2).model_path), n_ctx=args.sweep_window, n_threads=2, n_threads_batch=2, n_batch=512, seed=0, verbose=False)
    t = time.perf_counter()
    for _ in raw.create_completion(prompt=prompt_tokens, max_tokens=args.answer_tokens, temperature=0.0, seed=0, stream=True):
        pass
    raw_s = time.perf_counter() - t
    raw.close()
    print(f"quire_answer_s={quire_s:.3f}")
    print(f"raw_llama_s={raw_s:.3f}")
    print(f"overhead_ratio={quire_s / raw_s:.4f}")

    if args.skip_sweep:
        return
    # 3. a corpus ten times the window: focus, the question over every shard, sweep
    s3 = base.replace(context_window=args.sweep_window, prefix_cache_mb=0, home=home / "sweep")
    question = "List every company the author mentions."
    with Quire(s3) as q:
        rt = q.runtime()
        tokens = corpus_session(q, "big", args.sweep_window * 10, rt)
        print(f"big_corpus_tokens={tokens} window={args.sweep_window}")
        _, focus_s = timed_answer(q, "big", question, strategy="focus")
        print(f"focus_s={focus_s:.1f}")
        segments = q.segments("big")
        counter = TokenCounter(rt)
        shards = sharding.plan(segments, counter, sharding.budget(rt, args.answer_tokens))
        t = time.perf_counter()
        for shard in shards:
            prompt = shard.prompt(map_part(question))
            for _ in rt.generate(prompt, GenerateOptions(max_tokens=args.answer_tokens)):
                pass
        print(f"shards={len(shards)}")
        print(f"shards_full_s={time.perf_counter() - t:.1f}")
        sweep, sweep_s = timed_answer(q, "big", question, strategy="sweep")
        print(f"sweep_s={sweep_s:.1f} (findings: {sweep.turn.meta.get('findings')})")
        print(f"sweep_over_focus_ratio={sweep_s / focus_s:.2f}")


if __name__ == "__main__":
    main()
