"""The web UI: one :class:`quire.api.Quire` behind a Gradio Blocks app.

``build_app`` lays the tabs out and wires them; ``server.app`` serves it with the API beside it. Nothing
runs at import: the database opens when the first page loads, the model on the
first question.
"""

from __future__ import annotations

import gradio as gr

from quire.api import LOCAL_USER, Quire
from ui import settings_panel
from ui.render import md_escape
from ui.chat import ChatTab
from ui.documents import DocumentsTab
from ui.evals import EvalsTab
from ui.export import ExportTab
from ui.matrix import MatrixTab
from ui.sessions import SessionBar

TITLE = "Quire"
TABS = ("chat", "documents", "matrix", "export", "evals", "settings")
TAGLINE = "Ask questions across whole documents, PDFs, screenshots and codebases, on your own hardware."

CSS = """
.gradio-container { max-width: 1480px !important; margin: auto; }
#quire-header h1 { margin-bottom: 0; }
#quire-header p { margin-top: 2px; opacity: .75; }
#session-summary, .quire-hint { opacity: .8; font-size: .9em; }
.quire-gauge { padding: 8px 2px; }
.quire-gauge-label { font-weight: 600; margin-bottom: 6px; }
.quire-gauge-track { height: 14px; border-radius: 7px; background: var(--neutral-200); overflow: hidden; }
.quire-gauge-fill { height: 100%; border-radius: 7px; background: #16a34a; transition: width .3s; }
.quire-gauge-narrowed .quire-gauge-fill { background: #d97706; }
.quire-gauge-empty .quire-gauge-fill { background: var(--neutral-400); }
.quire-gauge-note { margin-top: 6px; font-size: .9em; opacity: .85; }
#turn-info { font-size: .9em; opacity: .9; }
"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="amber", neutral_hue="slate")


def build_app(quire: Quire) -> gr.Blocks:
    """The whole UI around one Quire instance (every handler goes through its Python API)."""
    sessions = SessionBar(quire)
    documents = DocumentsTab(quire)
    chat = ChatTab(quire)
    matrix = MatrixTab(quire)
    export = ExportTab(quire)
    evals = EvalsTab(quire)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(f"# {TITLE}\n{TAGLINE}", elem_id="quire-header")
        signed_in = gr.Markdown(elem_id="quire-user")
        session = sessions.build()
        with gr.Tabs() as tabs:
            with gr.Tab("Chat", id="chat"):
                chat.build(sessions)
            with gr.Tab("Documents", id="documents"):
                documents.build(sessions)
            with gr.Tab("Matrix", id="matrix"):
                matrix.build(sessions)
            with gr.Tab("Export", id="export"):
                export.build(sessions)
            with gr.Tab("Evaluations", id="evals"):
                runs = evals.build()
            with gr.Tab("Settings", id="settings"):
                settings_panel.build(quire.settings, quire.runtime_name())
        sessions.wire(app.load(sessions.initial, None, [sessions.dropdown, session], api_name="sessions"))
        app.load(_tab_from_url, None, tabs, api_visibility="private")
        app.load(_signed_in, None, signed_in, api_visibility="private")
        app.load(evals.rows, None, runs, api_visibility="private")
    return app


def _tab_from_url(request: gr.Request):
    """``?tab=documents`` opens that tab, so a link can point at a part of the app."""
    tab = (request.query_params.get("tab") or "") if request else ""
    return gr.Tabs(selected=tab) if tab in TABS else gr.skip()


def _signed_in(request: gr.Request):
    """Who is logged in, with the way out; nothing in single-user mode (the local user, no login)."""
    name = getattr(request, "username", None) if request else None
    if name == LOCAL_USER:  # single-user mode; the first admin can be made here (the server checks it may)
        return "Single-user mode · [Create accounts](/setup)"
    if not name:
        return gr.skip()
    return f"Signed in as **{md_escape(name)}** · [Log out](/logout)"
