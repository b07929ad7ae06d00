"""One call that writes a session's report and its highlighted source PDFs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from export.annotate import highlight_sources
from export.files import ExportError, atomic_write, safe_stem
from export.html import render_html
from export.markdown import render_markdown
from export.matrix import render_csv, render_xlsx
from export.pdf import pdf_bytes
from export.report import Report, build_report
from quire.api import Quire, SessionRef

# Every report format: its name (the CLI's --format, the file suffix), its label in the UI, its renderer.
FORMATS: dict[str, tuple[str, Callable[[Report], bytes | str]]] = {
    "md": ("Markdown", render_markdown),
    "html": ("HTML", render_html),
    "pdf": ("PDF", pdf_bytes),
    "csv": ("CSV (review matrix)", render_csv),
    "xlsx": ("XLSX (review matrix)", render_xlsx),
}


class UnknownFormat(ExportError):
    pass


def export_session(q: Quire, session: SessionRef, fmt: str, out: Path | str) -> list[Path]:
    """Write the report as ``fmt`` to ``out`` and highlighted cited PDFs to ``<out stem>_sources/``.

    ``out`` may be an existing folder: the report is then named after the session.
    Returns every path written, the report first.
    """
    fmt = check_format(fmt)
    info = q.session(session, create=False)
    report = build_report(q, info)
    out = Path(out)
    if out.is_dir():
        out = out / f"{safe_stem(report.session, 'report')}.{fmt}"
    written = [atomic_write(out, FORMATS[fmt][1](report))]
    written += highlight_sources(q, info, out.parent / f"{out.stem}_sources")
    return written


def check_format(fmt: str) -> str:
    name = (fmt or "").strip().lower().lstrip(".")
    name = {"markdown": "md", "htm": "html"}.get(name, name)
    if name not in FORMATS:
        raise UnknownFormat(f"Cannot export as {fmt!r}.", hint=f"Use one of: {', '.join(FORMATS)}.")
    return name
