"""The report's data: a session's turns with each citation resolved to the passage it cites.

Everything here is plain text straight from the database; each renderer
escapes it for its own format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from backend.citations import parse_refs
from quire.document import Locator
from storage import repo
from storage.db import Database

PASSAGE_LIMIT = 600  # characters of a segment shown when the citation has no quote
_ANCHOR_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class ReportCitation:
    ref: str  # "S3", as the answer cites it
    anchor: str  # unique id of the passage in the report, e.g. "q1-S3"
    document: str
    location: str  # "page 2", "src/x.py:12-30" or "whole document"
    passage: str
    status: str  # verified | unverified | missing
    origin: str = "model"  # model | matched
    segment_id: int | None = None
    locator: Locator = field(default_factory=Locator)


@dataclass
class ReportTurn:
    number: int
    question: str
    answer: str
    created_at: str
    runtime: str
    model: str
    strategy: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    ttft_s: float
    total_s: float
    citations: list[ReportCitation]

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
class ReportDocument:
    name: str
    kind: str
    pages: int
    tokens: int
    warnings: list[str] = field(default_factory=list)  # what went wrong while it was read


@dataclass
class Report:
    session: str
    generated_at: str
    runtimes: list[str]  # distinct "runtime / model" labels, in order of first use
    documents: list[ReportDocument]
    turns: list[ReportTurn]

    @property
    def citation_count(self) -> int:
        return sum(len(t.citations) for t in self.turns)


def build_report(db: Database, session_id: int) -> Report:
    """Collect a session's turns, documents and cited passages into a :class:`Report`."""
    name = _session_name(db, session_id)
    turns = repo.list_turns(db, session_id)
    ids = {c.segment_id for t in turns for c in t.citations if c.segment_id is not None}
    segments = repo.get_segments(db, ids)
    report_turns = [_turn(i, t, segments) for i, t in enumerate(turns, 1)]
    runtimes = list(dict.fromkeys(t.runtime_label() for t in report_turns if t.runtime_label()))
    documents = [ReportDocument(d.name, d.kind, d.pages, d.tokens, d.warnings) for d in repo.session_documents(db, session_id)]
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Report(name, generated, runtimes, documents, report_turns)


def location_label(locator: Locator) -> str:
    """One label for a place in a document, the same in every format: "page 2", "a.py:3-9"."""
    if locator.page is not None:
        return f"page {locator.page}"
    return locator.label() or "whole document"


def trim(text: str, limit: int = PASSAGE_LIMIT) -> str:
    """Whitespace collapsed and cut at a word boundary near ``limit`` characters."""
    text = " ".join((text or "").split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[: limit] else text[:limit]
    return cut.rstrip(" ,;:") + " …"


def _session_name(db: Database, session_id: int) -> str:
    return repo.get_session_by_id(db, session_id).name


def _turn(number: int, t: repo.TurnRecord, segments: dict[int, repo.SegmentRecord]) -> ReportTurn:
    anchors: set[str] = set()
    citations = [_citation(number, c, segments.get(c.segment_id), anchors) for c in t.citations]
    return ReportTurn(
        number, t.question, t.answer, t.created_at, t.runtime, t.model, t.strategy, t.prompt_tokens,
        t.completion_tokens, t.cached_tokens, t.ttft_s, t.total_s, citations,
    )


def _citation(number: int, c: repo.CitationRecord, seg: repo.SegmentRecord | None, anchors: set[str]) -> ReportCitation:
    locator = c.locator if c.locator != Locator() or seg is None else seg.locator
    passage = (c.quote or "").strip() or (trim(seg.text) if seg is not None else "")
    document = c.document_name or (seg.document_name if seg is not None else "") or "unknown source"
    return ReportCitation(
        ref=c.ref, anchor=_anchor(number, c.ref, anchors), document=document, location=location_label(locator),
        passage=passage, status=c.status, origin=c.origin, segment_id=c.segment_id, locator=locator,
    )


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
