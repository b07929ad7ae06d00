"""Exporting a session: a report of its questions, answers and cited passages
(Markdown, HTML or PDF) and copies of the cited PDFs with those passages highlighted.

    from export import export_session
    with Quire() as q:
        paths = export_session(q, "contracts", "html", Path("report.html"))
"""

from export.annotate import highlight_sources
from export.bundle import FORMATS, UnknownFormat, export_session
from export.files import ExportError
from export.html import render_html
from export.markdown import render_markdown
from export.pdf import render_pdf
from export.report import Report, ReportCitation, ReportTurn, build_report

__all__ = [
    "FORMATS",
    "ExportError",
    "Report",
    "ReportCitation",
    "ReportTurn",
    "UnknownFormat",
    "build_report",
    "export_session",
    "highlight_sources",
    "render_html",
    "render_markdown",
    "render_pdf",
]
