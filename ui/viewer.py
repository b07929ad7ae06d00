"""The citation viewer: the cited PDF page with its region highlighted, or the cited lines of a file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from core.records import CitationRecord, SegmentRecord
from quire.api import Quire
from ui import render
from ui.users import UserScoped

HIGHLIGHT_FILL = (255, 213, 0, 90)
HIGHLIGHT_EDGE = (230, 115, 0, 255)
CODE_LANGUAGES = {
    "python", "c", "cpp", "markdown", "latex", "json", "html", "css", "javascript", "typescript",
    "yaml", "dockerfile", "shell", "r", "sql",
}


@dataclass
class View:
    title: str  # Markdown, escaped
    image: Image.Image | None = None
    text: str | None = None
    language: str | None = None


def highlight(image: Image.Image, bbox, page_size: tuple[float, float] | None) -> Image.Image:
    """Draw ``bbox`` (PDF points) onto a page image, scaling points to the image's pixels."""
    page = image.convert("RGBA")
    if not bbox:
        return page.convert("RGB")
    width_pt, height_pt = page_size or (page.width, page.height)
    sx, sy = page.width / max(width_pt, 1e-6), page.height / max(height_pt, 1e-6)
    x0, y0, x1, y1 = (float(v) for v in bbox)
    pad = max(2, round(page.width / 300))
    box = (
        max(0, min(x0, x1) * sx - pad), max(0, min(y0, y1) * sy - pad),
        min(page.width, max(x0, x1) * sx + pad), min(page.height, max(y0, y1) * sy + pad),
    )
    overlay = Image.new("RGBA", page.size, (0, 0, 0, 0))
    ImageDraw.Draw(overlay).rectangle(box, fill=HIGHLIGHT_FILL, outline=HIGHLIGHT_EDGE, width=max(2, pad))
    return Image.alpha_composite(page, overlay).convert("RGB")


class Viewer(UserScoped):
    def __init__(self, quire: Quire) -> None:
        super().__init__(quire)

    def show(self, citation: CitationRecord) -> View:
        title = f"**{render.md_escape(citation.ref)}** · {render.md_escape(citation.document_name)} · " \
                f"{render.md_escape(citation.locator.place())} · {render.badge(citation.status, citation.origin)}"
        if citation.segment_id is None:
            return View(title + "\n\nThe model cited a passage it was not shown, so there is nothing to open.")
        segment = self.q.segments_by_id([citation.segment_id]).get(citation.segment_id)
        if segment is None:
            return View(title + "\n\nThis passage is no longer stored (its document was removed).")
        page = citation.locator.page or segment.locator.page
        if page:
            image, size = self.q.page_image(self.q.document(segment.document_id), page)
            bbox = citation.locator.bbox or segment.locator.bbox
            return View(title, image=highlight(image, bbox, size) if image else None, text=segment.text or None)
        if segment.kind == "image" and segment.image_sha:
            return View(title, image=self.q.open_image(segment.image_sha), text=segment.text or None)
        return View(title, text=self.lines(segment, citation), language=_language(segment))

    # -- text --------------------------------------------------------------------------
    @staticmethod
    def lines(segment: SegmentRecord, citation: CitationRecord) -> str:
        """The segment's text; when the citation names fewer lines than the segment holds, just those."""
        text = segment.text
        start, cited = segment.locator.line_start, citation.locator
        if start is None or cited.line_start is None or segment.meta.get("language"):
            return text  # code segments carry their own line numbers
        body = text.split("\n")
        first = max(cited.line_start - start, 0)
        last = (cited.line_end or cited.line_start) - start + 1
        picked = body[first:last]
        return "\n".join(picked) if picked and len(picked) < len(body) else text


def _language(segment: SegmentRecord) -> str | None:
    language = segment.meta.get("language") or segment.meta.get("format")
    if language in CODE_LANGUAGES:
        return language
    suffix = Path(segment.locator.path or "").suffix.lower()
    return {".py": "python", ".js": "javascript", ".ts": "typescript", ".md": "markdown", ".json": "json",
            ".sh": "shell", ".yml": "yaml", ".yaml": "yaml", ".sql": "sql", ".c": "c", ".h": "c",
            ".cpp": "cpp", ".css": "css", ".html": "html"}.get(suffix)
