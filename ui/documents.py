"""The Documents tab: upload files and archives, see what a session holds, remove documents."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr

from core.errors import QuireError, printable
from quire.api import Progress, Quire
from ui import render
from ui.errors import user_errors
from ui.sessions import SessionBar
from ui.users import UserScoped

FILE_HINT = (
    "PDFs (scanned ones too), images and screenshots, text and Markdown, source files, "
    "and zipped folders or codebases (.zip, .tar.gz). Several at once is fine."
)


def progress_reporter(progress: gr.Progress, files: int):
    """Feed ingest progress events (documents, then pages or a codebase's files within one) to a Gradio progress
    bar. ``files`` is the uploads' count until the events say how many documents there are (an archive of
    documents is several)."""
    position = {"file": 0}

    def report(event: Progress) -> None:
        nonlocal files
        if event.stage not in ("page", "source") and event.total:
            files = event.total
        name = printable(event.name)
        if event.stage == "file":
            position["file"] = event.done
            progress(event.done / max(files, 1), desc=f"Reading {name} ({event.done + 1}/{files})")
        elif event.stage in ("page", "source") and event.total:
            share = (position["file"] + event.done / event.total) / max(files, 1)
            unit = "page" if event.stage == "page" else "file"
            progress(min(share, 1.0), desc=f"{name}: {unit} {event.done:,}/{event.total:,}")
        elif event.stage in ("done", "error"):
            progress(event.done / max(files, 1), desc=f"Finished {name}: {event.done}/{files} files, "
                                                      f"{event.pages:,} pages, ~{event.tokens:,} tokens so far")

    return report


class DocumentsTab(UserScoped):
    def __init__(self, quire: Quire) -> None:
        super().__init__(quire)
        self._cancel = threading.Event()

    # -- plain handlers ---------------------------------------------------------
    def _documents(self, session: str | None):
        if not session:
            return [], None
        try:
            info = self.q.session(session, create=False)
            return self.q.documents(info), self.q.budget(info)
        except QuireError:  # the session was just deleted or renamed elsewhere
            return [], None

    def view(self, session: str | None):
        """Table rows, gauge and the remove picker for a session."""
        docs, budget = self._documents(session)
        rows = render.document_rows(docs)
        gauge = render.gauge_html(budget) if budget else ""
        choices = [(f"{printable(d.name)} ({d.kind})", d.id) for d in docs]
        return rows, gauge, gr.update(choices=choices, value=None)

    @user_errors
    def ingest(self, session: str, files: list[str] | None, password: str = "", progress=gr.Progress()):
        if not session:
            raise gr.Error("Pick or create a session first.")
        paths = [str(f) for f in files or []]
        if not paths:
            raise gr.Error("Choose one or more files to add.")
        self._cancel.clear()
        names = {p: Path(p).name for p in paths}
        progress(0, desc="Starting…")
        results = self.q.ingest(
            session, paths, passwords=(password or None), names=names,
            progress=progress_reporter(progress, len(paths)), cancelled=self._cancel.is_set,
        )
        # an upload that failed whole can be retried (with a password, say); a document of an archive that failed
        # is in the report, and its copy is gone with the batch: it is retried by uploading it again
        uploads = {name: path for path, name in names.items()}
        failed = {r.name: uploads[r.name] for r in results if r.status == "error" and r.name in uploads}
        return (render.ingest_report(results), *self.view(session), failed, *_retry_update(failed), None)

    @user_errors
    def retry(self, session: str, failed: dict[str, str], name: str, password: str, progress=gr.Progress()):
        failed = dict(failed or {})
        if not name or name not in failed:
            raise gr.Error("Pick the file to retry.")
        path = failed[name]
        progress(0, desc=f"Retrying {name}")
        results = self.q.ingest(session, [path], passwords=(password or None), names={path: name},
                                progress=progress_reporter(progress, 1))
        if results and results[0].status != "error":
            failed.pop(name)
        return (render.ingest_report(results), *self.view(session), failed, *_retry_update(failed), "")

    def pick_row(self, session: str | None, evt: gr.SelectData):
        """Clicking a table row picks that document for removal (the table keeps session order)."""
        docs, _ = self._documents(session)
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return docs[row].id if isinstance(row, int) and 0 <= row < len(docs) else gr.skip()

    def stop(self) -> str:
        self._cancel.set()
        return "Stopping after the current file…"

    # -- shard states -------------------------------------------------------------------
    @user_errors
    def warm(self, session: str):
        """Start preparing the session's shards in the background; the timer then reports how it goes."""
        if not session:
            raise gr.Error("Pick or create a session first.")
        status = self.q.warm(session, force=True)
        return render.warming_line(status), gr.Timer(active=True)

    def warm_progress(self, session: str | None):
        """The warming line, polled while it runs; the timer stops when it has ended."""
        try:
            status = self.q.warm_status(session) if session else None
        except QuireError:
            status = None
        running = status is not None and status.state in ("queued", "warming", "paused")
        return render.warming_line(status), gr.Timer(active=running)

    @user_errors
    def remove(self, session: str, document_id: int | None):
        if not session or document_id in (None, "") or not str(document_id).isdigit():
            raise gr.Error("Pick a document to remove.")
        self.q.remove_document(session, int(document_id))
        return self.view(session)

    # -- layout -----------------------------------------------------------------------
    def build(self, bar: SessionBar) -> None:
        session = bar.current
        with gr.Row():
            with gr.Column(scale=3):
                files = gr.File(label="Add files", file_count="multiple", type="filepath", height=160, elem_id="documents-upload")
                gr.Markdown(FILE_HINT, elem_classes=["quire-hint"])
            with gr.Column(scale=2):
                password = gr.Textbox(label="PDF password", type="password",
                                      placeholder="Only for encrypted PDFs; used for the whole batch")
                with gr.Row():
                    add = gr.Button("Add to session", variant="primary")
                    stop = gr.Button("Stop", variant="stop", scale=0, min_width=80)
        report = gr.Markdown(elem_id="ingest-report")
        failed = gr.State({})
        with gr.Row(visible=False, equal_height=True) as retry_row:
            retry_pick = gr.Dropdown(label="Retry a file that failed", choices=[], scale=3, allow_custom_value=True)
            retry_password = gr.Textbox(label="Password", type="password", scale=2)
            retry = gr.Button("Retry", scale=0, min_width=90)
        gauge = gr.HTML(elem_id="token-gauge")
        table = gr.Dataframe(
            headers=render.DOCUMENT_HEADERS, datatype=["str", "str", "number", "number", "number", "str", "str"],
            label="Documents in this session", interactive=False, wrap=True, column_count=7, elem_id="documents-table",
        )
        with gr.Row(equal_height=True):
            pick = gr.Dropdown(label="Document", choices=[], scale=4, allow_custom_value=True,
                               info="Pick one here or click its row in the table.")
            remove = gr.Button("Remove from session", variant="stop", scale=0, min_width=180)
        with gr.Row(equal_height=True):
            warm = gr.Button("Prepare for sweep and matrix", scale=0, min_width=240, elem_id="warm-shards")
            warming = gr.Markdown(render.WARM_HINT, elem_id="warm-status", elem_classes=["quire-hint"])
        ticker = gr.Timer(2.0, active=False)

        view = [table, gauge, pick]
        retry_outputs = [retry_row, retry_pick]
        added = add.click(self.ingest, [session, files, password], [report, *view, failed, *retry_outputs, files],
                          api_name="ingest", concurrency_limit=1, show_progress_on=[report])
        stop.click(self.stop, None, report, queue=False, api_name="stop_ingest")
        retried = retry.click(self.retry, [session, failed, retry_pick, retry_password],
                              [report, *view, failed, *retry_outputs, retry_password], api_name="retry_ingest",
                              show_progress_on=[report])
        removed = remove.click(self.remove, [session, pick], view, api_name="remove_document")
        table.select(self.pick_row, session, pick, api_visibility="private")
        warm.click(self.warm, session, [warming, ticker], api_name="warm_shards")
        ticker.tick(self.warm_progress, session, [warming, ticker], api_visibility="private", show_progress="hidden")
        bar.on_switch(self.view, view, api_name="documents")
        bar.on_switch(lambda: ("", {}, *_retry_update({})), [report, failed, *retry_outputs], inputs=[])
        bar.documents_changed(added, retried, removed)
        bar.on_documents(self.view, view)


def _retry_update(failed: dict[str, str]):
    names = list(failed)
    return gr.update(visible=bool(names)), gr.update(choices=names, value=names[0] if names else None)
