"""Shards: a session's passages cut into window-sized parts whose boundaries stay put.

The exhaustive readers, the sweep and the review matrix, read a session shard by shard. A shard's prompt is
its passages, with ids local to the shard, and then the question part. So everything before the question part
is the same for every question: its KV state is computed once, kept on disk (content-keyed on the passages,
``backend.prefix_store``) and loaded for every later question, sweep or matrix field. :meth:`Shard.prefix` is
what warming computes ahead of the first question (``Runtime.prefill``): the passages, and the end of the data
block with the sweep's instructions (:data:`READ`), which the sweep asks before its question so that they are
in the state too; the matrix asks its own after the field and computes from the end of the data block on.

Boundaries stay put:

- A document longer than a shard is cut into shards of its own, which depend on that document alone.
- Documents that fit one shard are packed together in document order until the next would overflow. A group
  also closes after a document whose content hash says so (one in :data:`GROUP_ANCHOR`). So adding or
  removing a document changes the group it falls in, not every later one.

The budget leaves room for the answer and for a question of :data:`QUESTION_ALLOWANCE` tokens; it does not
depend on the question, or a new question would move every boundary. A longer question splits the shards
it does not fit (:func:`fit`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from backend.base import Part, Prompt, Runtime
from backend.context import SYSTEM_PROMPT, TokenCounter, ref_id, render_segment
from core.records import SegmentRecord

QUESTION_ALLOWANCE = 128  # tokens of question every shard leaves room for (a CUAD field with its instructions: 111)
GROUP_ANCHOR = 4  # about one small document in this many closes its group, whatever room is left
OPEN = "<documents>\n"
CLOSE = "</documents>\n\n"
# The sweep's map instructions, said before its question so that they are part of the shard's state: after the
# question, their tokens were prefilled again for every part of every later question (25 of a part's 47 question
# tokens, the most of the second question's 0.3 s a part before its first answer token).
INSTRUCTIONS = ('Answer the question below from the passages, each answer in one line as: [id] short answer '
                '"exact words from the passage". If nothing in the passages answers it, write only: NONE.')
READ = f"{CLOSE}{INSTRUCTIONS}\n"  # what the state of a shard ends with (:meth:`Shard.prefix`)


@dataclass(frozen=True)
class Shard:
    """Consecutive passages read together; a passage longer than a shard is there as one of its pieces."""

    passages: tuple[SegmentRecord, ...]

    def refs(self) -> dict[str, SegmentRecord]:
        """The passages by the ids the prompt gives them (local to the shard: ``S1`` is its first)."""
        return {ref_id(k): seg for k, seg in enumerate(self.passages)}

    def prompt(self, question_part: str) -> Prompt:
        """The shard, then ``question_part`` (which closes the data block): one prompt of the sweep or the matrix."""
        parts = [Part("text", OPEN)] + [Part("text", render_segment(r, s)) for r, s in self.refs().items()]
        return Prompt(SYSTEM_PROMPT, parts + [Part("text", question_part)])

    def prefix(self) -> Prompt:
        """What warming computes (``Runtime.prefill``): the shard and :data:`READ`, the start of every sweep
        question's part; a matrix field's part shares its first line (the end of the data block)."""
        return self.prompt(READ)

    @property
    def document_ids(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(s.document_id for s in self.passages))

    def halves(self) -> list["Shard"]:
        half = len(self.passages) // 2
        return [Shard(self.passages[:half]), Shard(self.passages[half:])]


def budget(runtime: Runtime, answer_tokens: int) -> int:
    """Tokens of passages one shard may hold: the window less the answer, the prompt's own text and a question."""
    fixed = runtime.count_prompt(Prompt(SYSTEM_PROMPT, [Part("text", OPEN), Part("text", f"{READ}Question: \n")]))
    return max(64, runtime.context_window - answer_tokens - fixed - QUESTION_ALLOWANCE)


def readable(segments: Sequence[SegmentRecord]) -> list[SegmentRecord]:
    """The passages a shard can hold: those with text (an image without OCR text has nothing to read)."""
    return [s for s in segments if s.text.strip()]


