"""The report's data: a session's turns with each citation resolved to the passage it cites.

Everything here is plain text straight from the database; each renderer
escapes it for its own format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from backend.citations import parse_refs
from core.document import Locator
from core.records import CitationRecord, DocumentRecord, MatrixCellRecord, SegmentRecord, TurnRecord
from quire.api import Quire, SessionRef

PASSAGE_LIMIT = 600  # characters of a segment shown when the citation has no quote
_ANCHOR_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(kw_only=True)
class ReportCitation(CitationRecord):
    """A stored citation with the passage it cites, as the report shows it."""

    anchor: str  # unique id of the passage in the report, e.g. "q1-S3"
    location: str  # "page 2", "src/x.py:12-30" or "whole document"
    passage: str


@dataclass(kw_only=True)
class ReportTurn(TurnRecord):
    """A stored turn as the report shows it: numbered, each citation resolved to its passage."""

    number: int
    citations: list[ReportCitation] = field(default_factory=list)

    def answer_parts(self) -> list[tuple[str, ReportCitation | None]]:
        """The answer split into plain text and cited refs, in order; a ref with no citation stays text."""
        by_ref = {}
        for c in self.citations:
            by_ref.setdefault(c.ref.upper(), c)
        parts: list[tuple[str, ReportCitation | None]] = []
        pos = 0
        for start, end, refs in _ref_groups(self.answer):
            if any(r in by_ref for r in refs):
                parts.append((self.answer[pos:start], None))
                parts.extend((f"[{r}]", by_ref.get(r)) for r in refs)
                pos = end
        parts.append((self.answer[pos:], None))
        return [(text, c) for text, c in parts if text]

    def runtime_label(self) -> str:
        return " / ".join(x for x in (self.runtime, self.model) if x)

    def facts(self) -> str:
        """When and how the answer was produced, in one line."""
        parts = [self.created_at, self.runtime_label(), self.strategy]
        parts.append(
            f"{self.prompt_tokens} prompt tokens ({self.cached_tokens} cached), {self.completion_tokens} answer tokens"
        )
        parts.append(f"first token {self.ttft_s:.2f} s, total {self.total_s:.2f} s")
        return "; ".join(p for p in parts if p)


@dataclass
class Report:
    session: str
    generated_at: str
    runtimes: list[str]  # distinct "runtime / model" labels, in order of first use
    documents: list[DocumentRecord]
    turns: list[ReportTurn]
    matrix: list[MatrixCellRecord] = field(default_factory=list)  # the review matrix's cells, document order

    @property
    def citation_count(self) -> int:
        return sum(len(t.citations) for t in self.turns)


def build_report(q: Quire, session: SessionRef) -> Report:
    """Collect a session's turns, documents and cited passages into a :class:`Report`."""
    info = q.session(session, create=False)
    turns = q.turns(info)
    ids = {c.segment_id for t in turns for c in t.citations if c.segment_id is not None}
    segments = q.segments_by_id(ids)
    report_turns = [_turn(i, t, segments) for i, t in enumerate(turns, 1)]
    runtimes = list(dict.fromkeys(t.runtime_label() for t in report_turns if t.runtime_label()))
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Report(info.name, generated, runtimes, q.documents(info), report_turns, q.matrix_cells(info))


def trim(text: str, limit: int = PASSAGE_LIMIT) -> str:
    """Whitespace collapsed and cut at a word boundary near ``limit`` characters."""
    text = " ".join((text or "").split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[: limit] else text[:limit]
    return cut.rstrip(" ,;:") + " …"


def _turn(number: int, t: TurnRecord, segments: dict[int, SegmentRecord]) -> ReportTurn:
    anchors: set[str] = set()
    citations = [_citation(number, c, segments.get(c.segment_id), anchors) for c in t.citations]
    return ReportTurn(**(vars(t) | {"citations": citations}), number=number)


def _citation(number: int, c: CitationRecord, seg: SegmentRecord | None, anchors: set[str]) -> ReportCitation:
    locator = c.locator if c.locator != Locator() or seg is None else seg.locator
    passage = (c.quote or "").strip() or (trim(seg.text) if seg is not None else "")
    document = c.document_name or (seg.document_name if seg is not None else "") or "unknown source"
    return ReportCitation(**(vars(c) | {"document_name": document, "locator": locator}),
                          anchor=_anchor(number, c.ref, anchors), location=locator.place(long=True), passage=passage)


def _anchor(number: int, ref: str, taken: set[str]) -> str:
    base = f"q{number}-{_ANCHOR_UNSAFE.sub('', ref) or 'ref'}"
    anchor, n = base, 1
    while anchor in taken:
        n += 1
        anchor = f"{base}-{n}"
    taken.add(anchor)
    return anchor


def _ref_groups(answer: str) -> list[tuple[int, int, list[str]]]:
    """(start, end, refs) for each bracketed marker such as ``[S1, S3]``."""
    groups: dict[tuple[int, int], list[str]] = {}
    for ref, start, end in parse_refs(answer or ""):
        groups.setdefault((start, end), []).append(ref.upper())
    return [(s, e, refs) for (s, e), refs in groups.items()]
