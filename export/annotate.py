"""Copies of the cited source PDFs with every cited passage highlighted.

Each citation with a page becomes one highlight: the quote's own text where
PyMuPDF finds it on that page in or near the cited box, else the box itself.
Citations of the same spot share one highlight whose note names every
question and ref that cited it. Every verified cell of the review matrix is
highlighted the same way, labelled with its field. Originals are never modified.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pymupdf

from core.records import CitationRecord, DocumentRecord, MatrixCellRecord
from export.files import atomic_write, inside, safe_stem, unique
from quire.api import Quire, SessionRef

log = logging.getLogger(__name__)

NEAR = 36  # points around the cited box in which a found quote still counts
KEY_WORDS = 8  # words of a quote's start and end searched for when the whole quote is not found
COLORS = {"verified": (1.0, 0.9, 0.2), "quoted": (1.0, 0.62, 0.25), "unverified": (1.0, 0.62, 0.25), "missing": (1.0, 0.45, 0.45)}


@dataclass
class Mark:
    """One spot to highlight on one page, with a note line per citation of it."""

    page: int  # 1-based
    bbox: tuple[float, float, float, float] | None
    quote: str
    status: str
    notes: list[str] = field(default_factory=list)


def highlight_sources(q: Quire, session: SessionRef, out_dir: Path) -> list[Path]:
    """Write ``<stem>-annotated.pdf`` under ``out_dir`` for each cited PDF; return the paths written."""
    out_dir = Path(out_dir)
    info = q.session(session, create=False)
    docs = q.documents(info)
    marks = collect_marks(q, info, docs)
    written: list[Path] = []
    taken: set[Path] = set()
    for doc in docs:
        if doc.id not in marks:
            continue
        source = q.original(doc)
        if source is None:
            log.warning("no stored original for %r: no annotated copy", doc.name)
            continue
        data = annotate_pdf(source, marks[doc.id])
        if data is None:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        target = unique(inside(out_dir, f"{safe_stem(doc.name)}-annotated.pdf"), taken)
        written.append(atomic_write(target, data))
    return written


def collect_marks(q: Quire, session: SessionRef, docs: list[DocumentRecord]) -> dict[int, list[Mark]]:
    """The spots to highlight in each document (by document id), from every turn's paged citations."""
    turns = q.turns(session)
    segments = q.segments_by_id({c.segment_id for t in turns for c in t.citations if c.segment_id})
    by_name = {d.name: d.id for d in docs}
    ids = {d.id for d in docs}
    marks: dict[int, dict[tuple, Mark]] = {}
    for number, turn in enumerate(turns, 1):
        for c in turn.citations:
            seg = segments.get(c.segment_id) if c.segment_id else None
            locator = c.locator if c.locator.page is not None or seg is None else seg.locator
            doc_id = seg.document_id if seg is not None else by_name.get(c.document_name)
            if locator.page is None or doc_id not in ids:
                continue
            quote = " ".join((c.quote or "").split())
            key = (locator.page, locator.bbox, quote)
            mark = marks.setdefault(doc_id, {}).setdefault(key, Mark(locator.page, locator.bbox, quote, c.status))
            if c.status == "verified":
                mark.status = "verified"
            mark.notes.append(_note(number, turn.question, c))
    for cell in q.matrix_cells(session):
        if cell.status != "verified" or cell.locator.page is None or cell.document_id not in ids:
            continue
        quote = " ".join(cell.quote.split())
        key = (cell.locator.page, cell.locator.bbox, quote)
        mark = marks.setdefault(cell.document_id, {}).setdefault(
            key, Mark(cell.locator.page, cell.locator.bbox, quote, "verified"))
        mark.status = "verified"
        mark.notes.append(_cell_note(cell))
    return {doc_id: list(spots.values()) for doc_id, spots in marks.items()}


