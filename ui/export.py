"""The Export tab: write a session's report (Markdown, HTML or PDF) and offer it for download."""

from __future__ import annotations

import re
import secrets
import time
import zipfile
from pathlib import Path

import gradio as gr

from export import FORMATS as export_formats
from export import export_session
from quire.api import Quire
from ui import render
from ui.errors import user_errors
from ui.sessions import SessionBar
from ui.users import UserScoped

FORMATS = [(f"{label} (.{name})", name) for name, (label, _) in export_formats.items()]


def export_dir(quire: Quire) -> Path:
    """Where the UI writes reports: one folder per user (the server hands a file under it to that user only)."""
    return quire.settings.home / "exports"


def user_export_dir(quire: Quire) -> Path:
    return export_dir(quire) / str(quire.whoami().id)


def slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name, flags=re.UNICODE).strip("-.") or "session"


def bundle(paths: list[Path], target: Path) -> Path:
    """Zip the report with the highlighted PDFs written beside it."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in paths:
            zf.write(path, arcname=path.name)
    return target


class ExportTab(UserScoped):
    def __init__(self, quire: Quire) -> None:
        super().__init__(quire)

    @user_errors
    def export(self, session: str, fmt: str):
        if not session:
            raise gr.Error("Pick a session first.")
        if fmt not in {value for _, value in FORMATS}:
            raise gr.Error(f"Unknown format {fmt!r}: choose {', '.join(export_formats)}.")
        q = self.q
        folder = user_export_dir(q) / f"{slug(session)}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(6)}"
        folder.mkdir(parents=True, exist_ok=True)
        written = export_session(q, session, fmt, folder / f"{slug(session)}.{fmt}")
        files = [str(p) for p in written if p.is_file()]
        note = f"Report for **{render.md_escape(session)}** written."
        if len(files) > 1:
            files = [files[0], str(bundle(written, folder / f"{slug(session)}-with-pdfs.zip"))]
            note += f" The zip holds it with {len(written) - 1} highlighted PDF{'s' if len(written) > 2 else ''}."
        return files, note

    def build(self, bar: SessionBar) -> None:
        session = bar.current
        gr.Markdown("Write every question of this session with its answer, citations and quotes. "
                    "PDF sources can come with copies whose cited regions are highlighted.")
        with gr.Row(equal_height=True):
            fmt = gr.Radio(FORMATS, value="md", label="Format", scale=2)
            go = gr.Button("Export report", variant="primary", scale=1)
        note = gr.Markdown()
        files = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="export-files")
        go.click(self.export, [session, fmt], [files, note], api_name="export")
        bar.on_switch(lambda: (None, ""), [files, note], inputs=[])
