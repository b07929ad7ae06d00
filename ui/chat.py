"""The Chat tab: ask, watch the answer stream, then check its citations in the viewer."""

from __future__ import annotations

import time
from contextlib import closing

import gradio as gr

from core.errors import QuireError, printable
from core.records import CitationRecord, SessionRecord, TurnRecord
from quire.api import STRATEGIES, Answer, Delta, Quire, Status, Waiting
from ui import render
from ui.errors import user_errors
from ui.sessions import SessionBar
from ui.viewer import Viewer
from ui.users import UserScoped

STREAM_EVERY_S = 0.05  # at most ~20 screen updates a second while an answer streams
ASKERS_AT_ONCE = 16  # questions handled at once: one holds the model, the others wait in line and say where they stand
CURSOR = " ▍"


class ChatTab(UserScoped):
    def __init__(self, quire: Quire) -> None:
        super().__init__(quire)
        self.viewer = Viewer(quire)
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
        return (render.history(turns), *self._turn_outputs(turns[-1] if turns else None), *_viewer_cleared(), strategy)

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

    def _turn_outputs(self, turn: TurnRecord | None):
        if turn is None:
            return [], [], "", gr.update(choices=[], value=None)
        citations = list(turn.citations) + render.evidence_citations(turn)  # the table lists the first ones
        info = f"**Q:** {render.md_escape(render.shorten(turn.question, 200))}  \n{render.md_escape(render.meta_line(turn))}"
        for note in turn.meta.get("notes") or []:
            info += f"  \n_{render.md_escape(str(note))}_"
        choices = [(f"{'evidence · ' if c.origin == 'evidence' else ''}{c.ref} · {printable(c.document_name)} · "
                    f"{printable(c.locator.place())}", i) for i, c in enumerate(citations)]
        return render.citation_rows(turn.citations), citations, info, gr.update(choices=choices, value=None)

    @user_errors
    def ask(self, session: str, question: str, strategy: str = "auto", request: gr.Request | None = None):
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
        messages = render.history(self._turns(info))
        messages += [render.user_message(question), {"role": "assistant", "content": "_Reading the documents…_"}]
        skip = (gr.skip(),) * 4
        yield messages, "", *skip
        parts: list[str] = []
        last = 0.0
        # Stop (or a closed page) closes this handler; closing() then closes the answer stream at once.
        asker = request.session_hash if request is not None else None
        self._stopping.discard(asker)
        with closing(self.q.ask(info, question, strategy=strategy, asker=asker)) as events:
            for event in events:
                if isinstance(event, Waiting) and asker in self._stopping:  # stopped while waiting in line: leave it
                    self._stopping.discard(asker)
                    messages[-1] = {"role": "assistant", "content": "**■ Stopped** before the model read anything."}
                    yield messages, gr.skip(), *skip
                    return
                if isinstance(event, Status) and not parts:
                    messages[-1] = {"role": "assistant", "content": f"_{render.md_escape(event.message)}…_"}
                    yield messages, gr.skip(), *skip
                elif isinstance(event, Delta):
                    parts.append(event.text)
                    if time.monotonic() - last >= STREAM_EVERY_S:
                        last = time.monotonic()
                        messages[-1] = {"role": "assistant", "content": render.md_escape("".join(parts)) + CURSOR}
                        yield messages, gr.skip(), *skip
                elif isinstance(event, Answer):
                    messages[-1] = {"role": "assistant", "content": render.answer_markdown(event.turn)}
                    yield messages, gr.skip(), *self._turn_outputs(event.turn)

    def stop(self, request: gr.Request | None = None) -> None:
        """Stop: this browser's own answer only (the model aborts even a long prefill within a second). The
        answer so far is kept, stored and marked as stopped; a question still waiting in line is dropped."""
        asker = request.session_hash if request is not None else None
        self._stopping.add(asker)
        self.q.stop(asker=asker)

    def pick_turn(self, session: str | None, evt: gr.SelectData):
        """Clicking a message shows the citations of that question's answer."""
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        turns = self._turns(session)
        if not isinstance(index, int) or not 0 <= index // 2 < len(turns):
            return (gr.skip(),) * 4
        return self._turn_outputs(turns[index // 2])

    @staticmethod
    def pick_citation_row(evt: gr.SelectData):
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return index if isinstance(index, int) else gr.skip()

    @user_errors
    def open_citation(self, citations: list[CitationRecord], index: int | None):
        if index is None or not citations or not 0 <= int(index) < len(citations):
            return _viewer_cleared()
        view = self.viewer.show(citations[int(index)])
        return (
            view.title,
            gr.update(value=view.image, visible=view.image is not None),
            gr.update(value=view.text or "", language=view.language, visible=view.text is not None,
                      label="Cited passage" if view.image is None else "Text of the cited region"),
        )

    # -- layout -------------------------------------------------------------------
    def build(self, bar: SessionBar) -> None:
        session = bar.current
        citations = gr.State([])
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=420):
                chatbot = gr.Chatbot(
                    label="Conversation", height=480, latex_delimiters=[], sanitize_html=True,
                    feedback_options=None, buttons=["copy_all"], elem_id="chat",
                    placeholder="Ask a question about this session's documents. "
                                "Answers cite their sources; click one to check it.",
                )
                with gr.Row(equal_height=True):
                    question = gr.Textbox(label="Question", placeholder="e.g. Which contract ends first, and why?",
                                          lines=1, max_lines=6, scale=5, autofocus=True)
                    strategy = gr.Dropdown(
                        choices=list(STRATEGIES), value="auto", label="Strategy", scale=1, min_width=110,
                        info="auto picks full, focus or sweep",
                    )
                    ask = gr.Button("Ask", variant="primary", scale=0, min_width=90)
                    stop = gr.Button("Stop", scale=0, min_width=80)
                turn_info = gr.Markdown(elem_id="turn-info")
                table = gr.Dataframe(headers=render.CITATION_HEADERS, label="Citations", interactive=False,
                                     wrap=True, column_count=5, max_height=300, elem_id="citations",
                                     column_widths=["8%", "20%", "16%", "16%", "40%"])
            with gr.Column(scale=2, min_width=320):
                pick = gr.Dropdown(label="Open citation", choices=[], info="Or click a row in the Citations table.")
                title = gr.Markdown("Select a citation to see its source here.", elem_id="viewer-title")
                image = gr.Image(label="Cited page", type="pil", interactive=False, visible=False, elem_id="viewer-page",
                                 buttons=["download", "fullscreen"], height=620)
                code = gr.Code(label="Cited passage", visible=False, interactive=False, lines=12, max_lines=40,
                               wrap_lines=True)

        turn_view = [table, citations, turn_info, pick]
        viewer = [title, image, code]
        outputs = [chatbot, question, *turn_view]
        asked = [
            # Askers wait in Quire's own line, which tells each its place and expected wait in the chat;
            # past ASKERS_AT_ONCE, Gradio's queue holds the rest (and shows its own place and estimate).
            ask.click(self.ask, [session, question, strategy], outputs, api_name="ask",
                      concurrency_limit=ASKERS_AT_ONCE, concurrency_id="model"),
            question.submit(self.ask, [session, question, strategy], outputs, api_visibility="private",
                            concurrency_id="model"),
        ]
        # No `cancels=`: cancelling the event would drop the answer half-drawn (its cursor left in the chat) and
        # unstored; Quire's Stop ends the generation, and the handler draws and stores what there is.
        stop.click(self.stop, None, None, api_visibility="private", queue=False)
        for event in asked:
            event.then(bar.select, session, bar.summary, api_visibility="private")
        bar.on_switch(self.load, [chatbot, *turn_view, *viewer, strategy], api_name="history")
        chatbot.select(self.pick_turn, session, turn_view, api_visibility="private")
        table.select(self.pick_citation_row, None, pick, api_visibility="private")
        pick.change(self.open_citation, [citations, pick], viewer, api_visibility="private")


def _viewer_cleared():
    return "Select a citation to see its source here.", gr.update(value=None, visible=False), gr.update(value="", visible=False)
