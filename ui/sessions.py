"""The session bar: pick, create, rename and delete sessions; the last one used is remembered.

The session shown is held in a hidden textbox (:attr:`SessionBar.current`; hidden, not a
``gr.State``, so the handlers' API endpoints still take the session's name), which the tabs read and
reload from. They register with :meth:`SessionBar.on_switch`, and :meth:`SessionBar.wire` runs them
once after each event that switches the session (load, pick, create, rename, delete). No tab listens
to a ``change`` event: the dropdown's and the hidden box's fire for updates the server sends too, and
the tabs answering them raced in the browser into an endless loop of reloads (seen after Create, on a
loaded machine). A user's pick is the dropdown's ``input`` event."""

from __future__ import annotations

from typing import Any, Callable

import gradio as gr

from core.errors import QuireError
from quire.api import Quire
from ui.errors import user_errors, warn
from ui.render import md_escape, plural
from ui.users import UserScoped

STATE_KEY = "ui"
DEFAULT_SESSION = "My documents"


class SessionBar(UserScoped):
    def __init__(self, quire: Quire) -> None:
        super().__init__(quire)
        self._switches: list = []  # the events after which another session is shown
        self._listeners: list[tuple[Callable, Any, dict]] = []
        self._document_listeners: list[tuple[Callable, Any]] = []
        self._document_events: list = []

    def on_switch(self, fn: Callable, outputs, *, inputs=None, api_name: str | None = None) -> None:
        """Run ``fn(session name)`` (or ``fn(*inputs)``) once whenever another session is shown."""
        self._listeners.append((fn, outputs, {"inputs": inputs, "api_name": api_name}))

    def on_documents(self, fn: Callable, outputs) -> None:
        """Run ``fn(session name)`` after the session's documents change (files added or removed in any tab)."""
        self._document_listeners.append((fn, outputs))

    def documents_changed(self, *events) -> None:
        """Events that add or remove documents: the ``on_documents`` listeners (and the summary) run after each,
        attached by :meth:`wire` once every tab has registered."""
        self._document_events.extend(events)

    def wire(self, *events) -> None:
        """Attach every listener after every switching event (``events``: more of them, e.g. the page load)."""
        for n, event in enumerate([*events, *self._switches]):
            for fn, outputs, kw in self._listeners:
                inputs = self.current if kw["inputs"] is None else kw["inputs"]
                named = {"api_name": kw["api_name"]} if kw["api_name"] and n == 0 else {"api_visibility": "private"}
                event.success(fn, inputs, outputs, **named)
        for event in self._document_events:
            event.then(self.select, self.current, self.summary, api_visibility="private")
            for fn, outputs in self._document_listeners:
                event.then(fn, self.current, outputs, api_visibility="private")

    # -- plain handlers (also API endpoints) ------------------------------------
    def names(self) -> list[str]:
        return [s.qualified for s in self.q.sessions()]  # another user's as OWNER/NAME

    def remembered(self) -> str | None:
        name = self.q.state(STATE_KEY).get("session")
        return name if name in self.names() else None

    def remember(self, name: str | None) -> None:
        if name:
            state = self.q.state(STATE_KEY)
            if state.get("session") != name:
                self.q.set_state(STATE_KEY, {**state, "session": name})

    @user_errors
    def initial(self):
        """The session to show when a page opens: the last used one, else the newest, else a new one."""
        names = self.names()
        if not names:
            self.q.session(DEFAULT_SESSION)
            names = [DEFAULT_SESSION]
        current = self.remembered() or names[0]
        return gr.update(choices=names, value=current), current

    @user_errors
    def create(self, name: str):
        info = self.q.session(name)
        self.remember(info.qualified)
        return gr.update(choices=self.names(), value=info.qualified), "", info.qualified

    @user_errors
    def rename(self, current: str, new_name: str):
        if not current:
            raise gr.Error("Pick a session to rename first.")
        info = self.q.rename_session(current, new_name)
        self.remember(info.qualified)
        return gr.update(choices=self.names(), value=info.qualified), "", info.qualified

    @user_errors
    def delete(self, current: str):
        if not current:
            raise gr.Error("Pick a session to delete first.")
        self.q.delete_session(current)
        names = self.names()
        value = names[0] if names else None
        self.remember(value)
        return gr.update(choices=names, value=value), *_confirm_hidden(), value

    def pick(self, name: str | None, current: str | None):
        """The user picked (or typed) a session in the dropdown: show it, or make it when it is new.
        A name that cannot be a session says why, and the dropdown goes back to the one shown."""
        name = (name or "").strip()
        if not name or name == current:
            return gr.update(value=current), gr.skip()
        if name not in self.names():
            try:
                self.q.session(name)
            except QuireError as exc:
                warn(exc)
                return gr.update(value=current), gr.skip()
        self.remember(name)
        return gr.update(choices=self.names(), value=name), name

    @user_errors
    def select(self, name: str | None) -> str:
        return _summary(self.q, name)

    # -- layout ---------------------------------------------------------------------
    def build(self) -> gr.Textbox:
        """The bar; returns the hidden box holding the name of the session shown (the tabs' input)."""
        self.current = gr.Textbox(visible=False, label="Session shown")
        with gr.Row(equal_height=True, elem_id="session-bar"):
            self.dropdown = gr.Dropdown(
                label="Session", choices=[], value=None, scale=3, min_width=220, allow_custom_value=True,
                info="Each session has its own documents and questions.",
            )
            self.new_name = gr.Textbox(label="New session", placeholder="Name, then Enter", scale=2, min_width=180)
            create = gr.Button("Create", variant="primary", scale=0, min_width=90)
            self.rename_to = gr.Textbox(label="Rename to", placeholder="New name", scale=2, min_width=160)
            rename = gr.Button("Rename", scale=0, min_width=90)
            delete = gr.Button("Delete…", variant="stop", scale=0, min_width=90)
        with gr.Row(visible=False, elem_id="delete-confirm") as confirm_row:
            confirm_text = gr.Markdown()
            confirm = gr.Button("Delete for good", variant="stop", scale=0, min_width=150)
            cancel = gr.Button("Keep it", scale=0, min_width=110)
        self.summary = gr.Markdown(elem_id="session-summary")

        creating = ([self.new_name], [self.dropdown, self.new_name, self.current])
        renaming = ([self.current, self.rename_to], [self.dropdown, self.rename_to, self.current])
        delete.click(_ask_confirm, self.current, [confirm_row, confirm_text], api_visibility="private")
        cancel.click(lambda: _confirm_hidden()[0], None, confirm_row, api_visibility="private")
        self._switches = [
            create.click(self.create, *creating, api_name="create_session"),
            self.new_name.submit(self.create, *creating, api_visibility="private"),
            rename.click(self.rename, *renaming, api_name="rename_session"),
            self.rename_to.submit(self.rename, *renaming, api_visibility="private"),
            confirm.click(self.delete, self.current, [self.dropdown, confirm_row, confirm_text, self.current],
                          api_name="delete_session"),
            self.dropdown.input(self.pick, [self.dropdown, self.current], [self.dropdown, self.current],
                                api_visibility="private"),
        ]
        self.on_switch(self.select, self.summary, api_name="select_session")
        return self.current


def _summary(q: Quire, name: str | None) -> str:
    if not name:
        return "No session selected: create one above."
    for s in q.sessions():
        if s.qualified == name:
            return " · ".join([plural(s.documents, "document"), f"~{s.tokens:,} tokens", plural(s.turns, "question")])
    return ""


def _ask_confirm(name: str | None):
    if not name:
        raise gr.Error("Pick a session to delete first.")
    text = f"Delete **{md_escape(name)}** with its documents and questions? This cannot be undone."
    return gr.update(visible=True), text


def _confirm_hidden():
    return gr.update(visible=False), ""
