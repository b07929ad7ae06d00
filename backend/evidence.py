"""The evidence beside an answer: the passages it rests on, or that retrieval ranked best.

Even when the model fails, the reviewer sees where to look: the answer's verified citations
first, then its other citations, then the passages shown to the model that the full-text rank
put highest (or, without a rank, that share most of the question's words). Each comes with a
snippet around the question's terms and those terms marked (:func:`highlight`, escaping the
text for whatever renders it).
"""

from __future__ import annotations

import html
import re
from typing import Callable, Mapping, Sequence

from backend.citations import content_words, stem, stems
from core.records import CitationRecord, SegmentRecord

LIMIT = 3  # passages listed with an answer
SNIPPET = 320  # characters of each
_WORD = re.compile(r"\w+", re.UNICODE)
_ORDER = {"verified": 0, "quoted": 1, "unverified": 2}


def question_terms(question: str) -> list[str]:
    """The question's content words, as typed (lower case), in order, each once."""
    return list(dict.fromkeys(w for w in _WORD.findall(question.lower()) if w in content_words(w) and stems(w)))


def top_passages(
    question: str,
    shown: Mapping[str, SegmentRecord],
    cited: Sequence[CitationRecord],
    ranked_ids: Sequence[int] = (),
    limit: int = LIMIT,
) -> list[dict]:
    """Up to ``limit`` passages of ``shown`` as JSON-ready dicts (``ref``, ``segment_id``, ``document``,
    ``place``, ``page``, ``reason``, ``snippet``, ``terms``, ``html``)."""
    terms = question_terms(question)
    by_segment = {seg.id: (ref, seg) for ref, seg in shown.items() if seg.kind == "text"}
    picked: dict[int, str] = {}  # segment id -> why
    for c in sorted((c for c in cited if c.segment_id in by_segment), key=lambda c: _ORDER.get(c.status, 3)):
        picked.setdefault(c.segment_id, f"cited ({c.status})")
    for sid in ranked_ids:
        if sid in by_segment:
            picked.setdefault(sid, "ranked by retrieval")
    if not ranked_ids:
        wanted = {stem(t) for t in terms}
        scored = sorted(by_segment, key=lambda sid: -len(wanted & stems(by_segment[sid][1].text)))
        for sid in scored:
            if wanted & stems(by_segment[sid][1].text):
                picked.setdefault(sid, "shares the question's words")
    out = []
    for sid, reason in list(picked.items())[:limit]:
        ref, seg = by_segment[sid]
        text = snippet(seg.text, terms)
        out.append({
            "ref": ref, "segment_id": sid, "document": seg.document_name, "place": seg.locator.place(),
            "page": seg.locator.page, "locator": seg.locator.to_dict(), "reason": reason, "snippet": text, "terms": terms,
            "html": highlight(text, terms),
        })
    return out


def snippet(text: str, terms: Sequence[str], size: int = SNIPPET) -> str:
    """About ``size`` characters of ``text`` around the first of the question's terms (whitespace collapsed)."""
    text = " ".join(text.split())
    if len(text) <= size:
        return text
    wanted = {stem(t) for t in terms}
    first = next((m.start() for m in _WORD.finditer(text) if stem(m.group().lower()) in wanted), 0)
    start = max(0, first - size // 3)
    start = text.rfind(" ", 0, start) + 1 if start else 0
    end = text.rfind(" ", start, start + size)
    end = end if end > start else start + size
    return ("… " if start else "") + text[start:end] + (" …" if end < len(text) else "")


def highlight(text: str, terms: Sequence[str], escape: Callable[[str], str] = html.escape,
              mark: tuple[str, str] = ("<mark>", "</mark>")) -> str:
    """``text`` escaped with ``escape``, each word that shares a stem with a term wrapped in ``mark``."""
    wanted = {stem(t) for t in terms}
    out, pos = [], 0
    for m in _WORD.finditer(text):
        if stem(m.group().lower()) in wanted and m.group().lower() in content_words(m.group()):
            out += [escape(text[pos:m.start()]), mark[0], escape(m.group()), mark[1]]
            pos = m.end()
    out.append(escape(text[pos:]))
    return "".join(out)
