"""The Chat tab, one workspace: the session's documents beside the conversation (drop files there, limit a
question to some of them), the answer streaming with its citations as markers, and the viewer beside it."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

import gradio as gr

from core.errors import QuireError, printable
from core.records import SessionRecord, TurnRecord
from quire.api import STRATEGIES, Answer, Delta, Quire, Status, Waiting
from ui import render, viewer
from ui.documents import progress_reporter
from ui.errors import user_errors
from ui.sessions import SessionBar
from ui.users import UserScoped

STREAM_EVERY_S = 0.05  # at most ~20 screen updates a second while an answer streams
ASKERS_AT_ONCE = 16  # questions handled at once: one holds the model, the others wait in line and say where they stand
CURSOR = " ▍"
FRAME = "chat-viewer-frame"  # the viewer's iframe; the chat's citation markers load into it (ui/app.js)
DROP_HINT = "PDFs, images, text, code, zipped folders."
EMPTY_VIEWER = "Click a citation marker in an answer, a row of Citations, or pick one above to open its source here."


class ChatTab(UserScoped):
    def __init__(self, quire: Quire) -> None:
        super().__init__(quire)
        self._stopping: set[str | None] = set()  # askers who pressed Stop while their question waited in line

    # -- plain handlers ---------------------------------------------------------
    def _turns(self, session: str | SessionRecord | None) -> list[TurnRecord]:
        if not session:
            return []
        try:
            return self.q.turns(session)
        except QuireError:  # deleted or renamed meanwhile
            return []

    def load(self, session: str | None):
        """The session's stored conversation, its strategy setting; citations of its last answer."""
        info = self._session(session)
        turns = self._turns(info)
        strategy = self._session_strategy(info)
        name = info.qualified if info else None
        return (render.history(turns, name), *self._turn_outputs(turns[-1] if turns else None, name),
                viewer.placeholder(EMPTY_VIEWER), strategy)

    def documents_panel(self, session: str | None):
        """The documents panel: each document with its status, and the choice of documents to ask."""
        info = self._session(session)
        try:
            docs = self.q.documents(info) if info else []
        except QuireError:
            docs = []
        choices = [(printable(d.name), d.id) for d in docs]
        return render.documents_panel(docs), gr.update(choices=choices, value=[])

    def _session(self, session: str | None) -> SessionRecord | None:
        """The session picked in the UI, looked up once per handler; None when it is gone."""
        if not session:
            return None
        try:
            return self.q.session(session, create=False)
        except QuireError:  # deleted or renamed meanwhile
            return None

    @staticmethod
    def _session_strategy(info: SessionRecord | None) -> str:
        return info.settings.get("strategy", "auto") if info else "auto"

    def _turn_outputs(self, turn: TurnRecord | None, session: str | None):
        if turn is None:
            return [], [], {}, "", gr.update(choices=[], value=None)
        citations = list(turn.citations) + render.evidence_citations(turn)  # the table lists the first ones
        info = f"**Q:** {render.md_escape(render.shorten(turn.question, 200))}"
        if render.limited_to(turn):
            info += f"  \n_{render.md_escape(render.limited_to(turn))}_"
        choices = [(f"{'evidence · ' if c.origin == 'evidence' else ''}{c.ref} · {printable(c.document_name)} · "
                    f"{printable(c.locator.place())}", i) for i, c in enumerate(citations)]
        where = {"session": session, "turn": turn.id} if session and turn.id else {}
        return render.citation_rows(turn.citations), citations, where, info, gr.update(choices=choices, value=None)

    @user_errors
    def ask(self, session: str, question: str, strategy: str = "auto", only: list[int] | None = None,
            request: gr.Request | None = None):
        """Stream the answer into the chat; the final update adds its citations."""
        if not session:
            raise gr.Error("Pick or create a session first.")
        question = (question or "").strip()
        if not question:
            raise gr.Error("Type a question first.")
        strategy = strategy if strategy in STRATEGIES else "auto"
        info = self.q.session(session, create=False)
        if strategy != self._session_strategy(info) and info.role != "reader":  # a reader's choice is not kept
            info = self.q.set_session_settings(info, strategy=strategy)
        messages = render.history(self._turns(info), info.qualified)
        messages += [render.user_message(question), {"role": "assistant", "content": "_Reading the documents…_"}]
        skip = (gr.skip(),) * 5
        yield messages, "", *skip
        parts: list[str] = []
        last, started = 0.0, time.monotonic()
        # Stop (or a closed page) closes this handler; closing() then closes the answer stream at once.
        asker = request.session_hash if request is not None else None
        self._stopping.discard(asker)
        chosen = [int(i) for i in only or []] or None
        with closing(self.q.ask(info, question, strategy=strategy, asker=asker, documents=chosen)) as events:
            for event in events:
                if isinstance(event, Waiting) and asker in self._stopping:  # stopped while waiting in line: leave it
                    self._stopping.discard(asker)
                    messages[-1] = {"role": "assistant", "content": "**■ Stopped** before the model read anything."}
                    yield messages, gr.skip(), *skip
                    return
                if isinstance(event, Status) and not parts:
                    messages[-1] = {"role": "assistant", "content": progress_line(event, time.monotonic() - started)}
                    yield messages, gr.skip(), *skip
                elif isinstance(event, Delta):
                    parts.append(event.text)
                    if time.monotonic() - last >= STREAM_EVERY_S:
                        last = time.monotonic()
                        messages[-1] = {"role": "assistant", "content": render.answer_body("".join(parts)) + CURSOR}
                        yield messages, gr.skip(), *skip
                elif isinstance(event, Answer):
                    messages[-1] = {"role": "assistant", "content": render.answer_markdown(event.turn, info.qualified)}
                    yield messages, gr.skip(), *self._turn_outputs(event.turn, info.qualified)

    def stop(self, request: gr.Request | None = None) -> None:
        """Stop: this browser's own answer only (the model aborts even a long prefill within a second). The
        answer so far is kept, stored and marked as stopped; a question still waiting in line is dropped."""
        asker = request.session_hash if request is not None else None
        self._stopping.add(asker)
        self.q.stop(asker=asker)

    @user_errors
    def add_files(self, session: str, files: list[str] | None, progress=gr.Progress()):
        """Files dropped onto the chat go into the session the way the Documents tab adds them."""
        if not session:
            raise gr.Error("Pick or create a session first.")
        paths = [str(f) for f in files or []]
        if not paths:
            return gr.skip(), None
        progress(0, desc="Starting…")
        results = self.q.ingest(session, paths, names={p: Path(p).name for p in paths},
                                progress=progress_reporter(progress, len(paths)))
        return render.ingest_report(results), None

    def pick_turn(self, session: str | None, evt: gr.SelectData):
        """Clicking a message shows the citations of that question's answer."""
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        info = self._session(session)
        turns = self._turns(info)
        if not isinstance(index, int) or not 0 <= index // 2 < len(turns):
            return (gr.skip(),) * 5
        return self._turn_outputs(turns[index // 2], info.qualified if info else None)

    @staticmethod
    def pick_citation_row(evt: gr.SelectData):
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return index if isinstance(index, int) else gr.skip()

    @staticmethod
    def open_citation(where: dict, index: int | None) -> str:
        """The viewer at citation ``index`` of the answer shown."""
        if index is None or not where or not str(index).isdigit():
            return viewer.placeholder(EMPTY_VIEWER)
        return viewer.frame(viewer.viewer_url(where["session"], where["turn"], int(index)), FRAME)

    # -- layout -------------------------------------------------------------------
    def build(self, bar: SessionBar) -> None:
        session = bar.current
        citations = gr.State([])
        where = gr.State({})  # the answer shown: its session and turn id (the viewer's URL)
        with gr.Row(equal_height=False, elem_id="workspace"):
            with gr.Column(scale=2, min_width=210, elem_id="documents-panel"):
                with gr.Accordion("Documents", open=True, elem_id="documents-accordion"):
                    documents = gr.Markdown(elem_id="chat-documents")
                    only = gr.CheckboxGroup(label="Ask only these documents", choices=[], elem_id="ask-only",
                                            info="None ticked: all of them.")
                    drop = gr.File(label="Drop files here to add them", file_count="multiple", type="filepath",
                                   height=160, elem_id="chat-upload", elem_classes=["quire-drop"])
                    gr.Markdown(DROP_HINT, elem_classes=["quire-hint"])
                    dropped = gr.Markdown(elem_id="chat-upload-report")
            with gr.Column(scale=5, min_width=420):
                chatbot = gr.Chatbot(
                    label="Conversation", height=520, latex_delimiters=[], sanitize_html=True, render_markdown=True,
                    feedback_options=None, buttons=["copy_all"], elem_id="chat", autoscroll=True,
                    placeholder="Ask a question about this session's documents. "
                                "Answers cite their sources; click a marker to check it.",
                )
                with gr.Row(equal_height=True):
                    question = gr.Textbox(label="Question", placeholder="e.g. Which contract ends first, and why?",
                                          lines=1, max_lines=6, scale=5, autofocus=True, elem_id="question")
                    ask = gr.Button("Ask", variant="primary", scale=0, min_width=70, elem_id="quire-ask")
                    stop = gr.Button("Stop", scale=0, min_width=64, elem_id="quire-stop")
                with gr.Row(equal_height=True):
                    strategy = gr.Dropdown(choices=list(STRATEGIES), value="auto", label="Strategy", scale=1,
                                           min_width=120, info="auto picks full, focus or sweep")
                    with gr.Column(scale=3):
                        gr.Markdown("Enter asks · Shift+Enter: new line · Esc stops", elem_classes=["quire-hint"])
                        turn_info = gr.Markdown(elem_id="turn-info")
                table = gr.Dataframe(headers=render.CITATION_HEADERS, label="Citations", interactive=False,
                                     wrap=True, column_count=5, max_height=260, elem_id="citations",
                                     column_widths=["9%", "19%", "13%", "24%", "35%"])
            with gr.Column(scale=4, min_width=340, elem_id="viewer-column"):
                pick = gr.Dropdown(label="Open citation", choices=[], elem_id="open-citation",
                                   info="Or click a marker in the answer, or a row in the Citations table.")
                frame = gr.HTML(viewer.placeholder(EMPTY_VIEWER), elem_id="chat-viewer", label="Document viewer")

        turn_view = [table, citations, where, turn_info, pick]
        outputs = [chatbot, question, *turn_view]
        inputs = [session, question, strategy, only]
        # Askers wait in Quire's own line, which tells each its place and expected wait in the chat;
        # past ASKERS_AT_ONCE, Gradio's queue holds the rest (and shows its own place and estimate).
        # Enter in the question box clicks Ask (ui/app.js). "multiple": in Chromium the browser heard that an
        # answer's event had ended only at the next click or key press, and with Gradio's default ("once") that
        # next question was then dropped as a repeat of the one still "running" (seen in tests/test_browser.py).
        asked = [ask.click(self.ask, inputs, outputs, api_name="ask", concurrency_limit=ASKERS_AT_ONCE,
                           concurrency_id="model", trigger_mode="multiple")]
        # No `cancels=`: cancelling the event would drop the answer half-drawn (its cursor left in the chat) and
        # unstored; Quire's Stop ends the generation, and the handler draws and stores what there is.
        stop.click(self.stop, None, None, api_visibility="private", queue=False)
        for event in asked:
            event.then(bar.select, session, bar.summary, api_visibility="private")
        bar.documents_changed(drop.upload(self.add_files, [session, drop], [dropped, drop], api_name="add_files",
                                          concurrency_limit=1, show_progress_on=[dropped]))
        bar.on_switch(self.load, [chatbot, *turn_view, frame, strategy], api_name="history")
        bar.on_switch(self.documents_panel, [documents, only])
        bar.on_documents(self.documents_panel, [documents, only])
        chatbot.select(self.pick_turn, session, turn_view, api_visibility="private")
        table.select(self.pick_citation_row, None, pick, api_visibility="private")
        pick.change(self.open_citation, [where, pick], frame, api_visibility="private")


def progress_line(event: Status, elapsed_s: float) -> str:
    """What the model is doing while no answer text has come: its place in line, or what it reads, with a bar
    and an estimate once part of the work is done (Markdown, escaped)."""
    text = render.md_escape(event.message)
    if event.eta_s and not isinstance(event, Waiting):  # one pass: a bar against the expected time (never full)
        bar = _bar(min(int(10 * elapsed_s / event.eta_s), 9))
        left = max(event.eta_s - elapsed_s, 0)
        return f"_{text}…_  \n`{bar}` ({elapsed_s:.0f} s" + (f", up to about {left:.0f} s left)" if left else ", soon)")
    if isinstance(event, Waiting) or not event.total or event.total <= 1:
        return f"_{text}…_ ({elapsed_s:.0f} s)"
    done, total = min(event.done, event.total), event.total
    bar = _bar(round(10 * done / total))
    left = f", about {elapsed_s / done * (total - done):.0f} s left" if done else ""
    return f"_{text}…_  \n`{bar}` {done}/{total} ({elapsed_s:.0f} s{left})"


def _bar(filled: int) -> str:
    """Ten cells, ``filled`` of them full."""
    return "▰" * filled + "▱" * (10 - filled)