def fitted(segments: Sequence[SegmentRecord], counter: TokenCounter, limit: int) -> list[SegmentRecord]:
    """The passages, each one longer than ``limit`` cut into consecutive pieces that fit (same id and place,
    part of the text: a quote found in a piece is in the passage; each piece carries its share of the ingest
    estimate, so a counter that sees pieces still compares like with like, see ``TokenCounter.scale``)."""
    out: list[SegmentRecord] = []
    todo = list(reversed(segments))
    while todo:
        seg = todo.pop()
        words = seg.text.split(" ")
        if counter(ref_id(0), seg) <= limit or len(words) < 2:
            out.append(seg)
            continue
        half = len(words) // 2  # halves until each fits: tokens per word vary too much to cut by proportion
        todo += [_piece(seg, " ".join(words[half:])), _piece(seg, " ".join(words[:half]))]
    return out


def _piece(seg: SegmentRecord, text: str) -> SegmentRecord:
    return dataclasses.replace(seg, text=text, tokens=round(seg.tokens * len(text) / max(len(seg.text), 1)))


def _greedy(passages: Sequence[SegmentRecord], counter: TokenCounter, limit: int) -> list[list[SegmentRecord]]:
    """Consecutive runs within ``limit`` tokens, each passage counted with the id it gets in its run."""
    runs: list[list[SegmentRecord]] = [[]]
    used = 0
    for seg in passages:
        cost = counter(ref_id(len(runs[-1])), seg)
        if runs[-1] and used + cost > limit:
            runs.append([])
            cost = counter(ref_id(0), seg)
            used = 0
        runs[-1].append(seg)
        used += cost
    return [r for r in runs if r]


def document_shards(segments: Sequence[SegmentRecord], counter: TokenCounter, limit: int) -> list[Shard]:
    """One document's shards: its readable passages in reading order, cut to ``limit`` tokens each."""
    return [Shard(tuple(run)) for run in _greedy(fitted(readable(segments), counter, limit), counter, limit)]


def plan(segments: Sequence[SegmentRecord], counter: TokenCounter, limit: int) -> list[Shard]:
    """A session's shards in document order (``segments`` as the session lists them, document by document)."""
    by_document: dict[int, list[SegmentRecord]] = {}
    for seg in segments:
        by_document.setdefault(seg.document_id, []).append(seg)
    shards: list[Shard] = []
    group: list[SegmentRecord] = []
    used = 0

    def close() -> None:
        nonlocal group, used
        if group:
            shards.append(Shard(tuple(group)))
        group, used = [], 0

    for own in by_document.values():
        pieces = document_shards(own, counter, limit)
        if len(pieces) != 1:  # a long document has shards of its own (none for a document with no text)
            close()
            shards += pieces
            continue
        passages = pieces[0].passages
        cost = sum(counter(ref_id(len(group) + k), s) for k, s in enumerate(passages))
        if group and used + cost > limit:
            close()
            cost = sum(counter(ref_id(k), s) for k, s in enumerate(passages))
        group += passages
        used += cost
        if _anchor(passages):
            close()
    close()
    return shards


def _anchor(passages: Sequence[SegmentRecord]) -> bool:
    h = hashlib.sha256()
    for seg in passages:
        h.update(seg.text.encode("utf-8", "replace"))
    return h.digest()[0] % GROUP_ANCHOR == 0


def fit(shard: Shard, prompt: Callable[[Shard], Prompt], runtime: Runtime, answer_tokens: int) -> Iterator[tuple[Shard, Prompt]]:
    """The shard's prompt, or, when the question makes it overflow the window, its halves' prompts (in turn)."""
    todo = [shard]
    while todo:
        part = todo.pop(0)
        built = prompt(part)
        if len(part.passages) > 1 and runtime.count_prompt(built) + answer_tokens > runtime.context_window:
            todo[:0] = part.halves()
            continue
        yield part, built
