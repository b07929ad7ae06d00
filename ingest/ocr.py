"""Optical character recognition behind one small seam, and the layout helpers it shares with PDFs.

The engine is RapidOCR (``rapidocr-onnxruntime``: PP-OCRv4 detection and
recognition as ONNX models shipped inside the wheel, so nothing is downloaded
at run time). It is created on first use, once per process; when the package
is missing, :func:`engine` returns ``None`` and callers ingest without OCR.

The layout helpers turn boxes of text (native PDF blocks or OCR lines) into
paragraph-size pieces in reading order: columns left to right, top to bottom
inside a column, with anything spanning the columns read where it stands.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from statistics import median
from typing import Any, Iterable

import numpy as np

from core.settings import Settings

log = logging.getLogger(__name__)

MIN_SCORE = 0.5  # recognition confidence below which a line is dropped
MAX_CHARS = 1500  # paragraph pieces grow to about this many characters (~350 tokens)
WIDE = 0.55  # a box at least this share of the text width spans the columns
SCRAP = 60  # pieces shorter than this many characters are merged with close neighbours

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: Box  # x0, y0, x1, y1 in pixels of the image that was read
    score: float


class OcrEngine:
    """RapidOCR with the settings Quire needs; ``read`` is safe to call from several threads."""

    name = "rapidocr-onnxruntime"

    def __init__(self, threads: int = 0) -> None:
        from rapidocr_onnxruntime import RapidOCR  # heavy import (onnxruntime, OpenCV): only here

        opts: dict[str, Any] = {"use_cls": True, "text_score": MIN_SCORE}
        if threads > 0:
            opts.update(intra_op_num_threads=threads, inter_op_num_threads=1)
        self._ocr = RapidOCR(**opts)
        self._lock = threading.Lock()

    def read(self, image) -> OcrPage:
        """Text lines of ``image`` (a numpy array: grey HxW or BGR HxWx3, uint8), read upright.

        A page scanned sideways or upside down is turned and read again: most detected lines
        standing tall means a quarter turn, and RapidOCR's line classifier tells which way (it
        also tells when wide lines are upside down: a half turn)."""
        height, width = image.shape[:2]
        with self._lock:
            result, _ = self._ocr(image)
            turn = self._turn(image, result)
            if turn:
                result, _ = self._ocr(np.ascontiguousarray(np.rot90(image, turn)))
        lines = []
        for points, text, score in result or []:
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            text = str(text).strip()
            if text and float(score) >= MIN_SCORE:
                lines.append(OcrLine(text, (min(xs), min(ys), max(xs), max(ys)), float(score)))
        return OcrPage(sorted(lines, key=lambda line: (line.box[1], line.box[0])), turn, (width, height))

    def _turn(self, image, result) -> int:
        """Quarter turns anticlockwise that make the page upright (0 for most pages, at the cost of
        classifying a couple of dozen lines)."""
        if not result:
            return 0
        tall = _mostly_tall(result)
        lines = [r for r in result if _is_tall(r[0]) == tall]
        # RapidOCR turns a tall line anticlockwise before classifying it, as a quarter turn would
        flipped = self._mostly_upside_down(image, lines)
        if tall:
            return 3 if flipped else 1
        return 2 if flipped else 0

    def _mostly_upside_down(self, image, result) -> bool:
        """Whether RapidOCR's line classifier finds most of the longest lines turned 180 degrees.

        Uses its internals (pinned version); if they change, pages are taken as upright."""
        longest = sorted(result, key=lambda r: -_length(r[0]))[:ORIENTATION_LINES]
        try:
            crops = self._ocr.get_crop_img_list(image, [np.array(r[0], dtype=np.float32) for r in longest])
            crops = [np.dstack([c, c, c]) if c.ndim == 2 else c for c in crops]  # the classifier wants BGR
            _, labels, _ = self._ocr.text_cls(crops)
        except (AttributeError, TypeError, ValueError) as exc:
            log.debug("orientation check unavailable: %s", exc)
            return False
        flipped = sum(1 for label, score in labels if "180" in str(label) and score >= 0.9)
        return flipped > len(labels) / 2


ORIENTATION_LINES = 24  # the longest lines of a page that vote on whether it is upside down


def _extent(points) -> tuple[float, float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return max(xs) - min(xs), max(ys) - min(ys)


def _is_tall(points) -> bool:
    w, h = _extent(points)
    return h >= 2 * w


def _length(points) -> float:
    return max(_extent(points))


def _mostly_tall(result) -> bool:
    """Whether most detected lines with some length stand upright (text running up or down the page)."""
    tall = wide = 0
    for points, _, _ in result:
        w, h = _extent(points)
        tall += h >= 2 * w
        wide += w >= 2 * h
    return tall >= 3 and tall > 2 * wide


@dataclass
class OcrPage:
    """What OCR read: lines with boxes in the upright image, which is the input turned ``turn``
    quarter turns anticlockwise (``numpy.rot90``); ``size`` is the input's (width, height)."""

    lines: list[OcrLine]
    turn: int = 0
    size: tuple[int, int] = (0, 0)

    def unturn(self, box: Box) -> Box:
        """A box of the upright image in the input image's pixels."""
        w, h = self.size
        x0, y0, x1, y1 = box
        turn = self.turn % 4
        if turn == 1:
            return (w - y1, x0, w - y0, x1)
        if turn == 2:
            return (w - x1, h - y1, w - x0, h - y0)
        if turn == 3:
            return (y0, h - x1, y1, h - x0)
        return box


