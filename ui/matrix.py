"""The Matrix tab: fields in, one row per document out, each cell's quote opened on its page.

Thin on purpose: the run, the checks, the storage and the resume are ``Quire.matrix``; this module lays out
the controls, turns events into table rows and shows a cell with the chat's viewer.
"""

from __future__ import annotations

from contextlib import closing

import gradio as gr

from core.errors import QuireError, printable
from core.records import MatrixCellRecord
from quire.api import CUAD_CATEGORIES, CellDone, MatrixRun, Quire, Status, parse_fields
from ui import render, viewer
from ui.errors import user_errors
from ui.sessions import SessionBar
from ui.users import UserScoped

CELL_HEADERS = ["Cell", "Document", "Field", "Answer", "Status", "Quote", "Where", "Mark"]
EMPTY_VIEWER = "Click a cell's row to open its source here."
MARKS = [("No mark", ""), ("Correct", "correct"), ("Wrong", "wrong"), ("Edited", "edited")]


def grid(cells: list[MatrixCellRecord]) -> tuple[list[str], list[list[str]]]:
    """One row per document, one column per field: the answer and its status in words."""
    fields = list(dict.fromkeys(c.field_name for c in cells))
    documents = list(dict.fromkeys(c.document_name for c in cells))
    spot = {(c.document_name, c.field_name): c for c in cells}
    rows = []
    for doc in documents:
        row = [printable(doc)]
        for f in fields:
            c = spot.get((doc, f))
            row.append("" if c is None else f"{render.shorten(c.shown_answer, 160) or '—'}\n[{c.status_words}]"
                       + (f" [{c.mark}]" if c.mark else ""))
        rows.append(row)
    return ["Document", *[printable(f) for f in fields]], rows


def cell_rows(cells: list[MatrixCellRecord]) -> list[list]:
    return [[c.id, printable(c.document_name), printable(c.field_name), render.shorten(c.shown_answer, 200),
             c.status_words, render.shorten(c.quote, 200), printable(c.locator.place()) if c.segment_id else "",
             c.mark] for c in cells]


