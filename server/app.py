"""The server: one ASGI app on one port for the web UI (Gradio, mounted at /), the REST API (/api/v1) and the
OpenAI-compatible endpoint (/v1), behind the Host check and the :class:`server.auth.Gate`.

Nothing runs at import; :func:`serve` builds it and runs it under uvicorn until interrupted.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
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


class ExportGuard:
    """ASGI middleware: a report the UI wrote under ``exports/<user id>/`` goes to that user only (Gradio's
    file route would hand any allowed path to anyone logged in)."""

    def __init__(self, app, root: Path) -> None:
        self.app, self.root = app, root.resolve()

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(FILE_ROUTE):
            wanted = Path(path[len(FILE_ROUTE):]).resolve()
            user = scope.get("state", {}).get("quire_user")
            if wanted.is_relative_to(self.root) and (user is None or not wanted.is_relative_to(self.root / str(user.id))):
                body = b'{"error": {"message": "No such file.", "hint": ""}}'
                await send({"type": "http.response.start", "status": 404,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


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
    app.add_middleware(ExportGuard, root=exports)
    app.add_middleware(Gate, quire=quire, settings=settings)  # added last but one: runs before ExportGuard
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