def annotate_pdf(source: Path, marks: list[Mark]) -> bytes | None:
    """The PDF at ``source`` with ``marks`` highlighted, or None if it cannot be opened as a PDF."""
    try:
        doc = pymupdf.open(source)
    except (pymupdf.FileDataError, RuntimeError) as exc:
        log.warning("cannot open %s for highlighting: %s", source, exc)
        return None
    try:
        if not doc.is_pdf and not doc.needs_pass:  # EPUB, XPS...: highlight the PDF layout Quire read
            doc = pymupdf.open("pdf", doc.convert_to_pdf())
        if not doc.is_pdf or (doc.needs_pass and not doc.authenticate("")):
            log.warning("%s is not a PDF or needs a password: no annotated copy", source)
            return None
        for mark in marks:
            if 1 <= mark.page <= doc.page_count:
                highlight(doc[mark.page - 1], mark)
        return doc.tobytes(garbage=1, deflate=True)
    finally:
        doc.close()


def highlight(page: pymupdf.Page, mark: Mark) -> pymupdf.Annot:
    """Add the mark's annotation to ``page``: a highlight, or a note if there is nothing to highlight."""
    area = _area(page, mark.bbox)
    annot = _highlight_quote(page, mark.quote, area) if mark.quote else None
    if annot is None and area is not None:
        annot = page.add_highlight_annot(_line_rects(page, area) or area)
    if annot is None:
        annot = page.add_text_annot(page.rect.tl + (18, 18), "")
    else:
        annot.set_colors(stroke=COLORS.get(mark.status, COLORS["unverified"]))
    subject = "; ".join(n.split(":", 1)[0] for n in mark.notes)
    annot.set_info(title="Quire", subject=subject, content="\n\n".join(mark.notes))
    annot.update()
    return annot


def _highlight_quote(page: pymupdf.Page, quote: str, area: pymupdf.Rect | None) -> pymupdf.Annot | None:
    near = (area + (-NEAR, -NEAR, NEAR, NEAR)) if area is not None else None
    words = quote.split()
    hits = _hits(page, " ".join(words), near) if len(quote) <= 500 else []
    if hits:
        return page.add_highlight_annot(hits)
    starts = _hits(page, " ".join(words[:KEY_WORDS]), near)
    if not starts:
        return None
    ends = _hits(page, " ".join(words[-KEY_WORDS:]), near) if len(words) > KEY_WORDS else []
    ends = [q for q in ends if q.rect.y1 >= starts[0].rect.y0]
    if not ends:
        return page.add_highlight_annot(starts) if area is None else _span(page, starts[0], area.br, near)
    return _span(page, starts[0], _mid_right(ends[-1]), near)


def _span(page: pymupdf.Page, first: pymupdf.Quad, stop: pymupdf.Point, clip: pymupdf.Rect | None) -> pymupdf.Annot:
    start = (first.ul + first.ll) / 2 + (0.5, 0)
    return page.add_highlight_annot(start=start, stop=stop, clip=clip)


def _mid_right(quad: pymupdf.Quad) -> pymupdf.Point:
    return (quad.ur + quad.lr) / 2 - (0.5, 0)


def _hits(page: pymupdf.Page, needle: str, near: pymupdf.Rect | None) -> list[pymupdf.Quad]:
    if not needle.strip():
        return []
    return [q for q in page.search_for(needle, quads=True) if near is None or q.rect.intersects(near)]


def _line_rects(page: pymupdf.Page, area: pymupdf.Rect) -> list[pymupdf.Rect]:
    """The text lines inside ``area``, so a box of text is highlighted line by line."""
    rects = []
    for block in page.get_text("dict", clip=area)["blocks"]:
        for line in block.get("lines", []):
            rect = pymupdf.Rect(line["bbox"]) & area
            if not rect.is_empty:
                rects.append(rect)
    return rects


def _area(page: pymupdf.Page, bbox) -> pymupdf.Rect | None:
    if not bbox or len(bbox) != 4:
        return None
    rect = pymupdf.Rect(bbox)
    return None if rect.is_empty or rect.is_infinite else rect


def _cell_note(cell: MatrixCellRecord) -> str:
    answer = " ".join(cell.shown_answer.split())
    answer = answer if len(answer) <= 300 else answer[:299] + "…"
    mark = f", reviewer: {cell.mark}" if cell.mark else ""
    return f"{cell.field_name} (matrix, verified{mark}): {answer}"


def _note(number: int, question: str, c: CitationRecord) -> str:
    q = " ".join((question or "").split())
    q = q if len(q) <= 300 else q[:299] + "…"
    matched = ", matched" if c.origin == "matched" else ""
    return f"Q{number} [{c.ref}] ({c.status}{matched}): {q}"