_engine: OcrEngine | None = None
_missing = False
_create_lock = threading.Lock()


def engine(threads: int = 0) -> OcrEngine | None:
    """The process's OCR engine, created on first call; ``None`` when the package is not installed."""
    global _engine, _missing
    with _create_lock:
        if _engine is None and not _missing:
            try:
                _engine = OcrEngine(threads)
            except ImportError as exc:
                _missing = True
                log.warning("OCR unavailable (%s): scanned pages and images are kept as images only", exc)
    return _engine


MISSING_WARNING = "OCR is not installed (pip install rapidocr-onnxruntime): {what} kept as an image only."
OFF_WARNING = "OCR is turned off: {what} kept as an image only."


def for_settings(settings: Settings) -> tuple[OcrEngine | None, str]:
    """The engine to use under ``settings`` (``settings.ocr`` False turns it off), or None and why not."""
    if not settings.ocr:
        return None, OFF_WARNING
    found = engine(settings.threads)
    return found, "" if found else MISSING_WARNING


# -- layout: shared by native PDF text and OCR lines ----------------------------
@dataclass
class Piece:
    """A box of text on a page or image; ``line_height`` tells how far apart its lines are."""

    box: Box
    text: str
    line_height: float
    meta: dict[str, Any] = field(default_factory=dict)  # non-empty pieces (tables, forms) are never merged

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]


def from_lines(lines: Iterable[OcrLine]) -> list[Piece]:
    """OCR lines as pieces, boxes still in the pixels of the image that was read."""
    return [Piece(line.box, line.text, line.box[3] - line.box[1], {"ocr": True}) for line in lines]


def reading_order(pieces: list[Piece]) -> list[Piece]:
    """Pieces in reading order: bands between column-spanning pieces, each band column by column."""
    if len(pieces) < 2:
        return list(pieces)
    left = min(p.box[0] for p in pieces)
    right = max(p.box[2] for p in pieces)
    wide = WIDE * (right - left)
    ordered: list[Piece] = []
    band: list[Piece] = []
    for piece in sorted(pieces, key=lambda p: (round(p.box[1], 1), p.box[0])):
        if piece.width >= wide:
            ordered += _columns(band)
            band = []
            ordered.append(piece)
        else:
            band.append(piece)
    return ordered + _columns(band)


def _columns(band: list[Piece]) -> list[Piece]:
    """Group a band's pieces into columns of overlapping x-ranges, read left to right."""
    columns: list[list[Piece]] = []
    reach = float("-inf")
    for piece in sorted(band, key=lambda p: p.box[0]):
        if columns and piece.box[0] < reach - 2:
            columns[-1].append(piece)
            reach = max(reach, piece.box[2])
        else:
            columns.append([piece])
            reach = piece.box[2]
    return [p for column in columns for p in sorted(column, key=lambda p: (p.box[1], p.box[0]))]


def paragraphs(pieces: list[Piece], max_chars: int = MAX_CHARS, join: str = "\n") -> list[Piece]:
    """Merge neighbours (already in reading order) that sit one line apart into paragraph-size pieces."""
    out: list[Piece] = []
    for piece in pieces:
        last = out[-1] if out else None
        if last is not None and _continues(last, piece, max_chars):
            out[-1] = replace(last, box=_union(last.box, piece.box), text=last.text + join + piece.text,
                              line_height=max(last.line_height, piece.line_height))
        else:
            out.append(piece)
    return out


def _continues(last: Piece, piece: Piece, max_chars: int) -> bool:
    if any(p.meta.get(kind) for p in (last, piece) for kind in ("table", "form", "figure")):
        return False
    if len(last.text) + len(piece.text) > max_chars:
        return False
    height = min(last.line_height, piece.line_height) or 1.0
    gap = piece.box[1] - last.box[3]
    overlap = min(last.box[2], piece.box[2]) - max(last.box[0], piece.box[0])
    if -0.5 * height <= gap <= 0.8 * height and overlap > 0:
        return True
    # scraps (figure labels, table cells, headers) close together read better as one piece
    apart = max(0.0, gap, last.box[1] - piece.box[3])
    return len(last.text) < SCRAP * 4 and len(piece.text) < SCRAP and apart < 2 * height


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def ocr_pieces(page: OcrPage, scale: float = 1.0, offset: tuple[float, float] = (0.0, 0.0)) -> list[Piece]:
    """OCR lines to paragraph pieces in reading order (found upright), with boxes turned back to
    the input image, scaled by ``scale`` (pixels to points) and shifted by ``offset``."""
    pieces = from_lines(page.lines)
    if pieces:
        typical = median(p.line_height for p in pieces)
        for p in pieces:  # one line height per page keeps paragraph gaps comparable
            p.line_height = typical
    ox, oy = offset
    out = paragraphs(reading_order(pieces), join=" ")
    for piece in out:
        x0, y0, x1, y1 = (v * scale for v in page.unturn(piece.box))
        piece.box = (x0 + ox, y0 + oy, x1 + ox, y1 + oy)
        if page.turn:
            piece.meta["turned"] = 90 * page.turn  # degrees the scan was turned anticlockwise to be read
    return out
