"""Stopping degenerate output: an answer that repeats a line, or a run of words, over and over.

A small model at temperature 0 falls into loops ("- [S4] The fax test page ..." eighteen times).
The runtime's repetition penalty makes that rarer; this guard, between any runtime and its reader,
ends the stream when it happens anyway, so every runtime gets it:

- a line (its words, case and punctuation ignored) seen for the :data:`LINE_REPEATS`-th time, or
- a run of :data:`NGRAM` words seen for the :data:`NGRAM_REPEATS`-th time

stops the generation at once (the runtime's stream is closed, which frees the model), and the
answer is cut where the repetition began: the first occurrence stays, the copies go.
"""

from __future__ import annotations

import dataclasses
import re
import time
from contextlib import closing
from typing import Iterable, Iterator

from backend.base import Delta, Event, GenerateOptions, Prompt, Runtime, Usage

LINE_REPEATS = 3  # a line seen this often is a loop (twice can be a table's repeated row)
NGRAM = 10  # words in a run
NGRAM_REPEATS = 3
FINISH_REASON = "repetition"
CANCEL_PIECES = 8  # pieces read after cancelling an answer, waiting for the runtime's Usage, before closing it
_WORD = re.compile(r"\w+", re.UNICODE)


class RepetitionGuard:
    """Fed the answer as it streams; says when it has started to loop, and where to cut it."""

    def __init__(self) -> None:
        self.text = ""
        self.cut: int | None = None  # characters of the answer to keep, once a loop is found
        self._lines: dict[tuple[str, ...], list[int]] = {}  # a line's words -> start offsets
        self._line_start = 0
        self._ngrams: dict[tuple[str, ...], list[int]] = {}  # NGRAM words -> start offsets
        self._words: list[tuple[str, int]] = []  # (word, start offset)
        self._scanned = 0  # characters already split into words

    @property
    def looping(self) -> bool:
        return self.cut is not None

    def feed(self, piece: str) -> bool:
        """Add streamed text; True once the answer loops (then :attr:`kept` is the answer to keep)."""
        if self.looping:
            return True
        self.text += piece
        self._scan_words()
        self._scan_lines()
        return self.looping

    @property
    def kept(self) -> str:
        if self.cut is None:
            return self.text
        line_start = self.text.rfind("\n", 0, self.cut) + 1
        cut = line_start if not _WORD.search(self.text, line_start, self.cut) else self.cut  # "- [" goes too
        return self.text[:cut].rstrip()

    def _scan_lines(self) -> None:
        while self.cut is None:
            end = self.text.find("\n", self._line_start)
            if end == -1:
                return
            words = tuple(w.lower() for w in _WORD.findall(self.text[self._line_start:end]))
            if words:
                starts = self._lines.setdefault(words, [])
                starts.append(self._line_start)
                if len(starts) >= LINE_REPEATS:
                    self.cut = starts[1]
            self._line_start = end + 1

    def _scan_words(self) -> None:
        # Only whole words: the last one may still be growing, so it waits for the next piece.
        for m in _WORD.finditer(self.text, self._scanned):
            if m.end() == len(self.text):
                break
            self._scanned = m.end()
            self._words.append((m.group().lower(), m.start()))
            if len(self._words) >= NGRAM and self.cut is None:
                run = tuple(w for w, _ in self._words[-NGRAM:])
                starts = self._ngrams.setdefault(run, [])
                starts.append(self._words[-NGRAM][1])  # overlapping runs count: "yes" x 12 is a loop of period 1
                if len(starts) >= NGRAM_REPEATS:
                    self.cut = starts[1]


def generate_guarded(runtime: Runtime, prompt: Prompt, options: GenerateOptions) -> Iterator[Event]:
    """``runtime.generate`` with the loop guard: Deltas until the answer loops, then one Usage.

    The copies streamed before the loop was recognised cannot be taken back: when the guard
    stops a stream, the Usage's ``finish_reason`` is :data:`FINISH_REASON` and
    ``details["kept_text"]`` is the answer to keep. The runtime is cancelled then; its own Usage (the
    prompt tokens it had cached, its times) is the one told when it comes at once (:func:`settle`),
    else the prompt is counted and the times are measured here.
    """
    guard = RepetitionGuard()
    started = time.perf_counter()
    first: float | None = None
    settled: Usage | None = None
    with closing(runtime.generate(prompt, options)) as events:
        for event in events:
            if not isinstance(event, Delta):
                yield event
                return
            if first is None:
                first = time.perf_counter() - started
            yield event
            if guard.feed(event.text):
                settled = settle(events, runtime)
                break
    total = time.perf_counter() - started
    details = {"kept_text": guard.kept, "stopped": "the answer repeated itself; the copies were cut"}
    if settled is not None:
        yield dataclasses.replace(settled, completion_tokens=runtime.count_tokens(guard.text),
                                  finish_reason=FINISH_REASON, details={**settled.details, **details})
        return
    yield Usage(prompt_tokens=runtime.count_prompt(prompt), completion_tokens=runtime.count_tokens(guard.text),
                ttft_s=first or total, total_s=total, finish_reason=FINISH_REASON, details=details)


def settle(events: Iterator[Event], runtime: Runtime) -> Usage | None:
    """Cancel the answer ``events`` stream and read what is still on its way: the runtime's Usage (the embedded
    runtimes stop at once and still send one), or None when it goes on past :data:`CANCEL_PIECES` pieces (the
    caller closes it then)."""
    runtime.cancel()
    for n, event in enumerate(events):
        if not isinstance(event, Delta):
            return event
        if n >= CANCEL_PIECES:
            break
    return None


def collect(events: Iterable[Event]) -> tuple[str, Usage]:
    """A whole answer from its stream: the text to keep (the guard's cut, if it cut) and its Usage."""
    parts, usage = [], Usage()
    for event in events:
        if isinstance(event, Delta):
            parts.append(event.text)
        else:
            usage = event
    return kept_text("".join(parts), usage), usage


def kept_text(text: str, usage: Usage) -> str:
    """The answer to keep from streamed ``text``: the guard's cut when it stopped the stream (the key is taken out)."""
    kept = usage.details.pop("kept_text", None)
    return kept if usage.finish_reason == FINISH_REASON and kept is not None else text
