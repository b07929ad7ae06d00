"""Turning an answer's ``[S12]`` markers into checked citations.

Each cited id is resolved to the segment that was shown to the model. Four statuses (in words:
``core.records.CITATION_STATUSES``):

- ``verified``: the quote is in the cited passage (whitespace and case normalised, tolerant of
  small differences) *and* the sentence it is attached to is supported: at least
  :data:`CLAIM_SUPPORT` of the claim's own content words (those outside the quote, stemmed) are in
  the passage, and the passage shares a content word with the question. A citation without a quote
  is verified when :data:`CLAIM_SUPPORT_UNQUOTED` of the claim's words are in the passage.
- ``quoted``: the quote is in the passage, but the claim or the question is not about it (a
  true sentence from an unrelated page, cited for an invented answer).
- ``unverified``: the quote is not in the passage (or, with no quote, the passage does not carry the claim).
- ``missing``: the cited id was not shown to the model.

When the model cites nothing usable, the answer is matched against the passages it saw, and the
best supported passage is attached as a ``matched`` citation, so every answer still points at
something a user can check. :func:`verdict` says whether the answer as a whole is supported.
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
    "not no yes has have had do does did will would can could may might shall should than then there their "
    "what when where whom whose why how these those any some such upon".split()
)
_GENERIC = frozenset("contract agreement document documents passage passages say says said tell".split())  # in any question
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "edly", "ed", "es", "s", "ly", "ments", "ment")

CLAIM_SUPPORT = 0.5  # share of the claim's words (outside its quote) the passage must hold
AROUND = 100  # characters each side of a quote that say what it is about ("... (the 'Effective Date')")
CLAIM_SUPPORT_UNQUOTED = 0.6  # the same for a claim that quotes nothing
UNSUPPORTED = "Not supported by the documents — check the passages below."
NO_EVIDENCE = "The documents shown to the model do not contain this: none of the passages it saw is about the question."


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


def locate(quote: str, source: str, threshold: float = 0.85) -> str | None:
    """The words of ``source`` that ``quote`` reproduces, as the source writes them, or None.

    Word by word, ignoring case, punctuation and whitespace: an exact run of the quote's words, else the
    shortest stretch of the source holding ``threshold`` of them in order, with a run of at least 4 (or
    all) in a row, and no longer than 1.3 times the quote. What comes back is cut from the source itself,
    so a caller that shows it shows nothing the source does not hold.
    """
    spans = [(m.start(), m.end()) for m in _WORD.finditer(source)]
    src = [source[a:b].lower() for a, b in spans]
    want = [w.lower() for w in _WORD.findall(quote)]
    if not want or not src:
        return None
    n = len(want)
    for i in range(len(src) - n + 1):
        if src[i] == want[0] and src[i:i + n] == want:
            return source[spans[i][0]:spans[i + n - 1][1]]
    matcher = SequenceMatcher(None, src, want, autojunk=False)
    blocks = [b for b in matcher.get_matching_blocks() if b.size]
    if not blocks or max(b.size for b in blocks) < min(n, 4):
        return None
    # the blocks in quote order; keep the longest chain whose source stretch stays short
    best: tuple[int, int, int] | None = None  # (matched words, first source word, last source word + 1)
    for i, first in enumerate(blocks):
        matched = 0
        for last in blocks[i:]:
            if last.a + last.size - first.a > 1.3 * n:
                break
            matched += last.size
            if matched >= threshold * n and (best is None or matched > best[0]):
                best = (matched, first.a, last.a + last.size)
    if best is None:
        return None
    return source[spans[best[1]][0]:spans[best[2] - 1][1]]


def _longest_run(matcher: SequenceMatcher) -> int:
    return max((b.size for b in matcher.get_matching_blocks()), default=0)


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _COMMON and (len(w) > 2 or w.isdigit())}


def stem(word: str) -> str:
    """A crude English stem, enough to match terminate/terminated/termination and law/laws."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:6]


def stems(text: str) -> set[str]:
    """Stemmed content words, less the words any question or answer about documents uses ("contract", "says")."""
    return {stem(w) for w in content_words(text) if w not in _GENERIC}


def stem_support(claim: str, source: str) -> float:
    """Share of the claim's stemmed content words found in the source (0..1; 1 when the claim has none)."""
    words = stems(claim)
    return 1.0 if not words else len(words & stems(source)) / len(words)


def numbers_in(claim: str, source: str) -> bool:
    """Whether every number the claim states is in the source (a wrong figure is a wrong claim)."""
    return {w for w in _WORD.findall(claim) if w.isdigit()} <= {w for w in _WORD.findall(source) if w.isdigit()}


