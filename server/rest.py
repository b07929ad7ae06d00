"""Quire's REST API under ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``).

Every route asks :func:`acting` for the Quire of the request's user (``server.auth.Gate`` found them);
the access checks are Quire's. Errors go through ``server.errors``.
"""

from __future__ import annotations

import io
import json
import queue
import shutil
import tempfile
import threading
from contextlib import closing
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from core.errors import NotFound, QuireError, TooLarge
from core.records import DocumentRecord, SessionRecord, TurnRecord
from export import FORMATS, export_session
from quire.api import Answer, Delta, IngestResult, Progress, Quire, Status
from server import errors

MEDIA = {"md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8", "pdf": "application/pdf"}


class SessionIn(BaseModel):
    name: str = Field(description="The session's name: 1-100 letters, digits, spaces or . , ( ) @ + - _")


class AskIn(BaseModel):
    question: str
    strategy: str | None = Field(None, description="auto, full, focus or sweep; empty: the server's default")


class ShareIn(BaseModel):
    role: str = Field("reader", description="reader (ask, read, export) or editor (also upload, remove, rename)")


class TokenIn(BaseModel):
    name: str = Field("token", description="What the token is for")


OWNER_MARK = "~"  # in a URL, OWNER~NAME is the session NAME of user OWNER (a "/" would split the path)


def acting(request: Request) -> Quire:
    """The request's user's view of Quire."""
    return request.app.state.quire.as_user(request.state.quire_user)


def session_ref(name: str) -> str:
    """The name Quire takes (OWNER/NAME) for the one in a URL (OWNER~NAME); ``~`` is in no session's name."""
    return name.replace(OWNER_MARK, "/", 1)


# -- what goes out ----------------------------------------------------------------------
def session_json(s: SessionRecord) -> dict[str, Any]:
    return {"name": s.name, "owner": s.owner, "role": s.role, "documents": s.documents, "tokens": s.tokens,
            "turns": s.turns, "settings": s.settings,
            "path": s.qualified.replace("/", OWNER_MARK)}  # its name in URLs


def warming_json(w) -> dict:
    return {"state": w.state, "done": w.done, "total": w.total, "computed": w.computed, "seconds": w.seconds,
            "message": w.message}


def document_json(d: DocumentRecord) -> dict[str, Any]:
    return {"id": d.id, "name": d.name, "kind": d.kind, "pages": d.pages, "tokens": d.tokens,
            "segments": d.segments, "warnings": d.warnings}


def turn_json(t: TurnRecord) -> dict[str, Any]:
    data = asdict(t)
    data["warning"] = t.warning
    data["citations"] = [asdict(c) | {"status_words": c.status_words, "where": c.locator.label()}
                         for c in t.citations]
    return data


