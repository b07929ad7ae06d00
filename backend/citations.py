"""Turning an answer's ``[S12]`` markers into checked citations.

Each cited id is resolved to the segment that was shown to the model; an id
that was not shown is kept as ``missing`` (and flagged). Each citation is
checked against its source: a quoted passage must appear in the segment text
(whitespace and case normalised, tolerant of small differences), otherwise the
claim's sentence must share most of its content words with the segment.
When the model cites nothing usable, the answer is matched against the
passages it saw, and the best supported passage is attached as a ``matched``
citation, so every answer still points at something a user can check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Mapping

from core.records import CitationRecord, SegmentRecord

_REF = re.compile(r"\[\s*((?:S\s*\d+\s*[,;]?\s*)+)\]", re.IGNORECASE)
_ONE = re.compile(r"S\s*(\d+)", re.IGNORECASE)
_QUOTE = re.compile(r"[\"“”']([^\"“”]{8,400})[\"“”']")
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_COMMON = frozenset(
    "the a an and or of to in on for with is are was were be been by as at from that this it its which who "
    "not no yes has have had do does did will would can could may might shall should than then there their".split()
)


@dataclass
class CheckedAnswer:
    citations: list[CitationRecord]
    unknown_refs: list[str]


def normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def quote_in_source(quote: str, source: str, threshold: float = 0.85) -> bool:
    """Whether ``quote`` appears in ``source``, ignoring case, punctuation and whitespace, with small slack."""
    q, s = normalise(quote), normalise(source)
    if not q:
        return False
    if q in s:
        return True
    if len(q) > len(s) * 1.2:
        return False
    matcher = SequenceMatcher(None, s, q, autojunk=False)
    block_total = sum(b.size for b in matcher.get_matching_blocks())
    return block_total / len(q) >= threshold and _longest_run(matcher) >= min(len(q), 12)


def _longest_run(matcher: SequenceMatcher) -> int:
    return max((b.size for b in matcher.get_matching_blocks()), default=0)


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _COMMON and (len(w) > 2 or w.isdigit())}


def support(claim: str, source: str) -> float:
    """Share of the claim's content words found in the source (0..1)."""
    words = content_words(claim)
    if not words:
        return 0.0
    return len(words & content_words(source)) / len(words)


def parse_refs(answer: str) -> list[tuple[str, int, int]]:
    """(ref, start, end) for each cited id, in order of appearance."""
    found = []
    for m in _REF.finditer(answer):
        for one in _ONE.finditer(m.group(1)):
            found.append((f"S{int(one.group(1))}", m.start(), m.end()))
    return found


def _sentence_around(answer: str, start: int, end: int) -> str:
    left = max(answer.rfind(".", 0, start), answer.rfind("\n", 0, start)) + 1
    right_candidates = [i for i in (answer.find(".", end), answer.find("\n", end)) if i != -1]
    right = min(right_candidates) if right_candidates else len(answer)
    return answer[left:right]


def check(answer: str, shown: Mapping[str, SegmentRecord]) -> CheckedAnswer:
    citations: list[CitationRecord] = []
    unknown: list[str] = []
    seen: set[str] = set()
    for ref, start, end in parse_refs(answer):
        if ref in seen:
            continue
        seen.add(ref)
        seg = shown.get(ref)
        claim = _sentence_around(answer, start, end)
        quotes = _QUOTE.findall(claim)
        if seg is None:
            unknown.append(ref)
            quote = quotes[0] if quotes else ""
            citations.append(CitationRecord(ref=ref, segment_id=None, document_name="", quote=quote, status="missing"))
            continue
        citations.append(_checked(ref, seg, claim, quotes, origin="model"))
    if not any(c.status != "missing" for c in citations):
        matched = match_answer(answer, shown)
        if matched is not None:
            citations.append(matched)
    return CheckedAnswer(citations, unknown)


def _checked(ref: str, seg: SegmentRecord, claim: str, quotes: list[str], origin: str) -> CitationRecord:
    if quotes:
        good = [q for q in quotes if quote_in_source(q, seg.text)]
        status = "verified" if good else "unverified"
        quote = good[0] if good else quotes[0]
    else:
        claim_text = _REF.sub(" ", claim)
        status = "verified" if support(claim_text, seg.text) >= 0.6 else "unverified"
        quote = best_passage(claim_text, seg.text)
    return CitationRecord(ref=ref, segment_id=seg.id, document_name=seg.document_name, locator=seg.locator, quote=quote,
                          status=status, origin=origin)


def match_answer(answer: str, shown: Mapping[str, SegmentRecord]) -> CitationRecord | None:
    """The shown passage that best supports the answer, if any supports it well."""
    claim = _REF.sub(" ", answer)
    best: tuple[float, str] | None = None
    for ref, seg in shown.items():
        if seg.kind != "text":
            continue
        score = _weighted_support(claim, seg.text)
        if score > 0 and (best is None or score > best[0]):
            best = (score, ref)
    if best is None or best[0] < 0.5:
        return None
    seg = shown[best[1]]
    quote = best_passage(claim, seg.text)
    status = "verified" if support(claim, seg.text) >= 0.6 else "unverified"
    return CitationRecord(ref=best[1], segment_id=seg.id, document_name=seg.document_name, locator=seg.locator,
                          quote=quote, status=status, origin="matched")


def _weighted_support(claim: str, source: str) -> float:
    """Like :func:`support`, but numbers and long words (the facts) count double."""
    words = content_words(claim)
    if not words:
        return 0.0
    src = content_words(source)
    weight = lambda w: 2.0 if (w.isdigit() or len(w) >= 7) else 1.0  # noqa: E731
    total = sum(weight(w) for w in words)
    return sum(weight(w) for w in words if w in src) / total


def best_passage(claim: str, source: str, limit: int = 300) -> str:
    """The sentence of ``source`` that shares most words with ``claim`` (the quote shown to the user)."""
    sentences = [s.strip() for s in _SENTENCE_END.split(source) if s.strip()]
    if not sentences:
        return source[:limit]
    words = content_words(claim)
    best = max(sentences, key=lambda s: len(words & content_words(s)))
    return best[:limit]