def around(quote: str, source: str, reach: int = AROUND) -> str:
    """The quote's surroundings in the source: ``reach`` characters each side of where it is (all when not found exactly)."""
    q, s = normalise(quote), normalise(source)
    at = s.find(q)
    if at == -1:
        return source if len(source) <= 2 * reach + len(quote) else ""
    return s[max(0, at - reach): at + len(q) + reach]


def on_topic(question: str, source: str) -> bool:
    """Whether the source shares a content word with the question (always, when there is no question)."""
    words = stems(question)
    return not words or bool(words & stems(source))


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


def relabel(text: str, ids: Mapping[str, str]) -> str:
    """The text with each cited id renamed by ``ids`` (``[S2, S3]`` -> ``[S40, S41]``); an unknown id stays."""
    def one(m: re.Match) -> str:
        ref = f"S{int(m.group(1))}"
        return ids.get(ref, ref)

    return _REF.sub(lambda m: "[" + _ONE.sub(one, m.group(1)).strip() + "]", text)


_QUOTE_MARKS = '"“”'


def without_refs(text: str) -> str:
    """The text with its ``[S12]`` markers taken out."""
    return _REF.sub(" ", text)


def _sentence_around(answer: str, start: int, end: int) -> str:
    """The sentence (or line) holding the marker at ``start:end``; a full stop inside a quote does not end it."""
    left = 0
    for i in range(start - 1, -1, -1):
        if answer[i] == "\n" or (answer[i] == "." and _even_quotes(answer[i:start])):
            left = i + 1
            break
    right = len(answer)
    for i in range(end, len(answer)):
        if answer[i] == "\n" or (answer[i] == "." and _even_quotes(answer[end:i])):
            right = i
            break
    return answer[left:right]


def _even_quotes(text: str) -> bool:
    return sum(text.count(m) for m in _QUOTE_MARKS) % 2 == 0


def check(answer: str, shown: Mapping[str, SegmentRecord], question: str = "") -> CheckedAnswer:
    """The answer's citations, checked against the passages shown; ``question`` lets a check see
    whether a passage is about what was asked."""
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
        citations.append(_checked(ref, seg, claim, quotes, question, origin="model"))
    if not any(c.status != "missing" for c in citations):
        matched = match_answer(answer, shown, question)
        if matched is not None:
            citations.append(matched)
    return CheckedAnswer(citations, unknown)


def _checked(ref: str, seg: SegmentRecord, claim: str, quotes: list[str], question: str,
             origin: str) -> CitationRecord:
    claim_text = _REF.sub(" ", claim)
    if quotes:
        good = [q for q in quotes if quote_in_source(q, seg.text)]
        quote = good[0] if good else quotes[0]
        if not good:
            status = "unverified"
        else:
            own_words = _QUOTE.sub(" ", claim_text)  # the claim's own words, outside its quotes
            supported = (stem_support(own_words, seg.text) >= CLAIM_SUPPORT and numbers_in(own_words, seg.text)
                         and on_topic(question, claim_text + " " + around(good[0], seg.text)))
            status = "verified" if supported else "quoted"
    else:
        supported = support(claim_text, seg.text) >= CLAIM_SUPPORT_UNQUOTED and on_topic(question, seg.text)
        status = "verified" if supported else "unverified"
        quote = best_passage(claim_text, seg.text)
    return CitationRecord(ref=ref, segment_id=seg.id, document_name=seg.document_name, locator=seg.locator, quote=quote,
                          status=status, origin=origin)


def verdict(cited: list[CitationRecord], shown: Mapping[str, SegmentRecord], question: str) -> str:
    """``verified`` when a citation is verified; else ``no_evidence`` when no passage shown is about the
    question, else ``unsupported``. The last two carry a warning (:data:`WARNINGS`)."""
    if any(c.status == "verified" for c in cited):
        return "verified"
    if question and not any(on_topic(question, seg.text) for seg in shown.values() if seg.kind == "text"):
        return "no_evidence"
    return "unsupported"


WARNINGS = {"unsupported": UNSUPPORTED, "no_evidence": NO_EVIDENCE}


def match_answer(answer: str, shown: Mapping[str, SegmentRecord], question: str = "") -> CitationRecord | None:
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
    supported = support(claim, seg.text) >= CLAIM_SUPPORT_UNQUOTED and on_topic(question, seg.text)
    status = "verified" if supported else "unverified"
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