class MatrixTab(UserScoped):
    def __init__(self, quire: Quire) -> None:
        super().__init__(quire)

    # -- plain handlers --------------------------------------------------------------
    def _outputs(self, cells: list[MatrixCellRecord], message: str):
        headers, rows = grid(cells)
        return message, gr.update(value=rows, headers=headers), cell_rows(cells)

    @user_errors
    def load(self, session: str | None):
        if not session:
            return self._outputs([], "Pick a session, name the fields, and run.")
        cells = self.q.matrix_cells(session)
        return self._outputs(cells, f"{len(cells)} cells stored for this session." if cells else "No cells yet.")

    @user_errors
    def document_choices(self, session: str | None):
        try:
            docs = self.q.documents(session) if session else []
        except QuireError:  # deleted or renamed meanwhile
            docs = []
        return gr.update(choices=[(printable(d.name), d.id) for d in docs], value=[])

    @user_errors
    def run(self, session: str, fields: str, categories: list[str], documents: list[int] | None = None,
            request: gr.Request | None = None):
        """Fill the matrix; the table grows as each document's row is done. Stop keeps what is done."""
        if not session:
            raise gr.Error("Pick or create a session first.")
        wanted = parse_fields(fields or "", categories or [])
        names = [f.name for f in wanted]
        cells: dict[tuple[int, str], MatrixCellRecord] = {}
        asker = request.session_hash if request is not None else None
        chosen = [int(d) for d in documents or []] or None
        with closing(self.q.matrix(session, wanted, documents=chosen, asker=asker)) as events:
            for event in events:
                if isinstance(event, CellDone):
                    cells[(event.cell.document_id, event.cell.field_name)] = event.cell
                    yield self._outputs(list(cells.values()), f"{len(cells)} cells done…")
                elif isinstance(event, Status):
                    yield (f"[{event.done}/{event.total} cells] {render.md_escape(event.message)}",
                           gr.skip(), gr.skip())
                elif isinstance(event, MatrixRun):
                    ordered = self.q.matrix_cells(session, names)
                    end = "Stopped: run again to resume." if event.stopped else "Done."
                    yield self._outputs(ordered, f"{end} {event.done} of {event.total} cells "
                                                 f"({event.reused} kept from an earlier run), {event.wall_s:.0f} s.")

    def stop(self, request: gr.Request | None = None) -> None:
        self.q.stop(asker=request.session_hash if request is not None else None)

    @staticmethod
    def pick_row(evt: gr.SelectData):
        return evt.row_value[0] if evt.row_value else gr.skip()

    @user_errors
    def open_cell(self, session: str, cell_id):
        """The cell's verdict, and its source in the viewer (previous/next there step through the found cells)."""
        if cell_id in (None, "") or not session:
            return "Click a cell's row to see its source here.", viewer.placeholder(EMPTY_VIEWER), gr.skip(), gr.skip()
        cell = self.q.matrix_cell(int(cell_id))
        title = (f"**{render.md_escape(cell.field_name)}** · {render.md_escape(cell.document_name)} · "
                 f"{render.md_escape(cell.status_words)}")
        if cell.segment_id is None:
            title += "\n\nNo passage to open: " + ("nothing was found." if cell.status == "not_found"
                                                    else "the answer's quote was not found in the document.")
            return title, viewer.placeholder("Nothing to open for this cell."), cell.mark, cell.edit or cell.answer
        return title, viewer.frame(viewer.cell_url(session, cell.id), "matrix-viewer-frame"), cell.mark, \
            cell.edit or cell.answer

    @user_errors
    def save_mark(self, session: str, cell_id, mark: str, edit: str):
        if cell_id in (None, ""):
            raise gr.Error("Click a cell first.")
        self.q.mark_cell(int(cell_id), mark or "", edit or "")
        return self.load(session)

    # -- layout ------------------------------------------------------------------------
    def build(self, bar: SessionBar) -> None:
        session = bar.current
        gr.Markdown("One row per document, one column per field. Each cell holds an answer and the quote it rests "
                    "on, **verified** only when the quote is in the passage it cites. Stop keeps what is done; "
                    "running again resumes.", elem_classes="quire-hint")
        with gr.Row(equal_height=False):
            fields = gr.Textbox(label="Fields (one per line)", lines=3, scale=3,
                                placeholder="Governing law\nCan either party terminate for convenience? How much notice?")
            categories = gr.Dropdown(choices=[c.name for c in CUAD_CATEGORIES], multiselect=True, scale=2,
                                     label="Or pick CUAD clause categories",
                                     info="Each asks its description (CUAD v1, CC-BY-4.0)")
            documents = gr.CheckboxGroup(label="Documents", choices=[], scale=2, elem_id="matrix-documents",
                                         info="None ticked: every document of the session.")
            with gr.Column(scale=0, min_width=110):
                run = gr.Button("Run", variant="primary", elem_id="matrix-run")
                stop = gr.Button("Stop", elem_id="matrix-stop")
        progress = gr.Markdown(elem_id="matrix-progress")
        table = gr.Dataframe(headers=["Document"], label="Matrix", interactive=False, wrap=True, elem_id="matrix")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=420):
                cells = gr.Dataframe(headers=CELL_HEADERS, label="Cells (click one to open its page)",
                                     interactive=False, wrap=True, max_height=360, elem_id="matrix-cells")
                pick = gr.Number(label="Cell", precision=0, visible=False)
                with gr.Row(equal_height=True):
                    mark = gr.Dropdown(MARKS, value="", label="Reviewer's mark", scale=1)
                    edit = gr.Textbox(label="Edited answer (kept with mark Edited)", scale=3)
                    save = gr.Button("Save mark", scale=0, min_width=100)
            with gr.Column(scale=2, min_width=320):
                title = gr.Markdown("Click a cell's row to see its source here.", elem_id="matrix-cell-title")
                frame = gr.HTML(viewer.placeholder(EMPTY_VIEWER), elem_id="matrix-viewer", label="Document viewer")

        outputs = [progress, table, cells]
        running = run.click(self.run, [session, fields, categories, documents], outputs, api_name="matrix",
                            concurrency_id="model")
        stop.click(self.stop, None, None, cancels=[running], api_visibility="private")
        bar.on_switch(self.load, outputs)
        bar.on_switch(self.document_choices, documents)
        bar.on_documents(self.document_choices, documents)
        cells.select(self.pick_row, None, pick, api_visibility="private")
        pick.change(self.open_cell, [session, pick], [title, frame, mark, edit], api_visibility="private")
        save.click(self.save_mark, [session, pick, mark, edit], outputs, api_visibility="private")