def result_json(r: IngestResult) -> dict[str, Any]:
    return {"name": r.name, "status": r.status, "document_id": r.document_id, "message": r.message, "pages": r.pages, "segments": r.segments,
            "tokens": r.tokens, "warnings": list(r.warnings), "ok": r.ok}


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def build(quire: Quire) -> FastAPI:
    api = FastAPI(title="Quire API", version="1", openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
                  description="Sessions (workspaces), their documents, questions with checked citations, reports. "
                              "Authenticate with `Authorization: Bearer TOKEN` (`python app.py tokens create NAME`) "
                              "or the web UI's session cookie.")
    api.state.quire = quire
    errors.install(api)
    api.description += (" A session shared with you is named OWNER~NAME in URLs (its `path` in the list).")
    limit = quire.settings.max_file_mb << 20

    @api.get("/me", summary="Who the request acts as")
    def me(q: Quire = Depends(acting)) -> dict:
        user = q.whoami()
        return {"name": user.name, "admin": user.is_admin}

    # -- sessions ---------------------------------------------------------------------
    @api.get("/sessions", summary="The sessions you may see")
    def sessions(q: Quire = Depends(acting)) -> list[dict]:
        return [session_json(s) for s in q.sessions()]

    @api.post("/sessions", status_code=201, summary="Create a session (yours)")
    def create(body: SessionIn, q: Quire = Depends(acting)) -> dict:
        return session_json(q.session(body.name))

    @api.get("/sessions/{name}", summary="One session")
    def session(name: str, q: Quire = Depends(acting)) -> dict:
        return session_json(q.session(session_ref(name), create=False))

    @api.patch("/sessions/{name}", summary="Rename a session (owner, editor)")
    def rename(name: str, body: SessionIn, q: Quire = Depends(acting)) -> dict:
        return session_json(q.rename_session(session_ref(name), body.name))

    @api.delete("/sessions/{name}", status_code=204, summary="Delete a session with its documents (owner)")
    def delete(name: str, q: Quire = Depends(acting)) -> Response:
        q.delete_session(session_ref(name))
        return Response(status_code=204)

    @api.get("/sessions/{name}/shares", summary="Who else may use the session (owner)")
    def shares(name: str, q: Quire = Depends(acting)) -> list[dict]:
        return [{"user": s.user_name, "role": s.role} for s in q.shares(session_ref(name))]

    @api.put("/sessions/{name}/shares/{user}", summary="Share the session as reader or editor (owner)")
    def share(name: str, user: str, body: ShareIn, q: Quire = Depends(acting)) -> dict:
        s = q.share(session_ref(name), user, body.role)
        return {"user": s.user_name, "role": s.role}

    @api.delete("/sessions/{name}/shares/{user}", status_code=204, summary="Take a share away (owner)")
    def unshare(name: str, user: str, q: Quire = Depends(acting)) -> Response:
        q.unshare(session_ref(name), user)
        return Response(status_code=204)

    # -- documents -----------------------------------------------------------------------
    @api.get("/sessions/{name}/documents", summary="Documents with their token counts against the window")
    def documents(name: str, q: Quire = Depends(acting)) -> dict:
        info = q.session(session_ref(name), create=False)
        budget = q.budget(info)
        return {"documents": [document_json(d) for d in q.documents(info)], "total_tokens": budget.total,
                "window": budget.window, "answer_reserve": budget.answer_reserve, "fits": budget.fits}

    @api.post("/sessions/{name}/documents", summary="Upload files (multipart field `files`)",
              description="Multipart: `files` (repeatable); `password` for every encrypted PDF, or `passwords` as a "
                          "JSON object of file name to password. With `Accept: text/event-stream` the answer is a "
                          "stream of `progress` events and a last `done` event with the results; otherwise JSON.")
    async def upload(name: str, request: Request) -> Response:
        q = acting(request)
        info = q.session(session_ref(name), need="edit")  # a reader is refused before anything is read
        length = int(request.headers.get("content-length") or 0)
        if length > limit:
            raise TooLarge("upload", f"The upload is {length >> 20} MiB; at most {limit >> 20} MiB is taken.",
                           hint="Send fewer or smaller files at once, or raise --max-file-mb.")
        folder = Path(tempfile.mkdtemp(prefix="quire-upload-"))
        try:
            paths, passwords = await _receive(request, folder, limit)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if "text/event-stream" in request.headers.get("accept", ""):
            return StreamingResponse(_ingest_events(q, info, paths, passwords, folder), media_type="text/event-stream")
        try:
            results = await run_in_threadpool(q.ingest, info, paths, passwords=passwords)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return Response(json.dumps({"results": [result_json(r) for r in results]}), media_type="application/json",
                        status_code=201 if any(r.ok for r in results) else 422)

    @api.delete("/sessions/{name}/documents/{document_id}", status_code=204, summary="Remove a document (editor)")
    def remove(name: str, document_id: int, q: Quire = Depends(acting)) -> Response:
        q.remove_document(session_ref(name), document_id)
        return Response(status_code=204)

    @api.get("/sessions/{name}/documents/{document_id}/pages/{page}", summary="A page as a PNG image",
             response_class=Response)
    def page_image(name: str, document_id: int, page: int, q: Quire = Depends(acting)) -> Response:
        info = q.session(session_ref(name), create=False)
        document = next((d for d in q.documents(info) if d.id == document_id), None)
        if document is None:
            raise NotFound(f"No document {document_id} in this session.")
        image, _ = q.page_image(document, page)
        if image is None:
            raise NotFound(f"No image of page {page}.")
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return Response(buffer.getvalue(), media_type="image/png", headers={"cache-control": "private, no-store"})

    @api.post("/sessions/{name}/warm", status_code=202, summary="Prepare the session's shards in the background",
              description="Computes each shard's KV state ahead of the first sweep or matrix question, one shard at "
                          "a time while no question waits (a question interrupts it). Answers at once; poll GET.")
    def warm(name: str, q: Quire = Depends(acting)) -> dict:
        return warming_json(q.warm(session_ref(name), force=True))

    @api.get("/sessions/{name}/warm", summary="How preparing the session's shards goes")
    def warm_status(name: str, q: Quire = Depends(acting)) -> dict:
        status = q.warm_status(session_ref(name))
        return warming_json(status) if status else {"state": "not started", "done": 0, "total": 0}

    # -- questions -------------------------------------------------------------------------
    @api.post("/sessions/{name}/ask", summary="Ask: a stream of Server-Sent Events",
              description="Events: `status` (progress: {message, done, total}), `delta` ({text}: the answer as it "
                          "is written), then `turn` (the stored turn with its checked citations) or `error` "
                          "({message, hint}).", response_class=StreamingResponse)
    def ask(name: str, body: AskIn, q: Quire = Depends(acting)) -> StreamingResponse:
        info = q.session(session_ref(name), create=False)  # not found / refused before the stream starts
        return StreamingResponse(_ask_events(q, info, body), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    @api.get("/sessions/{name}/turns", summary="The questions asked and their answers")
    def turns(name: str, q: Quire = Depends(acting)) -> list[dict]:
        return [turn_json(t) for t in q.turns(session_ref(name))]

    @api.get("/sessions/{name}/export", summary="The session's report: md, html or pdf", response_class=FileResponse)
    def export(name: str, format: str = "md", q: Quire = Depends(acting)) -> FileResponse:
        if format not in FORMATS:
            raise QuireError(f"Unknown format {format!r}.", hint=f"Choose one of: {', '.join(FORMATS)}.")
        folder = Path(tempfile.mkdtemp(prefix="quire-export-"))
        written = export_session(q, session_ref(name), format, folder)
        return FileResponse(written[0], media_type=MEDIA.get(format), filename=written[0].name,
                            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))

    # -- tokens --------------------------------------------------------------------------------
    @api.get("/tokens", summary="Your API tokens (never the tokens themselves)")
    def tokens(q: Quire = Depends(acting)) -> list[dict]:
        return [asdict(t) for t in q.tokens(user=q.whoami().name)]

    @api.post("/tokens", status_code=201, summary="A new API token for you: the only time it is shown")
    def create_token(body: TokenIn, q: Quire = Depends(acting)) -> dict:
        record, token = q.create_token(body.name)
        return asdict(record) | {"token": token}

    @api.delete("/tokens/{token_id}", status_code=204, summary="Revoke a token: it stops working at once")
    def revoke(token_id: int, q: Quire = Depends(acting)) -> Response:
        q.revoke_token(token_id)
        return Response(status_code=204)

    return api


