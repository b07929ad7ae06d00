"""PDFs: paragraph-size text segments with page boxes, a rendered image per page, OCR for scans.

Coordinates. Every ``Locator.bbox`` is in PDF points in the space PyMuPDF's
``page.get_text``, ``page.search_for`` and ``page.add_highlight_annot`` use:
the page as displayed (``/Rotate`` applied), origin at the top left of
``page.rect``, y growing downwards. The stored page image is rendered in the
same orientation, so a box maps onto it by scaling with
``image width / meta["pages"][n]["width"]``.

Per page, ``meta["pages"]`` records the rendered image and thumbnail blobs,
the page size in points and where its text came from (``native``, ``ocr`` or
``none``). Pages without a usable text layer (scans) also get an image
segment after their OCR text, so runtimes that see images see them.
"""

from __future__ import annotations

import io
import math
import re
import stringprep
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pymupdf
from PIL import Image

from core.document import Locator, ParsedDocument, Segment
from core.errors import Cancelled, CorruptFile, EmptyFile, EncryptedPdf, TooLarge, WrongPassword
from ingest import ocr
from ingest.base import ExtractContext, Progress, registry
from ingest.ocr import Piece, paragraphs, reading_order

MAX_RENDER_PIXELS = 12_000_000  # a stored page image never has more pixels than this (huge pages downsampled)
THUMB_WIDTH = 160  # pixels, at most
OCR_DPI = 240  # measured on a scan: word recall 0.75 at 150 dpi, 0.81 at 200, 0.93 at 240, for ~2x the time
OCR_MAX_SIDE = 2700  # pixels: bounds OCR time and memory per page
MIN_TEXT_CHARS = 16  # fewer visible characters than this on a page with images: treat it as a scan
MAX_BAD_SHARE = 0.3  # share of unmapped glyphs (U+FFFD, private use) above which a text layer is garbage
BLOCK_SPLIT_CHARS = 2500  # a single text block longer than this is cut at line boundaries
FIGURE_MIN_SIDE = 72  # points: an embedded image smaller than an inch either way is decoration
FIGURE_MIN_SHARE = 0.04  # ... or one covering less than 4% of the page
FIGURES_PER_PAGE = 8
TABLE_MIN_RULES = 3  # horizontal and vertical rules a page needs before find_tables() runs
TABLE_MAX_PATHS = 5000  # pages with more vector paths than this are drawings, not tables
TABLE_MAX_CROSSINGS = 20_000  # beyond this many crossing rules the cheap test hands over to the finder
TABLE_SNAP = 3.0  # points: the table finder's snap and join tolerance
TABLE_CELL_CHARS = 40  # a line this short may be a table cell
TABLE_MIN_COLUMN_ROWS = 4  # rows of three or more such cells before the layout model looks for a table
PageError = (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase)


@registry.register(".pdf")
def extract_pdf(path: Path, ctx: ExtractContext) -> ParsedDocument:
    name = ctx.display_name or path.name
    _quiet()
    doc = open_pdf(path, name, ctx.password, max_pages=ctx.settings.max_pdf_pages)
    try:
        # Encrypted originals cannot be re-rendered later without the password: store all their pages now.
        render_all = ctx.settings.render_pages == "all" or bool((doc.metadata or {}).get("encryption"))
        return _read(doc, name, ctx, render_all=render_all)
    finally:
        doc.close()


PAGED_SUFFIXES = (".epub", ".xps", ".oxps", ".cbz", ".fb2", ".mobi", ".svg")


@registry.register(*PAGED_SUFFIXES)
def extract_paged(path: Path, ctx: ExtractContext) -> ParsedDocument:
    """EPUB, XPS, CBZ, FictionBook, MOBI and SVG: laid out by MuPDF into pages, then read like a PDF
    (the same page boxes, renders and OCR; highlighted copies are made from the same PDF layout)."""
    name = ctx.display_name or path.name
    _quiet()
    if path.stat().st_size == 0:
        raise EmptyFile(name, "is empty.", hint="Nothing to read: check that the upload finished.")
    try:
        with pymupdf.open(path, filetype=path.suffix.lstrip(".").lower() or None) as source:
            if source.needs_pass or source.page_count == 0:
                raise _corrupt(name, "has no pages MuPDF can lay out.")
            data = source.convert_to_pdf()
    except (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase) as exc:
        raise _corrupt(name, f"cannot be read as {path.suffix.lstrip('.').upper() or 'a document'}.") from exc
    doc = pymupdf.open("pdf", data)
    try:
        parsed = _read(doc, name, ctx, render_all=True)  # the original is no PDF: keep every page image
    finally:
        doc.close()
    parsed.kind = path.suffix.lstrip(".").lower()
    return parsed


# -- opening -----------------------------------------------------------------
def _quiet() -> None:
    """Keep MuPDF's messages off stderr; they are collected with ``mupdf_warnings()`` instead."""
    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)


