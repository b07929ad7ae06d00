"""Numbered lines and token batching: what source files, JSON and notebooks share.

``code.py`` (codebases and single source files), ``text.py`` (JSON) and ``notebook.py`` all cut
text into numbered-line segments with ``path:line`` locators and count their tokens in batches;
it lives here so that none of them imports another for it.
"""

from __future__ import annotations

import operator
from concurrent.futures import Future, ThreadPoolExecutor

from core.document import Locator, Segment
from core.errors import Cancelled
from core.tokens import estimate_many, estimate_sampled, estimate_tokens
from ingest.base import ExtractContext

CHUNK_LINES = 60
CHUNK_CHARS = 4000  # about 1,000 tokens of code
LONG_LINE = 2 * CHUNK_CHARS  # a line longer than this is cut into pieces of its own
TOKEN_BATCH = 256  # segments handed to the token counter at a time


def split_lines(text: str) -> list[str]:
    """Lines as editors number them (``\\n``, ``\\r\\n`` or ``\\r``), without a phantom last line."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def check_cancel(ctx: ExtractContext, name: str) -> None:
    if ctx.cancelled():
        raise Cancelled(name, "was cancelled before it was read completely.", hint="Add it again to read it.")


# -- token counts -----------------------------------------------------------
def count_many(texts: list[str], ctx: ExtractContext, check=lambda: None) -> list[int]:
    """Token estimates for many texts: batched on two threads unless the context brings its own counter."""
    if ctx.count_tokens is not estimate_tokens:
        return [ctx.count_tokens(t) for t in texts]
    counts: list[int] = []
    for i in range(0, len(texts), TOKEN_BATCH):
        check()
        counts.extend(estimate_many(texts[i:i + TOKEN_BATCH]))
    return counts


def count_tokens(texts: list[str], ctx: ExtractContext, name: str = "") -> list[int]:
    check_cancel(ctx, name)
    if ctx.count_tokens is estimate_tokens and len(texts) >= TOKEN_BATCH // 2:
        return estimate_sampled(texts)  # a codebase can hold millions of tokens: sample, then scale
    return count_many(texts, ctx, check=lambda: check_cancel(ctx, name))


class TokenPipe:
    """Counts segment tokens in the background while files are still being read."""

    def __init__(self, ctx: ExtractContext, name: str) -> None:
        self.ctx, self.name = ctx, name
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="quire-tokens")
        self.pending: list[Segment] = []
        self.jobs: list[tuple[list[Segment], Future]] = []

    def __enter__(self) -> "TokenPipe":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def add(self, segments: list[Segment]) -> None:
        self.pending.extend(segments)
        if len(self.pending) >= TOKEN_BATCH:
            self._flush()

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        if batch:
            self.jobs.append((batch, self.pool.submit(count_tokens, [s.text for s in batch], self.ctx, self.name)))

    def finish(self) -> None:
        self._flush()
        for batch, job in self.jobs:
            for seg, tokens in zip(batch, job.result()):
                seg.tokens = tokens
        self.jobs.clear()


# -- numbered chunks ---------------------------------------------------------
_PREFIXES: list[str] = [""]  # "1\t", "2\t", ...; index 0 unused, grown on demand


def _prefix_list(n: int) -> list[str]:
    """Line-number prefixes: number and tab cost about 1.2 tokens a line, ``  12 | `` about 3.4."""
    if len(_PREFIXES) <= n:
        _PREFIXES.extend([f"{i}\t" for i in range(len(_PREFIXES), n + 1)])
    return _PREFIXES


def _chunk_end(lines: list[str], a: int, n: int) -> int:
    b = min(a + CHUNK_LINES, n)
    if sum(map(len, lines[a:b])) > CHUNK_CHARS:
        size, b = 0, a
        while b < n and (b == a or size + len(lines[b]) <= CHUNK_CHARS) and len(lines[b]) <= LONG_LINE:
            size += len(lines[b]) + 1
            b += 1
        return max(b, a + 1)
    if b < n and b - a == CHUNK_LINES:  # prefer ending on a blank line in the last quarter
        for i in range(b - 1, a + CHUNK_LINES * 3 // 4, -1):
            if not lines[i].strip():
                return i + 1
    return b


def numbered_chunks(text: str) -> list[tuple[int, int, str]]:
    """(line_start, line_end, body) with every line prefixed by its number and a tab; 1-based, inclusive."""
    lines = split_lines(text)
    n = len(lines)
    prefixes = _prefix_list(n)
    chunks, a = [], 0
    while a < n:
        if len(lines[a]) > LONG_LINE:
            line = lines[a]
            chunks.extend((a + 1, a + 1, prefixes[a + 1] + line[i:i + CHUNK_CHARS])
                          for i in range(0, len(line), CHUNK_CHARS))
            a += 1
            continue
        b = _chunk_end(lines, a, n)
        chunks.append((a + 1, b, "\n".join(map(operator.add, prefixes[a + 1:b + 1], lines[a:b]))))
        a = b
    return chunks


def file_segments(rel: str, text: str, language: str) -> list[Segment]:
    return [
        Segment("text", f"File: {rel} (lines {a}-{b})\n{body}", Locator(path=rel, line_start=a, line_end=b),
                meta={"language": language})
        for a, b, body in numbered_chunks(text)
    ]


def numbered_segments(text: str, name: str, ctx: ExtractContext, language: str) -> list[Segment]:
    """One file as numbered-line segments with token counts (a single source file, JSON, a notebook)."""
    segments = file_segments(name, text, language)
    for seg, tokens in zip(segments, count_tokens([s.text for s in segments], ctx, name)):
        seg.tokens = tokens
    return segments