# -- the work behind the streaming routes ------------------------------------------------------
async def _receive(request: Request, folder: Path, limit: int) -> tuple[list[Path], dict[str, str] | str | None]:
    """The uploaded files saved under ``folder`` (by their own names, no folders), and the passwords. The body is
    read as it comes and refused once it passes ``limit``, whatever its Content-Length said."""
    received = 0
    original = request.stream

    async def counted():
        nonlocal received
        async for chunk in original():
            received += len(chunk)
            if received > limit:
                raise TooLarge("upload", f"The upload passed {limit >> 20} MiB.",
                               hint="Send fewer or smaller files at once, or raise --max-file-mb.")
            yield chunk

    request.stream = counted  # type: ignore[method-assign]  # the form parser reads through the count
    form = await request.form(max_files=1000, max_fields=100)
    paths: list[Path] = []
    for upload in form.getlist("files"):
        if not hasattr(upload, "filename"):
            continue
        name = Path(upload.filename or "upload").name or "upload"
        target = folder / str(len(paths)) / name  # each in its own folder: two files may share a name
        target.parent.mkdir()
        with target.open("wb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)
        paths.append(target)
    if not paths:
        raise QuireError("No files in the upload.", hint="Send them as multipart form field `files`.")
    passwords: dict[str, str] | str | None = form.get("password") or None
    if form.get("passwords"):
        try:
            mapping = json.loads(form["passwords"])
        except ValueError as exc:
            raise QuireError("`passwords` is not JSON.", hint='Send {"file.pdf": "secret"}.') from exc
        if not isinstance(mapping, dict):
            raise QuireError("`passwords` is not a JSON object.", hint='Send {"file.pdf": "secret"}.')
        passwords = {str(k): str(v) for k, v in mapping.items()}
    return paths, passwords


def _ingest_events(q: Quire, info: SessionRecord, paths: list[Path], passwords, folder: Path) -> Iterator[str]:
    events: queue.Queue = queue.Queue()
    done = object()

    def work() -> None:
        try:
            results = q.ingest(info, paths, passwords=passwords, progress=events.put)
            events.put(("done", {"results": [result_json(r) for r in results]}))
        except QuireError as exc:
            events.put(("error", errors.error_body(exc)["error"]))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            events.put(done)

    threading.Thread(target=work, name="quire-upload", daemon=True).start()
    while (event := events.get()) is not done:
        if isinstance(event, Progress):
            yield sse("progress", {"stage": event.stage, "name": event.name, "done": event.done,
                                   "total": event.total, "pages": event.pages, "tokens": event.tokens})
        else:
            yield sse(*event)


def _ask_events(q: Quire, info: SessionRecord, body: AskIn) -> Iterator[str]:
    try:
        with closing(q.ask(info, body.question, strategy=body.strategy)) as stream:
            for event in stream:
                if isinstance(event, Delta):
                    yield sse("delta", {"text": event.text})
                elif isinstance(event, Status):
                    yield sse("status", {"message": event.message, "done": event.done, "total": event.total})
                elif isinstance(event, Answer):
                    yield sse("turn", turn_json(event.turn))
    except QuireError as exc:
        yield sse("error", errors.error_body(exc)["error"])