def open_pdf(path: Path, name: str, password: str | None = None, *, max_pages: int) -> pymupdf.Document:
    """Open, repair if MuPDF can, and authenticate; raise the matching IngestError otherwise."""
    if path.stat().st_size == 0:
        raise EmptyFile(name, "is empty.", hint="Nothing to read: check that the upload finished.")
    pymupdf.TOOLS.mupdf_warnings(reset=True)
    try:
        doc = pymupdf.open(path, filetype="pdf")
    except (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase) as exc:
        raise _corrupt(name) from exc
    if doc.needs_pass:
        _authenticate(doc, name, password)
    if doc.page_count == 0:
        doc = _recover_pages(doc)
        if doc.page_count == 0:
            doc.close()
            raise _corrupt(name, "has no pages that can be recovered.")
    if doc.page_count > max_pages:
        count = doc.page_count
        doc.close()
        raise TooLarge(name, f"has {count:,} pages, over the {max_pages:,}-page limit.",
                       hint="Split it into parts, or raise --max-pdf-pages.")
    return doc


def _corrupt(name: str, what: str = "cannot be read as a PDF.") -> CorruptFile:
    return CorruptFile(name, what, hint="The file is damaged: re-export it from its source or repair it "
                                        "(e.g. qpdf or a PDF printer), then add it again.")


def _authenticate(doc: pymupdf.Document, name: str, password: str | None) -> None:
    if not password:
        doc.close()
        raise EncryptedPdf(name, "is password-protected.",
                           hint="Give its password (--password, or the password field when adding it).")
    for candidate in password_variants(password):
        if doc.authenticate(candidate):
            return
    doc.close()
    raise WrongPassword(name, "could not be opened with the password given.",
                        hint="Check the password (it is case-sensitive) and add the file again.")


def password_variants(password: str) -> list[str]:
    """The password as given, then SASLprep-normalised (AES-256 R6 needs it), then NFKC alone."""
    prepped = "".join(" " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c))
    out = []
    for candidate in (password, unicodedata.normalize("NFKC", prepped), unicodedata.normalize("NFKC", password)):
        if candidate not in out:
            out.append(candidate)
    return out


def _recover_pages(doc: pymupdf.Document) -> pymupdf.Document:
    """A document whose page tree is lost may still hold page objects: hang them on a new tree."""
    kids = []
    for xref in range(1, doc.xref_length()):
        try:
            if doc.xref_get_key(xref, "Type") == ("name", "/Page"):
                kids.append(xref)
        except PageError:
            continue
    root = doc.pdf_catalog()
    if not kids or root <= 0:
        return doc
    try:
        tree = doc.get_new_xref()
        doc.update_object(tree, "<</Type/Pages/Count %d/Kids[%s]>>" % (len(kids), " ".join(f"{k} 0 R" for k in kids)))
        for kid in kids:
            doc.xref_set_key(kid, "Parent", f"{tree} 0 R")
        doc.xref_set_key(root, "Pages", f"{tree} 0 R")
        rebuilt = pymupdf.open("pdf", doc.tobytes())
    except PageError:
        return doc
    doc.close()
    rebuilt.is_recovered = True
    return rebuilt


# -- the document -----------------------------------------------------------------
@dataclass
class PageResult:
    segments: list[Segment]
    info: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _read(doc: pymupdf.Document, name: str, ctx: ExtractContext, *, render_all: bool = True) -> ParsedDocument:
    total = doc.page_count
    engine, why_not = ocr.for_settings(ctx.settings)
    segments: list[Segment] = []
    pages: list[dict[str, Any]] = []
    warnings: list[str] = []
    for index in range(total):
        if ctx.cancelled():
            raise Cancelled(name, "was cancelled before it was read completely.", hint="Add it again to read it.")
        result = _page(doc, index, ctx, engine, render_all)
        segments += result.segments
        pages.append(result.info)
        warnings += result.warnings
        ctx.progress(Progress("page", name, index + 1, total))
    if engine is None and any(p["text_layer"] == "none" and p.get("needs_ocr") for p in pages):
        warnings.append(why_not.format(what="each page without a text layer was"))
    for p in pages:
        p.pop("needs_ocr", None)
    notes = pymupdf.TOOLS.mupdf_warnings(reset=True)
    meta: dict[str, Any] = {"pages": pages, "text_layer": _summary(pages)}
    if lost := _lost_pages(doc, notes):
        warnings.insert(0, lost)
    if doc.is_repaired or getattr(doc, "is_recovered", False):
        meta["repaired"] = True
        warnings.insert(0, "The file was damaged; MuPDF repaired it. Check the page images against the text.")
    if notes:
        meta["mupdf"] = notes[:2000]
    if warnings:
        meta["warnings"] = warnings
    info = {k: v for k, v in (doc.metadata or {}).items() if v and k in ("title", "author", "subject")}
    if info:
        meta["info"] = info
    return ParsedDocument(name=name, kind="pdf", segments=segments, pages=total, meta=meta)


_TREE_NOTES = ("page tree", "claims to have")  # what MuPDF says when it drops or blanks pages of a damaged tree


