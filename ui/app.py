"""The web UI: one :class:`quire.api.Quire` behind a Gradio Blocks app.

``build_app`` lays the tabs out and wires them; ``server.app`` serves it with the API beside it. Nothing
runs at import: the database opens when the first page loads, the model on the
first question.
"""

from __future__ import annotations

from pathlib import Path

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
#quire-top { align-items: center; gap: 12px; }
#quire-header h1 { font-size: 1.6em; }
#quire-user { text-align: right; }
.quire-viewer { width: 100%; height: 640px; border: 1px solid var(--border-color-primary); border-radius: 8px;
                background: var(--background-fill-secondary); display: block; }
.quire-viewer-empty { height: 640px; display: flex; align-items: center; justify-content: center; padding: 24px;
                      text-align: center; color: var(--body-text-color-subdued);
                      border: 1px dashed var(--border-color-primary); border-radius: 8px; }
#chat a[href^="/viewer/"] { display: inline-block; font-size: .72em; line-height: 1.3; padding: 0 .4em;
    margin: 0 .1em; border-radius: .6em; vertical-align: super; text-decoration: none;
    background: var(--color-accent-soft); color: var(--body-text-color); border: 1px solid var(--color-accent); }
#chat a[href^="/viewer/"]:hover, #chat a[href^="/viewer/"]:focus { background: var(--color-accent); color: white; }
#chat details.quire-meta { font-size: .85em; color: var(--body-text-color-subdued); margin-top: .4em; }
#chat details.quire-meta summary { cursor: pointer; }
#chat-documents { font-size: .92em; overflow-wrap: anywhere; }
#ask-only label { overflow-wrap: anywhere; max-width: 100%; }  /* long file names wrap inside the panel */
#citations td, #citations th { word-break: normal !important; overflow-wrap: break-word; }  /* "unverified" whole */
#chat-documents small { color: var(--body-text-color-subdued); }
@media (max-width: 900px) {
  .quire-viewer, .quire-viewer-empty { height: 520px; }
}
"""
JS = Path(__file__).with_name("app.js")  # the page's few behaviours (Gradio's js=), read when the app is built


def page_js() -> str:
    return JS.read_text(encoding="utf-8")


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
        with gr.Row(equal_height=True, elem_id="quire-top"):
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
