"""Office documents: Word (.docx, python-docx) and PowerPoint (.pptx, python-pptx).

Word text comes in reading order, cut into paragraph-sized segments like prose (``text.py``);
locator line numbers count the document's paragraphs and tables. A deck gives one segment per
slide with its speaker notes (locator ``page`` = slide number).
"""

from __future__ import annotations

from pathlib import Path

from core.document import Locator, ParsedDocument, Segment
from core.errors import CorruptFile, UnsupportedFile
from ingest.base import ExtractContext, registry
from ingest.text import PARA_CHARS, cut_line, md_row, merge_small, prose_segments, text_document


def _office(module: str, name: str, path: Path, package: str):
    """Open a .docx/.pptx with its package, turning a missing package or a broken file into a user error."""
    try:
        opener = __import__(module).Document if module == "docx" else __import__(module).Presentation
    except ImportError as exc:
        raise UnsupportedFile(name, f"needs the {package} package to be read.",
                              hint=f"Install it with: pip install {package}") from exc
    try:
        return opener(str(path))
    except Exception as exc:  # noqa: BLE001 - python-docx/pptx raise many types for a broken package
        raise CorruptFile(name, f"could not be opened as a {path.suffix or 'Office'} document ({type(exc).__name__}).",
                          hint="Open and re-save it in an office suite, or export it as PDF.") from exc


def _docx_blocks(document) -> list[tuple[int, int, str]]:
    from docx.table import Table  # python-docx is optional: _office() imported it (or refused the file) already

    blocks = []
    for index, item in enumerate(document.iter_inner_content(), 1):
        if isinstance(item, Table):
            rows = [[cell.text for cell in row.cells] for row in item.rows]
            width = max((len(r) for r in rows), default=0)
            text = "\n".join(md_row(r, width) for r in rows)
        else:
            text = item.text.strip()
            style = (item.style.name if item.style is not None else "") or ""
            if text and style.startswith("Heading") and style[-1:].isdigit():
                text = "#" * int(style[-1]) + " " + text
        if text.strip():
            blocks.append((index, index, text))
    return blocks


@registry.register(".docx")
def extract_docx(path: Path, ctx: ExtractContext) -> ParsedDocument:
    """Word text in reading order; line numbers in locators count the document's paragraphs and tables."""
    name = ctx.display_name or path.name
    document = _office("docx", name, path, "python-docx")
    blocks = merge_small(_docx_blocks(document))
    blocks = [(a, b, piece) for a, b, body in blocks for piece in (cut_line(body) if len(body) > PARA_CHARS else [body])]
    return text_document(name, prose_segments(blocks, name, ctx, format="docx", unit="paragraph"), unit="paragraph")


def _slide_text(slide) -> str:
    parts = []
    for shape in slide.shapes:
        if getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
            parts.append(shape.text_frame.text.strip())
        elif getattr(shape, "has_table", False):
            rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
            width = max((len(r) for r in rows), default=0)
            parts.append("\n".join(md_row(r, width) for r in rows))
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        notes = slide.notes_slide.notes_text_frame.text.strip()
        if notes:
            parts.append("Notes: " + notes)
    return "\n\n".join(parts)


@registry.register(".pptx")
def extract_pptx(path: Path, ctx: ExtractContext) -> ParsedDocument:
    """One segment per slide (locator ``page`` = slide number), speaker notes included."""
    name = ctx.display_name or path.name
    deck = _office("pptx", name, path, "python-pptx")
    segments, count = [], 0
    for number, slide in enumerate(deck.slides, 1):
        count = number
        text = _slide_text(slide)
        if text:
            text = f"Slide {number}\n{text}"
            segments.append(Segment("text", text, Locator(page=number), tokens=ctx.count_tokens(text),
                                    meta={"format": "pptx"}))
    doc = text_document(name, segments, unit="slide")
    doc.pages = count
    return doc