def _lost_pages(doc: pymupdf.Document, notes: str) -> str | None:
    """A damaged page tree loses pages without an error (a page left blank, a page count cut short, a
    page listed twice in place of another): say so when MuPDF noticed or the file's own counts disagree."""
    try:
        root = doc.xref_get_key(doc.pdf_catalog(), "Pages")
        count = doc.xref_get_key(int(root[1].split()[0]), "Count") if root[0] == "xref" else ("null", "")
        declared = int(count[1]) if count[0] == "int" else None
        listed = [doc.page_xref(i) for i in range(doc.page_count)]
    except (*PageError, IndexError):
        return None
    noted = next((line for line in notes.splitlines() if any(n in line for n in _TREE_NOTES)), "")
    repeated = len(listed) - len(set(listed))
    if not noted and declared in (None, doc.page_count) and not repeated:
        return None
    facts = [f"MuPDF: {noted.removeprefix('format error: ')}"] if noted else []
    if declared is not None and declared != doc.page_count:
        facts.append(f"it declares {declared} pages and {doc.page_count} could be found")
    if repeated:
        facts.append(f"{repeated} page{'s are' if repeated > 1 else ' is'} listed twice in place of others")
    return f"The file's page tree is damaged ({'; '.join(facts)}): pages may be missing or blank."


def _summary(pages: list[dict[str, Any]]) -> str:
    layers = {p["text_layer"] for p in pages}
    return layers.pop() if len(layers) == 1 else "mixed"


# -- one page -----------------------------------------------------------------------
def _page(doc: pymupdf.Document, index: int, ctx: ExtractContext, engine: ocr.OcrEngine | None,
          render_all: bool = True) -> PageResult:
    number = index + 1
    try:
        page = doc[index]
        rect = page.rect
        info = {"page": number, "width": round(rect.width, 2), "height": round(rect.height, 2)}
        display = page.get_displaylist()  # the page's content, interpreted once for the render and the text
        pieces = native_pieces(page, display)
        quality = text_quality(pieces)
        native = quality == "good" or (quality == "short" and not page.get_images())
        # Text pages keep a thumbnail; their full image is rendered when first viewed (or at ingest with
        # --render-pages all). Scans keep the full image: it is what a vision model reads.
        info.update(_render(page, ctx, display, full=render_all or not native))
        size = info.pop("pixels")
        if native:
            info["text_layer"] = "native"
            pieces = _with_tables(page, pieces, ctx.settings.pdf_tables) + _form(page) + _figures(page, display, ctx)
            return PageResult(_segments(paragraphs(reading_order(pieces)), number, ctx), info)
        return _scanned(page, info, pieces, ctx, engine, size)
    except MemoryError:
        raise  # the file is too large for this worker: that is the file's result, not one page's
    except Exception as exc:  # noqa: BLE001 - one bad page costs that page, whatever PyMuPDF raised
        # MuPDF's own errors, and Python ones from PyMuPDF's glue: a TypeError when a warning about a
        # broken resource holds bytes that are no UTF-8 ("in method 'll_fz_warn'"), an IndexError ...
        if _out_of_memory(exc):
            raise MemoryError(str(exc)) from exc
        info = {"page": number, "width": 0, "height": 0, "text_layer": "none"}
        return PageResult([], info, [f"page {number} could not be read ({type(exc).__name__}: {exc}); it was left out."])


def _out_of_memory(exc: Exception) -> bool:
    """An allocation that failed (MuPDF: "malloc (972000000 bytes) failed", "calloc (4104 x 1 bytes) failed";
    onnxruntime: bad_alloc)."""
    text = str(exc)
    return bool(_ALLOC_FAILED.search(text)) or "bad_alloc" in text or "out of memory" in text.lower()


_ALLOC_FAILED = re.compile(r"\b(?:m|c|re)alloc\b.*\bfailed\b")


def _scanned(page, info, pieces, ctx, engine, size: tuple[int, int]) -> PageResult:
    """A page without a usable text layer: OCR it (when the engine is there) and add its image."""
    number = page.number + 1
    if not pieces and not page.get_images() and not page.get_cdrawings():
        info["text_layer"] = "none"  # a blank page: nothing to read, nothing to show a vision model
        return PageResult([], info)
    found = _ocr(page, engine) if engine is not None else None
    if found == [] and not pieces and _blank_render(info["thumb"], ctx):
        info["text_layer"] = "none"
        return PageResult([], info)
    info["text_layer"] = "ocr" if found else "none"
    info["needs_ocr"] = engine is None
    fallback = paragraphs(reading_order(pieces)) if text_quality(pieces) != "garbage" else []
    segments = _segments(found or fallback, number, ctx)
    caption = f"[page {number} image]"
    segments.append(Segment("image", caption, Locator(page=number), tokens=ctx.count_tokens(caption),
                            image_sha=info["image"], meta={"scan": True, "width": size[0], "height": size[1]}))
    return PageResult(segments, info)


