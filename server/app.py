"""The server: one ASGI app on one port for the web UI (Gradio, mounted at /), the REST API (/api/v1) and the
OpenAI-compatible endpoint (/v1) and the document viewer (/viewer), behind the Host check and the :class:`server.auth.Gate`.

Nothing runs at import; :func:`serve` builds it and runs it under uvicorn until interrupted.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import gradio.utils
import uvicorn
from fastapi import FastAPI
from starlette.requests import Request

from core.settings import Settings
from quire.api import Quire
from server import openai_api, rest, viewer
from server.auth import Gate, check_listening, loopback, send_body, send_json
from ui.app import CSS, build_app, page_js, theme
from ui.export import export_dir

FILE_ROUTE = "/gradio_api/file="


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
        return name in self.names or loopback(name)  # 127.0.0.2 and the like

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
            if not self.allows(header):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = b"Invalid Host header: this server answers only to the names it serves (--allowed-hosts).\n"
                return await send_body(send, 400, body, [(b"content-type", b"text/plain; charset=utf-8")])
        await self.app(scope, receive, send)



class FileGuard:
    """ASGI middleware: Gradio's file route hands out only what was handed to the asking user.

    Gradio copies every file a handler returns or a browser uploads into its cache and serves it by path to
    anyone logged in. This notes the cache paths in each user's own responses (the event stream, uploads) and
    answers 404 for any other; a report under ``exports/<user id>/`` goes to that user only. What one process
    handed out it knows itself: behind a balancer, keep a browser on one process (sticky sessions)."""

    MAX_PATHS = 20000  # per process; the oldest are forgotten first

    def __init__(self, app, exports: Path, cache: Path) -> None:
        self.app, self.exports, self.cache = app, exports.resolve(), cache.resolve()
        self._mentioned = re.compile(r'"(' + re.escape(str(cache)) + r'(?:[^"\\]|\\.)*)"')
        self._handed: OrderedDict[tuple[int, str], None] = OrderedDict()

    def _note(self, user_id: int, body: bytes) -> None:
        for found in self._mentioned.finditer(body.decode("utf-8", "replace")):
            try:
                path = str(Path(json.loads(f'"{found.group(1)}"')).resolve())
            except ValueError:
                continue
            self._handed[(user_id, path)] = None
            self._handed.move_to_end((user_id, path))
            while len(self._handed) > self.MAX_PATHS:
                self._handed.popitem(last=False)

    def _allowed(self, user, wanted: Path) -> bool:
        if wanted.is_relative_to(self.exports):
            return user is not None and wanted.is_relative_to(self.exports / str(user.id))
        if wanted.is_relative_to(self.cache):
            return user is not None and (user.id, str(wanted)) in self._handed
        return True  # Gradio's own checks decide (its static files, allowed paths)

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/gradio_api/"):
            return await self.app(scope, receive, send)
        user = scope.get("state", {}).get("quire_user")
        if path.startswith(FILE_ROUTE):
            if not self._allowed(user, Path(path[len(FILE_ROUTE):]).resolve()):
                return await send_json(send, 404, {"error": {"message": "No such file.", "hint": ""}})
            return await self.app(scope, receive, send)
        if user is None:
            return await self.app(scope, receive, send)
        # read the answers as written: without compression (Gradio compresses with brotli where asked to)
        scope = dict(scope, headers=[(k, v) for k, v in scope.get("headers", ()) if k != b"accept-encoding"])

        async def noting(message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                self._note(user.id, message["body"])
            await send(message)

        await self.app(scope, receive, noting)


def _user_name(request: Request) -> str | None:
    """Gradio's view of who is logged in: the Gate's user (every handler then acts as them, see ui/users.py)."""
    user = request.state.quire_user if hasattr(request.state, "quire_user") else None
    return user.name if user is not None else None


def build(quire: Quire) -> FastAPI:
    settings = quire.settings
    exports = export_dir(quire)
    exports.mkdir(parents=True, exist_ok=True)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/api/v1", rest.build(quire))
    app.mount("/v1", openai_api.build(quire))
    app.mount("/viewer", viewer.build(quire))
    blocks = build_app(quire).queue(default_concurrency_limit=4)
    app = gr.mount_gradio_app(
        app, blocks, path="/", auth_dependency=_user_name, allowed_paths=[str(exports)], theme=theme(), css=CSS, js=page_js(),
        footer_links=["api", "settings"], show_error=True, max_file_size=settings.max_file_mb << 20,
    )
    app.add_middleware(FileGuard, exports=exports, cache=Path(gradio.utils.get_upload_folder()))
    app.add_middleware(Gate, quire=quire, settings=settings)  # added after FileGuard: runs before it
    app.add_middleware(HostAllowList, names=allowed_hosts(settings))  # outermost: a bad Host gets nothing
    return app


def serve(settings: Settings) -> None:
    """Serve on ``settings.host``/``settings.port`` until interrupted."""
    with Quire(settings) as quire:
        check_listening(settings, quire)
        app = build(quire)
        quire.warm_ingest()
        level = settings.log_level if settings.log_level in ("debug", "info") else "warning"
        print(f"Quire on http://{settings.host}:{settings.port}/ (API: /api/v1, OpenAI: /v1)", flush=True)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=level, proxy_headers=False)
