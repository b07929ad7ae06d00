"""The report as a PDF, laid out by PyMuPDF's Story from the same escaped HTML body.

Story flows the body across as many A4 pages as it needs and falls back to
MuPDF's bundled Noto fonts for scripts the base font lacks; the ``[S3]``
markers stay clickable links to their passages.
"""

from __future__ import annotations

from pathlib import Path

import pymupdf

from export.files import atomic_write
from export.html import report_body
from export.report import Report

PAGE = pymupdf.paper_rect("a4")
MARGIN = 48

PDF_CSS = """
body { font-family: sans-serif; font-size: 10pt; line-height: 1.35; color: #1f2328; }
h1 { font-size: 17pt; margin-bottom: 4pt; }
h2 { font-size: 13pt; margin-top: 16pt; }
h3 { font-size: 10.5pt; color: #57606a; margin-top: 8pt; }
p { margin-top: 3pt; margin-bottom: 3pt; }
.meta, .facts, .origin { color: #57606a; font-size: 8.5pt; }
a.ref { color: #0969da; font-weight: bold; text-decoration: none; }
blockquote { margin-left: 10pt; margin-top: 3pt; padding-left: 6pt; color: #333333; font-style: italic; }
.badge { font-size: 8pt; font-weight: bold; }
.badge.verified { color: #116329; }
.badge.quoted { color: #953800; }
.badge.unverified { color: #9a6700; }
.warning { color: #a40e26; font-weight: bold; }
.badge.missing { color: #a40e26; }
table.docs td, table.docs th { font-size: 8.5pt; padding-right: 8pt; text-align: left; }
li { margin-bottom: 6pt; }
"""


def render_pdf(report: Report, out_path: Path) -> Path:
    """Write the report to ``out_path`` (atomically) and return it."""
    out_path = Path(out_path)
    atomic_write(out_path, pdf_bytes(report))
    return out_path


def pdf_bytes(report: Report) -> bytes:
    html = f"<html><body>{report_body(report)}</body></html>"
    story = pymupdf.Story(html=html, user_css=PDF_CSS)
    where = PAGE + (MARGIN, MARGIN, -MARGIN, -MARGIN)
    doc = story.write_with_links(lambda rect_num, filled: (PAGE, where, None))
    try:
        doc.set_metadata({"title": f"Quire report: {report.session}", "creator": "Quire", "producer": "Quire"})
        _number_pages(doc)
        return doc.tobytes(garbage=3, deflate=True)
    finally:
        doc.close()


def _number_pages(doc: pymupdf.Document) -> None:
    total = doc.page_count
    for page in doc:
        footer = pymupdf.Rect(MARGIN, PAGE.height - MARGIN + 12, PAGE.width - MARGIN, PAGE.height - 12)
        page.insert_textbox(footer, f"{page.number + 1} / {total}", fontsize=8, color=(0.4, 0.4, 0.4), align=1)