def _ocr(page: pymupdf.Page, engine: ocr.OcrEngine) -> list[Piece]:
    pix, zoom = _pixmap(page, OCR_DPI, OCR_MAX_SIDE**2, gray=True, max_side=OCR_MAX_SIDE)
    read = engine.read(_array(pix))
    del pix
    found = ocr.ocr_pieces(read, scale=1 / zoom, offset=(page.rect.x0, page.rect.y0))
    return [_clip(p, page.rect) for p in found]


def _blank_render(thumb: str, ctx: ExtractContext) -> bool:
    """Whether the page's thumbnail is one flat colour (white paper with nothing on it)."""
    pix = pymupdf.Pixmap(ctx.blobs.read(thumb))
    samples = pix.samples
    return samples.count(samples[:1]) == len(samples)


def _segments(pieces: list[Piece], number: int, ctx: ExtractContext) -> list[Segment]:
    out = []
    for piece in pieces:
        if piece.meta.get("figure"):
            width, height = piece.meta["_size"]
            box = tuple(round(v, 2) for v in piece.box)
            out.append(Segment("image", piece.text, Locator(page=number, bbox=box), tokens=ctx.count_tokens(piece.text),
                               image_sha=piece.meta["_image"], meta={"figure": True, "width": width, "height": height}))
            continue
        text = _clean(piece.text).strip()
        if text:
            box = tuple(round(v, 2) for v in piece.box)
            meta = {k: v for k, v in piece.meta.items() if not k.startswith("_")}
            out.append(Segment("text", text, Locator(page=number, bbox=box), tokens=ctx.count_tokens(text), meta=meta))
    return out


def _clip(piece: Piece, rect: pymupdf.Rect) -> Piece:
    r = pymupdf.Rect(piece.box) & rect
    piece.box = (r.x0, r.y0, r.x1, r.y1)
    return piece


# -- native text ------------------------------------------------------------------------
def native_pieces(page: pymupdf.Page, display: pymupdf.DisplayList | None = None) -> list[Piece]:
    """The page's text blocks (long ones cut at line boundaries), boxes in displayed page space."""
    flags = pymupdf.TEXT_PRESERVE_WHITESPACE | pymupdf.TEXT_MEDIABOX_CLIP | pymupdf.TEXT_DEHYPHENATE
    textpage = None
    if display is not None and not page.rotation:  # a display list's text is unrotated: only reuse it at 0°
        textpage = pymupdf.TextPage(display.get_textpage(flags=flags))
        textpage.parent = page
    pieces: list[Piece] = []
    for block in page.get_text("dict", flags=flags, clip=page.rect, textpage=textpage)["blocks"]:
        lines = [(tuple(line["bbox"]), "".join(span["text"] for span in line["spans"]).strip())
                 for line in block.get("lines", [])]
        lines = [(box, text) for box, text in lines if text]
        if lines:
            pieces += _block_pieces(lines)
    return pieces


