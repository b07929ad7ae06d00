"""An OpenAI-compatible endpoint under ``/v1``: any OpenAI client can ask a session.

``model`` names the session as ``quire/<session>`` (``quire/<owner>/<session>`` for one shared with you);
the question is the last user message (earlier messages are not sent to the model: each question is answered
from the documents). The answer's text carries its citations as ``[S12]`` markers, and the response (the last
chunk, when streaming) has them checked in the extra field ``quire``::

    "quire": {"turn_id": 7, "session": "deals", "support": "verified", "warning": "",
              "citations": [{"ref": "S12", "document": "a.pdf", "where": "p. 3", "quote": "...",
                             "status": "verified", "status_words": "verified: ..."}]}

``GET /v1/models`` lists the sessions the token may read.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import closing
from typing import Any, Iterator

from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from core.errors import NotFound, QuireError
from core.records import TurnRecord
from quire.api import Answer, Delta, Quire
from server import errors
from server.rest import acting

PREFIX = "quire/"


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens ...: the server's settings decide
    model: str
    messages: list[Message]
    stream: bool = False


def _question(messages: list[Message]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            if isinstance(message.content, list):
                return " ".join(str(p.get("text", "")) for p in message.content if p.get("type") == "text")
            return message.content or ""
    raise QuireError("No user message to answer.", hint="Send the question as a message with role `user`.")


def _session(model: str) -> str:
    if not model.startswith(PREFIX) or len(model) == len(PREFIX):
        raise NotFound(f"No model {model!r}.", hint="Name a session as quire/<session>; GET /v1/models lists them.")
    return model[len(PREFIX):]


def citations_json(turn: TurnRecord, session: str) -> dict[str, Any]:
    return {"turn_id": turn.id, "session": session, "support": turn.meta.get("support", ""), "warning": turn.warning,
            "citations": [{"ref": c.ref, "document": c.document_name, "where": c.locator.label(), "quote": c.quote,
                           "status": c.status, "status_words": c.status_words, "origin": c.origin}
                          for c in turn.citations]}


def marked(turn: TurnRecord) -> str:
    """The answer with its citations as [S12] markers: the model's own, or appended where it wrote none."""
    missing = [c.ref for c in turn.citations if f"[{c.ref}]" not in turn.answer]
    return turn.answer + ("".join(f" [{ref}]" for ref in dict.fromkeys(missing)) if missing else "")


def build(quire: Quire) -> FastAPI:
    api = FastAPI(title="Quire OpenAI-compatible API", version="1", openapi_url="/openapi.json", docs_url=None,
                  redoc_url=None)
    api.state.quire = quire
    errors.install(api)

    @api.get("/models")
    def models(q: Quire = Depends(acting)) -> dict:
        return {"object": "list", "data": [
            {"id": PREFIX + s.qualified, "object": "model",
             "created": 0, "owned_by": s.owner} for s in q.sessions()]}

    @api.post("/chat/completions")
    def chat(body: ChatIn, q: Quire = Depends(acting)):
        session = q.session(_session(body.model), create=False)
        question = _question(body.messages)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return StreamingResponse(_chunks(q, session, question, body.model, ident, created),
                                     media_type="text/event-stream")
        turn = q.answer(session, question).turn
        return {"id": ident, "object": "chat.completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": marked(turn)},
                             "finish_reason": _finish(turn)}],
                "usage": {"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens,
                          "total_tokens": turn.prompt_tokens + turn.completion_tokens},
                "quire": citations_json(turn, session.name)}

    return api


def _finish(turn: TurnRecord) -> str:
    return "length" if turn.meta.get("finish_reason") == "length" else "stop"


def _chunks(q: Quire, session, question: str, model: str, ident: str, created: int) -> Iterator[str]:
    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
        data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(data)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    sent = ""
    try:
        with closing(q.ask(session, question)) as events:
            for event in events:
                if isinstance(event, Delta):
                    sent += event.text
                    yield chunk({"content": event.text})
                elif isinstance(event, Answer):
                    turn = event.turn
                    tail = marked(turn)[len(turn.answer):]  # markers for citations the text did not carry
                    if tail:
                        yield chunk({"content": tail})
                    usage = {"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens,
                             "total_tokens": turn.prompt_tokens + turn.completion_tokens}
                    yield chunk({}, _finish(turn), usage=usage, quire=citations_json(turn, session.name))
    except QuireError as exc:
        yield f"data: {json.dumps(errors.error_body(exc))}\n\n"
    yield "data: [DONE]\n\n"
