"""The child process that owns an SGLang ``Engine``: ``python -m backend.sglang_worker --fd N``.

SGLang's ``Engine.shutdown()`` kills every child process of its host, and importing
it sets a uvloop event-loop policy and the ``spawn`` start method; so the engine lives
here, in its own process group, and Quire talks to it over an inherited socket
(``multiprocessing.connection.Connection``) carrying JSON messages, one request at a time.

Protocol (parent -> worker, then what comes back)::

    {"op": "init", "config": {...}}                -> {"type": "ready", "info": {...}} | error
    {"op": "count", "text": str}                   -> {"type": "count", "n": int}
    {"op": "render", "system": str, "parts": [..]} -> {"type": "rendered", "prompt": str, "images": [..]}
    {"op": "generate", "system", "parts", "sampling"}
        -> {"type": "delta", "text": str} ... then {"type": "usage", ...}   (or {"type": "error"})
    {"op": "cancel"}        (while generating: stop; the usage follows with finish_reason "cancelled")
    {"op": "shutdown"}      -> {"type": "bye"}, then the worker exits

Parts are ``{"kind": "text", "text": str}`` or ``{"kind": "image", "path": str}``. Every
reply to a failed request is ``{"type": "error", "error": class name, "message": str}``.

``--engine-factory module:callable`` replaces the real engine; it exists for tests,
which drive this process with a small fake. A factory takes the ``config`` dict and
returns an object with ``context_length``, ``encode(text)``, ``render(system, parts)``,
``stream(prompt, image_data, sampling_params, rid)`` (SGLang-shaped chunks),
``abort(rid)`` and ``shutdown()``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
import uuid
from multiprocessing.connection import Connection
from typing import Any, Iterator

DEFAULT_FACTORY = "backend.sglang_worker:SGLangEngine"


class SGLangEngine:
    """The real engine: ``sglang.Engine`` plus the chat template, as SGLang's chat endpoint applies it."""

    def __init__(self, config: dict[str, Any]) -> None:
        from sglang.srt.entrypoints.engine import Engine

        self.engine = Engine(**config["server_args"])
        manager = self.engine.tokenizer_manager
        self.tokenizer = manager.tokenizer
        self.processor = getattr(manager, "processor", None)
        self.context_length = int(manager.context_len)
        self.template_name = config.get("chat_template") or ""
        self.multimodal = bool(config.get("multimodal"))

    # -- tokens and templates ------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def render(self, system: str, parts: list[dict[str, Any]]) -> str:
        conv = self._conversation()
        if conv is not None:
            return _render_conversation(conv, system, parts)
        messages = _hf_messages(system, parts, structured=self.multimodal)
        owner = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
        return owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def stop_strings(self) -> list[str]:
        conv = self._conversation()
        stop = getattr(conv, "stop_str", None) if conv is not None else None
        return [stop] if isinstance(stop, str) else list(stop or [])

    def _conversation(self):
        """SGLang's built-in conversation template named by --chat-template, when the model has no Jinja one."""
        if not self.template_name or getattr(self.tokenizer, "chat_template", None):
            return None
        from sglang.srt.parser.conversation import chat_template_exists, chat_templates

        return chat_templates[self.template_name].copy() if chat_template_exists(self.template_name) else None

    # -- generation ----------------------------------------------------------------
    def stream(self, prompt: str, image_data: list[str], sampling_params: dict, rid: str) -> Iterator[dict]:
        # Like SGLang's /v1/chat/completions: text-only prompts go as token ids (the template already
        # holds the special tokens), multimodal ones as text whose image tokens the processor expands.
        if image_data:
            return self.engine.generate(
                prompt=prompt, image_data=image_data, sampling_params=sampling_params, stream=True, rid=rid
            )
        return self.engine.generate(
            input_ids=self.encode(prompt), sampling_params=sampling_params, stream=True, rid=rid
        )

    def abort(self, rid: str) -> None:
        self.engine.tokenizer_manager.abort_request(rid)

    def shutdown(self) -> None:
        self.engine.shutdown()


# -- rendering helpers (shared with fakes) --------------------------------------------
def _hf_messages(system: str, parts: list[dict[str, Any]], *, structured: bool) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    if structured:
        content = [{"type": "image"} if p["kind"] == "image" else {"type": "text", "text": p["text"]} for p in parts]
    else:
        content = "".join(p.get("text", "") for p in parts if p["kind"] == "text")
    messages.append({"role": "user", "content": content})
    return messages


def _render_conversation(conv, system: str, parts: list[dict[str, Any]]) -> str:
    conv.set_system_message(system)
    text = "".join(conv.image_token if p["kind"] == "image" else p.get("text", "") for p in parts)
    conv.append_message(conv.roles[0], text)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