def _block_pieces(lines: list[tuple[tuple, str]]) -> list[Piece]:
    heights = sorted(box[3] - box[1] for box, _ in lines)
    height = heights[len(heights) // 2]
    out: list[Piece] = []
    box, texts = None, []
    for line_box, text in lines:
        if texts and sum(len(t) for t in texts) + len(text) > BLOCK_SPLIT_CHARS:
            out.append(Piece(box, _join(texts), height))
            box, texts = None, []
        box = line_box if box is None else (min(box[0], line_box[0]), min(box[1], line_box[1]),
                                            max(box[2], line_box[2]), max(box[3], line_box[3]))
        texts.append(text)
    out.append(Piece(box, _join(texts), height))
    if _cells_in_a_row(lines):
        out[0].meta["_cells"] = True  # a hint for the table test; not stored
    return out


def _cells_in_a_row(lines: list[tuple[tuple, str]]) -> bool:
    """Consecutive lines of a block that sit side by side (MuPDF puts a table row's cells in one block)."""
    for (a, _), (b, _) in zip(lines, lines[1:]):
        overlap = min(a[3], b[3]) - max(a[1], b[1])
        if overlap > 0.5 * min(a[3] - a[1], b[3] - b[1]) and (b[0] >= a[2] or a[0] >= b[2]):
            return True
    return False


def _join(texts: list[str]) -> str:
    """Lines of one block: joined with spaces (a block is a paragraph), but keep line breaks of short lines."""
    return " ".join(texts) if len(texts) < 2 or sum(map(len, texts)) / len(texts) > 40 else "\n".join(texts)


def _visible_chars(pieces: list[Piece]) -> int:
    return sum(len(p.text) - p.text.count(" ") - p.text.count("\n") for p in pieces)


def text_quality(pieces: list[Piece]) -> str:
    """``good``; ``short`` (a few clean characters); ``garbage`` (mostly glyphs without Unicode); ``none``."""
    visible = _visible_chars(pieces)
    if not visible:
        return "none"
    bad = sum(1 for p in pieces for c in p.text if c == "\ufffd" or unicodedata.category(c) in ("Co", "Cc", "Cn")
              and c not in "\n\t")
    if bad / visible > MAX_BAD_SHARE:
        return "garbage"
    return "good" if visible >= MIN_TEXT_CHARS else "short"


def _clean(text: str) -> str:
    """Drop control characters (NULs from broken fonts) but keep line breaks and tabs."""
    return _CONTROL.sub("", text)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")


# -- tables and forms ---------------------------------------------------------------------
def _with_tables(page: pymupdf.Page, pieces: list[Piece], mode: str = "ruled") -> list[Piece]:
    """Tables as Markdown pieces; text blocks inside a table's box are dropped (the table has them).

    ``mode`` is Settings.pdf_tables: ruled tables only, or also unruled ones through the layout model."""
    if mode == "off" or page.rotation or not _side_by_side(pieces):
        return pieces
    if _ruled_grid(page):
        use_layout = False
    elif mode == "layout" and _column_rows(page) >= TABLE_MIN_COLUMN_ROWS:
        use_layout = True  # the layout model finds tables without rules (0.1-0.6 s a page)
    else:
        return pieces
    try:
        found = page.find_tables(use_layout=use_layout).tables
    except PageError:
        return pieces
    tables = []
    for table in found:
        if table.row_count < 2 or table.col_count < 2:
            continue
        markdown = table_markdown(table)
        if markdown:
            tables.append(Piece(tuple(table.bbox), markdown, 10.0, {"table": True}))
    if not tables:
        return pieces
    areas = [pymupdf.Rect(t.box) for t in tables]
    kept = [p for p in pieces if not any(_center(p.box) in area for area in areas)]
    return kept + tables


def table_markdown(table) -> str:
    """A found table as GitHub Markdown, its cells filled from one word list of the page.

    PyMuPDF's own ``to_markdown`` builds a text dictionary of the page for every cell, which
    cost more than finding the table. Merged cells repeat their neighbour's text, as there."""
    words = table.textpage.extractWORDS()  # (x0, y0, x1, y1, word, block, line, word number)
    grid: list[list[str | None]] = []
    for row in table.rows:
        top, bottom = row.bbox[1], row.bbox[3]
        in_row = [w for w in words if top <= (w[1] + w[3]) / 2 <= bottom]
        cells: list[str | None] = []
        for box in row.cells:
            if box is None:
                cells.append(None)
                continue
            lines: dict[tuple[int, int], list[str]] = {}
            for w in in_row:
                if box[0] <= (w[0] + w[2]) / 2 <= box[2] and box[1] <= (w[1] + w[3]) / 2 <= box[3]:
                    lines.setdefault((w[5], w[6]), []).append(w[4])
            text = "<br>".join(" ".join(parts) for parts in lines.values())
            cells.append(_clean(text).replace("|", "\\|"))
        grid.append(cells)
    if not any(cell for cells in grid for cell in cells):
        return ""  # rules around nothing (a drawing, an empty form grid): not a table
    for cells in grid:  # a cell merged across columns: its text to the right
        for i in range(1, len(cells)):
            if cells[i] is None:
                cells[i] = cells[i - 1]
    for i in range(len(grid[0])):  # ... and across rows: downwards
        for j in range(1, len(grid)):
            if grid[j][i] is None:
                grid[j][i] = grid[j - 1][i]
    header, body = grid[0], grid[1:]
    found = table.header  # the finder's header: the first row, or a line of names just above the table
    if found.external and len(found.names) == len(header):
        header, body = [_clean(n or "").replace("\n", "<br>").replace("|", "\\|") for n in found.names], grid
    keep = [i for i in range(len(header)) if header[i] or any(cells[i] for cells in body)]  # no empty columns
    header, body = [header[i] for i in keep], [[cells[i] for i in keep] for cells in body]
    header = [cell or f"Col{i + 1}" for i, cell in enumerate(header)]
    rows = ["|" + "|".join(header) + "|", "|" + "|".join("---" for _ in header) + "|"]
    rows += ["|" + "|".join(cell or "" for cell in cells) + "|" for cells in body]
    return "\n".join(rows)


def _side_by_side(pieces: list[Piece], needed: int = 2) -> bool:
    """Whether some text pieces sit next to each other on a line, as table cells do (a cheap test that
    spares the drawing scan on pages of plain running text)."""
    if any(p.meta.get("_cells") for p in pieces):
        return True
    boxes = sorted((p.box for p in pieces if p.box), key=lambda b: b[1])
    pairs = 0
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if b[1] >= a[3]:
                break  # sorted by top: nothing further down overlaps a
            overlap = min(a[3], b[3]) - max(a[1], b[1])
            if overlap > 0.5 * min(a[3] - a[1], b[3] - b[1]) and (b[0] >= a[2] or a[0] >= b[2]):
                pairs += 1
                if pairs >= needed:
                    return True
    return False


def _column_rows(page: pymupdf.Page) -> int:
    """How many rows of the page hold three or more short lines side by side (cells of a table
    without rules, as MuPDF splits them)."""
    flags = pymupdf.TEXT_PRESERVE_WHITESPACE | pymupdf.TEXT_MEDIABOX_CLIP
    lines = sorted(((line["bbox"], "".join(s["text"] for s in line["spans"]).strip())
                    for block in page.get_text("dict", flags=flags)["blocks"] for line in block.get("lines", ())),
                   key=lambda item: item[0][1] + item[0][3])
    rows, count, middle = 0, 0, None
    for box, text in lines:
        if not text:
            continue
        y, height = (box[1] + box[3]) / 2, box[3] - box[1]
        if middle is None or abs(y - middle) > 0.4 * height:
            rows += count >= 3
            count, middle = 0, y
        count += len(text) <= TABLE_CELL_CHARS
    return rows + (count >= 3)


def _center(box) -> pymupdf.Point:
    return pymupdf.Point((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


_PATH_OPS = re.compile(rb"\s(?:re|l)\s")


def _few_paths(page: pymupdf.Page) -> bool:
    """Whether the page's own content stream draws too few lines and rectangles for a ruled table.

    Reading the stream is far cheaper than interpreting the page; pages that draw through form
    XObjects are not judged here."""
    if page.get_xobjects():
        return False
    try:
        return len(_PATH_OPS.findall(page.read_contents())) < 2 * TABLE_MIN_RULES
    except (RuntimeError, ValueError):
        return False


def _ruled_grid(page: pymupdf.Page) -> bool:
    """Whether the page's vector rules can form a table, tested cheaply before find_tables() runs
    (it costs 20-400 ms a page, most of it reading every character).

    The rules are snapped and joined the way the table finder does it, and the outline of each
    group of connected rules is added as it does (a table drawn without outer borders still has
    them). A table of at least 2 x 2 cells then needs three horizontal and three vertical rules
    that each cross three of the others."""
    if _few_paths(page):
        return False
    paths = page.get_cdrawings()
    if len(paths) > TABLE_MAX_PATHS:
        return False
    across, down = _rules(paths, page.rect)
    if not across or not down or len(across) + len(down) < TABLE_MIN_RULES + 1:
        return False  # the outline of a group adds two rules either way
    h, v = np.array(across), np.array(down)  # (y, x0, x1) and (x, y0, y1)
    crosses = _crossings(h, v)
    if crosses.sum() > TABLE_MAX_CROSSINGS:
        return True  # a dense grid: let the finder judge it
    h, v = _with_outlines(h, v, crosses)
    crosses = _crossings(h, v)
    rows = (crosses.sum(axis=1) >= TABLE_MIN_RULES).sum()
    cols = (crosses.sum(axis=0) >= TABLE_MIN_RULES).sum()
    return rows >= TABLE_MIN_RULES and cols >= TABLE_MIN_RULES


def _crossings(h, v):
    """Which horizontal rules (rows) cross or touch which vertical ones (columns)."""
    tol = TABLE_SNAP
    return ((v[None, :, 0] >= h[:, None, 1] - tol) & (v[None, :, 0] <= h[:, None, 2] + tol)
            & (h[:, None, 0] >= v[None, :, 1] - tol) & (h[:, None, 0] <= v[None, :, 2] + tol))


def _with_outlines(h, v, crosses):
    """Add the four sides of the box around every group of rules connected by crossings."""
    parent = list(range(len(h) + len(v)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(crosses)):
        parent[root(int(i))] = root(len(h) + int(j))
    groups: dict[int, list[float]] = {}
    for i, (y, x0, x1) in enumerate(h):
        box = groups.setdefault(root(i), [x0, y, x1, y])
        box[:] = [min(box[0], x0), min(box[1], y), max(box[2], x1), max(box[3], y)]
    for j, (x, y0, y1) in enumerate(v):
        box = groups.setdefault(root(len(h) + j), [x, y0, x, y1])
        box[:] = [min(box[0], x), min(box[1], y0), max(box[2], x), max(box[3], y1)]
    boxes = [b for b in groups.values() if b[2] - b[0] > TABLE_SNAP and b[3] - b[1] > TABLE_SNAP]
    across = [tuple(r) for r in h] + [(y, b[0], b[2]) for b in boxes for y in (b[1], b[3])]
    down = [tuple(r) for r in v] + [(x, b[1], b[3]) for b in boxes for x in (b[0], b[2])]
    return np.array(_join_rules(across)), np.array(_join_rules(down))


def _rules(paths: list[dict], area: pymupdf.Rect) -> tuple[list[tuple], list[tuple]]:
    """Horizontal rules as (y, x0, x1) and vertical ones as (x, y0, y1), snapped and joined; lines,
    thin rectangles and the sides of cell rectangles all count."""
    across, down = [], []
    for path in paths:
        if not area.contains(pymupdf.Rect(path.get("rect") or (0, 0, 0, 0))):
            continue  # crop marks and other print furniture outside the page
        for item in path.get("items", ()):
            if item[0] == "l":
                (x0, y0), (x1, y1) = item[1], item[2]
                if abs(y1 - y0) < 1 and abs(x1 - x0) > 3:
                    across.append((y0, min(x0, x1), max(x0, x1)))
                elif abs(x1 - x0) < 1 and abs(y1 - y0) > 3:
                    down.append((x0, min(y0, y1), max(y0, y1)))
            elif item[0] == "re":
                x0, y0, x1, y1 = item[1]
                x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
                if y1 - y0 < 2:
                    across.append(((y0 + y1) / 2, x0, x1))
                elif x1 - x0 < 2:
                    down.append(((x0 + x1) / 2, y0, y1))
                else:
                    across += [(y0, x0, x1), (y1, x0, x1)]
                    down += [(x0, y0, y1), (x1, y0, y1)]
    return _join_rules(across), _join_rules(down)


def _join_rules(rules: list[tuple]) -> list[tuple]:
    """Snap rules at nearly the same position onto one line and join pieces that touch along it."""
    out: list[list[float]] = []
    for at, a, b in sorted(rules):
        for rule in reversed(out):
            if at - rule[0] > TABLE_SNAP:
                out.append([at, a, b])  # sorted by position: no earlier line is this close
                break
            if a <= rule[2] + TABLE_SNAP and b >= rule[1] - TABLE_SNAP:
                rule[1], rule[2] = min(rule[1], a), max(rule[2], b)
                break
        else:
            out.append([at, a, b])
    return [(r[0], r[1], r[2]) for r in out]


def _figures(page: pymupdf.Page, display: pymupdf.DisplayList, ctx: ExtractContext) -> list[Piece]:
    """Embedded images and charts big enough to matter, rendered from their region as image pieces
    (they take their place in reading order like any block)."""
    if page.rotation or not _may_show_images(page):  # get_image_info() builds a text page: skip it when it can
        return []
    area = page.rect.width * page.rect.height
    out: list[Piece] = []
    for info in page.get_image_info():
        r = pymupdf.Rect(info["bbox"]) & page.rect
        if r.is_empty or r.width < FIGURE_MIN_SIDE or r.height < FIGURE_MIN_SIDE or r.width * r.height < FIGURE_MIN_SHARE * area:
            continue
        if any(pymupdf.Rect(p.box).contains(r) for p in out):
            continue
        zoom = ctx.settings.render_dpi / 72
        pix = display.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), clip=r, alpha=False)
        picture = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
        sha = ctx.blobs.put(_jpeg(picture), suffix=".jpg")
        box = (r.x0, r.y0, r.x1, r.y1)
        out.append(Piece(box, f"[figure on page {page.number + 1}]", r.height,
                         {"figure": True, "_image": sha, "_size": (pix.width, pix.height)}))
        if len(out) >= FIGURES_PER_PAGE:
            break
    return out


_INLINE_IMAGE = re.compile(rb"\sBI\s")


def _may_show_images(page: pymupdf.Page) -> bool:
    """Whether the page draws any image: from its resources, through a form, or inline."""
    if page.get_images() or page.get_xobjects():
        return True
    try:
        return _INLINE_IMAGE.search(page.read_contents()) is not None
    except (RuntimeError, ValueError):
        return True


def _form(page: pymupdf.Page) -> list[Piece]:
    """Filled form fields as one piece of ``Field: value`` lines, boxed around the widgets."""
    lines, box = [], None
    for widget in page.widgets() or ():
        value = widget.field_value
        if value in (None, "", False, "Off") or (isinstance(value, str) and not value.strip()):
            continue
        label = (widget.field_label or widget.field_name or "field").strip()
        lines.append(f"{label}: {value}")
        r = widget.rect & page.rect
        box = r if box is None else box | r
    if not lines or box is None or box.is_empty:
        return []
    return [Piece((box.x0, box.y0, box.x1, box.y1), "\n".join(lines), 10.0, {"form": True})]


# -- rendering ------------------------------------------------------------------------------
def _pixmap(page: pymupdf.Page, dpi: int, max_pixels: int, *, gray: bool = False,
            max_side: int | None = None, display: pymupdf.DisplayList | None = None) -> tuple[pymupdf.Pixmap, float]:
    """Render at ``dpi``, scaled down so the image stays within the limits; returns (pixmap, zoom)."""
    rect = page.rect
    zoom = dpi / 72
    pixels = rect.width * zoom * rect.height * zoom
    if pixels > max_pixels:
        zoom *= math.sqrt(max_pixels / pixels)
    if max_side and max(rect.width, rect.height) * zoom > max_side:
        zoom = max_side / max(rect.width, rect.height)
    colorspace = pymupdf.csGRAY if gray else pymupdf.csRGB
    source = display if display is not None else page
    return source.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=colorspace, alpha=False), zoom


def _render(page: pymupdf.Page, ctx: ExtractContext, display: pymupdf.DisplayList | None = None,
            full: bool = True) -> dict[str, Any]:
    """Store the page image and a thumbnail as JPEG blobs; only one page's pixels are held at a time.

    Pillow's JPEG encoder is about 6x faster than PNG for a page render, and smaller. Without ``full``,
    only the thumbnail is rendered (at its own small size) and ``image`` is None.
    """
    if not full:
        dpi = max(12, int(72 * THUMB_WIDTH / max(page.rect.width, 1)))
        pix, _ = _pixmap(page, dpi, MAX_RENDER_PIXELS, display=display)
        picture = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
        return {"image": None, "thumb": ctx.blobs.put(_jpeg(picture), suffix=".jpg"), "pixels": (pix.width, pix.height)}
    pix, _ = _pixmap(page, ctx.settings.render_dpi, MAX_RENDER_PIXELS, display=display)
    picture = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    image = ctx.blobs.put(_jpeg(picture), suffix=".jpg")
    factor = 2 ** max(0, math.ceil(math.log2(max(pix.width / THUMB_WIDTH, 1))))
    thumb = ctx.blobs.put(_jpeg(picture.reduce(factor) if factor > 1 else picture), suffix=".jpg")
    return {"image": image, "thumb": thumb, "pixels": (pix.width, pix.height)}


def _jpeg(picture, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _array(pix: pymupdf.Pixmap):
    data = np.frombuffer(pix.samples, dtype=np.uint8)
    return data.reshape(pix.height, pix.width) if pix.n == 1 else data.reshape(pix.height, pix.width, pix.n)[..., ::-1]


# -- a page for the citation viewer --------------------------------------------
def render_page(path: Path, page: int, dpi: int) -> tuple[bytes, tuple[float, float]] | None:
    """Page ``page`` (1-based) of the kept original PDF as PNG bytes, with the page's size in points.

    For pages whose image was not stored at ingest (text pages keep only a thumbnail). None when the
    file is damaged or locked or has no such page: the viewer then shows the passage's text only.
    """
    try:
        with pymupdf.open(path) as pdf:
            if not 0 < page <= pdf.page_count or pdf.needs_pass:
                return None
            pdf_page = pdf[page - 1]
            pix = pdf_page.get_pixmap(dpi=dpi)
            return pix.tobytes("png"), (pdf_page.rect.width, pdf_page.rect.height)
    except (RuntimeError, ValueError):  # a damaged original
        return None


# -- where a quote stands (the viewer highlights the quoted sentence, not the whole passage) -------------------
QUOTE_MIN_WORDS = 3  # a shorter quote matches too many places to mark one
QUOTE_PREFIX_WORDS = 12  # a long quote not found whole is looked for by its first and last words


def _norm_word(word: str) -> str:
    return re.sub(r"\W+", "", unicodedata.normalize("NFKC", word)).lower()


def find_quote(path: Path, page: int, quote: str) -> list[tuple[int, tuple[float, float, float, float]]]:
    """The lines ``quote`` covers on page ``page`` (1-based) of the PDF at ``path``, running on to the next
    page when the quote does: (page, (x0, y0, x1, y1) in PDF points) per line, in reading order.

    Words are compared without case and punctuation, so a quote the model re-spaced or re-punctuated is
    still found; a long quote not found whole is marked from its first words to its last ones. [] when the
    file cannot be read or the words are not there (the viewer then marks the passage's box)."""
    wanted = [w for w in (_norm_word(w) for w in quote.split()) if w]
    if len(wanted) < QUOTE_MIN_WORDS:
        return []
    try:
        with pymupdf.open(path) as pdf:
            if pdf.needs_pass or not 0 < page <= pdf.page_count:
                return []
            words = []  # (page, x0, y0, x1, y1, normalised word, line key)
            for n in range(page, min(page + 1, pdf.page_count) + 1):
                for x0, y0, x1, y1, text, block, line, _ in pdf[n - 1].get_text("words", sort=True):
                    if (word := _norm_word(text)):
                        words.append((n, x0, y0, x1, y1, word, (n, block, line)))
    except (RuntimeError, ValueError):  # a damaged original
        return []
    found = _match(words, wanted)
    if found is None and len(wanted) > 2 * QUOTE_PREFIX_WORDS:
        start = _match(words, wanted[:QUOTE_PREFIX_WORDS])
        end = _match(words, wanted[-QUOTE_PREFIX_WORDS:], after=start[0] if start else 0)
        found = (start[0], end[1]) if start and end else None
    if found is None or words[found[0]][0] != page:
        return []
    lines: dict[tuple, list[float]] = {}
    for n, x0, y0, x1, y1, _, key in words[found[0]:found[1]]:
        box = lines.setdefault(key, [n, x0, y0, x1, y1])
        box[1:] = [min(box[1], x0), min(box[2], y0), max(box[3], x1), max(box[4], y1)]
    return [(int(b[0]), (round(b[1], 2), round(b[2], 2), round(b[3], 2), round(b[4], 2))) for b in lines.values()]


def _match(words: list[tuple], wanted: list[str], after: int = 0) -> tuple[int, int] | None:
    """The first run of ``words`` (from index ``after``) spelling ``wanted``: (start, end), end exclusive."""
    n = len(wanted)
    for i in range(after, len(words) - n + 1):
        if words[i][5] == wanted[0] and all(words[i + k][5] == wanted[k] for k in range(1, n)):
            return i, i + n
    return None
