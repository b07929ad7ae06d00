"""The server: one ASGI app on one port for the web UI (Gradio, mounted at /), the REST API (/api/v1) and the
OpenAI-compatible endpoint (/v1), behind the Host check and the :class:`server.auth.Gate`.

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
from server import openai_api, rest
from server.auth import Gate, check_listening
from ui.app import CSS, HostAllowList, allowed_hosts, build_app, theme
from ui.export import export_dir

FILE_ROUTE = "/gradio_api/file="


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
                body = b'{"error": {"message": "No such file.", "hint": ""}}'
                await send({"type": "http.response.start", "status": 404,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
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
    blocks = build_app(quire).queue(default_concurrency_limit=4)
    app = gr.mount_gradio_app(
        app, blocks, path="/", auth_dependency=_user_name, allowed_paths=[str(exports)], theme=theme(), css=CSS,
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