# -- the loop ----------------------------------------------------------------------------
class Worker:
    def __init__(self, conn: Connection, factory: str) -> None:
        self.conn = conn
        self.factory = factory
        self.engine: Any = None

    def send(self, message: dict[str, Any]) -> None:
        self.conn.send_bytes(json.dumps(message).encode("utf-8"))

    def recv(self) -> dict[str, Any]:
        return json.loads(self.conn.recv_bytes().decode("utf-8"))

    def error(self, exc: BaseException) -> None:
        self.send({"type": "error", "error": type(exc).__name__, "message": str(exc) or repr(exc),
                   "traceback": traceback.format_exc(limit=8)})

    def run(self) -> int:
        try:
            message = self.recv()
        except EOFError:
            return 0
        if message.get("op") != "init":
            self.send({"type": "error", "error": "ProtocolError", "message": "first message must be init"})
            return 2
        try:
            self.engine = load_factory(self.factory)(message["config"])
        except BaseException as exc:  # noqa: BLE001 - anything the engine raises goes back to the parent
            traceback.print_exc()
            self.error(exc)
            return 1
        self.send({"type": "ready", "info": {"context_length": self.engine.context_length, "pid": os.getpid()}})
        try:
            while self.serve_one():
                pass
        finally:
            self.engine.shutdown()
        return 0

    def serve_one(self) -> bool:
        try:
            message = self.recv()
        except EOFError:
            return False  # the parent went away
        op = message.get("op")
        if op == "shutdown":
            self.send({"type": "bye"})
            return False
        try:
            if op == "count":
                self.send({"type": "count", "n": len(self.engine.encode(message["text"]))})
            elif op == "render":
                prompt = self.engine.render(message["system"], message["parts"])
                self.send({"type": "rendered", "prompt": prompt, "images": _images(message["parts"])})
            elif op == "generate":
                self.generate(message)
            elif op == "cancel":
                pass  # arrived after the answer had finished
            else:
                self.send({"type": "error", "error": "ProtocolError", "message": f"unknown op {op!r}"})
        except Exception as exc:  # noqa: BLE001 - reported to the parent, the worker keeps serving
            traceback.print_exc()
            self.error(exc)
        return True

    def generate(self, message: dict[str, Any]) -> None:
        prompt = self.engine.render(message["system"], message["parts"])
        sampling = dict(message.get("sampling") or {})
        extra_stop = getattr(self.engine, "stop_strings", lambda: [])()
        if extra_stop:
            sampling["stop"] = list(sampling.get("stop") or []) + extra_stop
        rid = uuid.uuid4().hex
        sent = ""
        meta: dict[str, Any] = {}
        cancelled = False
        for chunk in self.engine.stream(prompt, _images(message["parts"]), sampling, rid):
            text = chunk.get("text") or ""
            # SGLang streams the cumulative text unless --incremental-streaming-output is on
            delta = text[len(sent):] if text.startswith(sent) else text
            sent = text if text.startswith(sent) else sent + text
            meta = chunk.get("meta_info") or meta
            if delta:
                self.send({"type": "delta", "text": delta})
            if self.conn.poll() and self.recv().get("op") == "cancel":
                self.engine.abort(rid)
                cancelled = True
                break
        self.send(_usage(meta, cancelled))


def _images(parts: list[dict[str, Any]]) -> list[str]:
    return [p["path"] for p in parts if p["kind"] == "image"]


def _usage(meta: dict[str, Any], cancelled: bool) -> dict[str, Any]:
    finish = meta.get("finish_reason")
    if isinstance(finish, dict):  # SGLang: {"type": "stop" | "length" | "abort", ...}
        if finish.get("type") == "abort" and not cancelled:
            return {"type": "error", "error": "Aborted", "message": str(finish.get("message") or finish)}
        finish = finish.get("type")
    return {
        "type": "usage",
        "prompt_tokens": int(meta.get("prompt_tokens") or 0),
        "completion_tokens": int(meta.get("completion_tokens") or 0),
        "cached_tokens": int(meta.get("cached_tokens") or 0),
        "e2e_latency": float(meta.get("e2e_latency") or 0.0),
        "finish_reason": "cancelled" if cancelled else str(finish or ""),
    }


def load_factory(spec: str):
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--engine-factory must be module:callable, not {spec!r}")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="inherited socket to the parent")
    parser.add_argument("--engine-factory", default=DEFAULT_FACTORY, help="module:callable (tests only)")
    args = parser.parse_args(argv)
    with Connection(args.fd) as conn:
        return Worker(conn, args.engine_factory).run()


if __name__ == "__main__":
    sys.exit(main())
