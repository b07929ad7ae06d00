"""The web UI: one :class:`quire.api.Quire` behind a Gradio Blocks app.

``build_app`` lays the tabs out and wires them; ``server.app`` serves it with the API beside it. Nothing
runs at import: the database opens when the first page loads, the model on the
first question.
"""

from __future__ import annotations

import ipaddress

import gradio as gr

from core.settings import Settings
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


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def allowed_hosts(settings: Settings) -> set[str]:
    """The Host names the server answers to: loopback, --host (unless it is every interface) and --allowed-hosts."""
    names = set(LOOPBACK_NAMES)
    host = settings.host.strip().strip("[]").lower()
    if host and host not in ("0.0.0.0", "::"):
        names.add(host)
    names.update(n.strip().strip("[]").lower() for n in settings.allowed_hosts.split(",") if n.strip())
    return names


def host_name(header: str) -> str:
    """The name in a Host header, without the port: ``[::1]:7860`` -> ``::1``, ``Quire.lan.`` -> ``quire.lan``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    if header.count(":") > 1:  # a bare IPv6 address
        return header
    return header.split(":", 1)[0].rstrip(".")


class HostAllowList:
    """ASGI middleware: a request whose Host is not one of the names the server serves gets 400.

    A page on evil.example whose name is made to resolve to 127.0.0.1 (DNS rebinding) would otherwise
    reach the UI's API from the user's own browser with the browser's blessing: same origin, by name."""

    def __init__(self, app, names: set[str]) -> None:
        self.app, self.names = app, {n.lower() for n in names}

    def allows(self, header: str) -> bool:
        if "*" in self.names:
            return True
        name = host_name(header)
        if name in self.names:
            return True
        try:
            return ipaddress.ip_address(name).is_loopback  # 127.0.0.2 and the like
        except ValueError:
            return False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
            if not self.allows(header):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = b"Invalid Host header: this server answers only to the names it serves (--allowed-hosts).\n"
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
