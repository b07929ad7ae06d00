"""The embedded GPU runtime: an SGLang ``Engine`` in an isolated child process.

The engine runs in ``backend.sglang_worker`` (see its protocol), started in its own
session and process group, because SGLang's ``Engine.shutdown()`` kills every child of
the process hosting it and importing it changes the event-loop policy and the
multiprocessing start method. ``shutdown()`` asks the worker to stop, then ends its
whole process group (the scheduler and detokenizer processes included); it also runs
at interpreter exit.

SGLang's radix cache keeps the KV of the longest shared prompt prefix, so a second
question on the same corpus reports most of its prompt as ``cached_tokens``.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import signal
import subprocess
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterator

from backend import presets, processes
from backend.base import Delta, Event, GenerateOptions, Prompt, Runtime, Usage
from core.errors import BackendError, RuntimeUnavailable
from core.settings import Settings

START_TIMEOUT_S = 1800.0  # a 100B-parameter model can take many minutes to load
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 25

UNAVAILABLE_HINT = (
    "sglang needs a CUDA GPU: install requirements-gpu.txt on a machine with an NVIDIA GPU, "
    "or use --runtime llamacpp (CPU), or --runtime openai --endpoint URL for a running server."
)


def check_available() -> None:
    """Raise RuntimeUnavailable unless sglang, torch and a CUDA device are all here."""
    missing = [name for name in ("sglang", "torch") if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeUnavailable(f"The sglang runtime cannot start: {' and '.join(missing)} not installed.",
                                 hint=UNAVAILABLE_HINT)
    import torch  # lazily: GPU-only and slow to import; present, as checked above

    if not torch.cuda.is_available():
        raise RuntimeUnavailable("The sglang runtime cannot start: no CUDA GPU is visible.", hint=UNAVAILABLE_HINT)


def server_args(settings: Settings, preset: presets.Preset | None = None) -> dict[str, Any]:
    """``sglang.Engine(**kwargs)`` for these settings: explicit settings first, then the preset.

    Field names are those of sglang 0.5.x ``ServerArgs`` (sglang/srt/arg_groups/fields/).
    """
    model = settings.model or (preset.model_path if preset else "")
    if not model:
        raise BackendError("The sglang runtime needs a model.",
                           hint="Pass --model PATH_OR_HUB_ID (e.g. meta-llama/Llama-4-Scout-17B-16E-Instruct).")
    args: dict[str, Any] = {
        "model_path": model,
        "tp_size": settings.tp_size if settings.tp_size != 1 or not preset else preset.tp_size,
        "dp_size": settings.dp_size,
        "random_seed": settings.seed,
        "log_level": _log_level(settings.log_level),
    }
    context = settings.context_window or (preset.context_length if preset else 0)
    if context:
        args["context_length"] = context
    if settings.chunked_prefill_size:
        args["chunked_prefill_size"] = settings.chunked_prefill_size
    template = settings.chat_template or (preset.chat_template if preset else "")
    if template:
        args["chat_template"] = template
    if preset and preset.multimodal:
        args["enable_multimodal"] = True
    if settings.mem_fraction_static:
        args["mem_fraction_static"] = settings.mem_fraction_static
    if settings.enable_hierarchical_cache:
        args["enable_hierarchical_cache"] = True
        if settings.hicache_storage_backend:  # ServerArgs.hicache_storage_backend (sglang 0.5.x)
            args["hicache_storage_backend"] = settings.hicache_storage_backend
    if preset:
        args.update({k: v for k, v in preset.server_args.items() if k not in args})
    return args


def _log_level(level: str) -> str:
    return level if level in ("debug", "info", "warning", "error") else "error"


class SGLangRuntime(Runtime):
    name = "sglang"
    supports_images = False  # set per instance: True for a multimodal preset
    prefix_cache = True

    def __init__(self, settings: Settings, *, engine_factory: str | None = None) -> None:
        """``engine_factory`` (``module:callable``) swaps the engine in the worker; for tests only."""
        super().__init__(settings)
        if engine_factory is None:
            check_available()
        self.engine_factory = engine_factory
        self.preset = presets.resolve(settings)
        self.supports_images = bool(self.preset and self.preset.multimodal)
        self.server_args = server_args(settings, self.preset)
        self.log_path = Path(settings.cache_dir) / "sglang-worker.log"
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._info: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._overhead: int | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> "SGLangRuntime":
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return self
            self._spawn()
            try:
                self._send({"op": "init", "config": self._config()})
                reply = self._recv(timeout=timeout, waiting_for="the engine to load")
            except BaseException:
                self._terminate()
                raise
            if reply.get("type") != "ready":
                self._terminate()
                raise self._worker_error(reply, "SGLang could not start")
            self._info = reply["info"]
            atexit.register(self.shutdown)
        return self

    def shutdown(self) -> None:
        with self._lock:
            if self._proc is None:
                return
            if self._proc.poll() is None and self._conn is not None:
                try:
                    self._send({"op": "shutdown"})
                    self._recv(timeout=STOP_TIMEOUT_S, waiting_for="the engine to stop")
                    self._proc.wait(timeout=STOP_TIMEOUT_S)
                except (BackendError, subprocess.TimeoutExpired, OSError):
                    pass  # the process group is ended below either way
            self._terminate()
            atexit.unregister(self.shutdown)

    @property
    def worker_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- capabilities ------------------------------------------------------------
    @property
    def context_window(self) -> int:
        """--context-window, else what the engine reported when it started (a property never starts it)."""
        if self.settings.context_window:
            return self.settings.context_window
        if not self._info:
            raise BackendError("The SGLang engine has not started, so its window is not known yet.",
                               hint="Call start() first (Quire does), or pass --context-window N.")
        return int(self._info["context_length"])

    @property
    def model_name(self) -> str:
        return str(self.server_args["model_path"])

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return int(self._call({"op": "count", "text": text}, "count")["n"])

    def image_tokens(self, width: int, height: int) -> int:
        return self.preset.image_tokens(width, height) if self.preset else 0

    def template_overhead(self) -> int:
        if self._overhead is None:
            rendered = self._call({"op": "render", "system": "", "parts": []}, "rendered")["prompt"]
            self._overhead = self.count_tokens(rendered) + 1
        return self._overhead

    def render(self, prompt: Prompt) -> str:
        """The exact text the engine is given (chat template applied)."""
        return self._call({"op": "render", **_wire_prompt(prompt)}, "rendered")["prompt"]

    # -- the generating call ---------------------------------------------------------
    def generate(self, prompt: Prompt, options: GenerateOptions) -> Iterator[Event]:
        sampling: dict[str, Any] = {
            "max_new_tokens": options.max_tokens,
            "temperature": options.temperature,
            "sampling_seed": options.seed,
        }
        if options.stop:
            sampling["stop"] = list(options.stop)
        if options.repeat_penalty != 1.0:
            sampling["repetition_penalty"] = options.repeat_penalty
        with self._lock:
            self.start()
            started = time.perf_counter()
            ttft = 0.0
            self._send({"op": "generate", **_wire_prompt(prompt), "sampling": sampling})
            finished = False
            try:
                while True:
                    reply = self._recv(timeout=None, waiting_for="the answer")
                    kind = reply.get("type")
                    if kind == "delta":
                        ttft = ttft or time.perf_counter() - started
                        yield Delta(reply["text"])
                    elif kind == "usage":
                        finished = True
                        total = time.perf_counter() - started
                        yield _to_usage(reply, ttft or total, total)
                        return
                    else:
                        finished = True
                        raise self._worker_error(reply, "SGLang failed while answering")
            finally:
                if not finished:
                    self._cancel()

    # -- the worker process -------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "server_args": self.server_args,
            "chat_template": self.server_args.get("chat_template", ""),
            "multimodal": self.supports_images,
        }

    def _spawn(self) -> None:
        extra = ["--engine-factory", self.engine_factory] if self.engine_factory else []
        self._proc, self._conn = processes.spawn("backend.sglang_worker", self.log_path, *extra)

    def _terminate(self) -> None:
        """End the worker's whole process group: the worker and every process the engine started."""
        proc, self._proc = self._proc, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._info = {}
        if proc is None:
            return
        pgid = proc.pid  # the worker leads its own process group (start_new_session)
        processes.signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            pass
        if not _wait_group_gone(pgid, 3.0):
            processes.signal_group(pgid, signal.SIGKILL)
            proc.wait()
            _wait_group_gone(pgid, 5.0)

    def _send(self, message: dict[str, Any]) -> None:
        if self._conn is None:
            raise BackendError("The SGLang worker is not running.", hint="Start the runtime first.")
        try:
            self._conn.send_bytes(json.dumps(message).encode("utf-8"))
        except OSError as exc:
            raise self._died(f"while sending {message.get('op')}") from exc

    def _recv(self, *, timeout: float | None, waiting_for: str) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                if self._conn is not None and self._conn.poll(0.5):
                    return json.loads(self._conn.recv_bytes().decode("utf-8"))
            except (EOFError, OSError) as exc:
                raise self._died(f"while waiting for {waiting_for}") from exc
            if self._proc is None or self._proc.poll() is not None:
                raise self._died(f"while waiting for {waiting_for}")
            if deadline is not None and time.monotonic() > deadline:
                raise BackendError(f"Timed out after {timeout:.0f} s waiting for {waiting_for}.",
                                   hint=f"See the worker log: {self.log_path}\n{self._log_tail()}")

    def _call(self, message: dict[str, Any], expect: str) -> dict[str, Any]:
        with self._lock:
            self.start()
            self._send(message)
            reply = self._recv(timeout=600, waiting_for=message["op"])
        if reply.get("type") != expect:
            raise self._worker_error(reply, f"SGLang could not {message['op']}")
        return reply

    def _cancel(self) -> None:
        """The consumer stopped reading: tell the worker, then drop what was still on its way."""
        try:
            self._send({"op": "cancel"})
            while self._recv(timeout=STOP_TIMEOUT_S, waiting_for="the cancelled answer").get("type") == "delta":
                pass
        except BackendError:
            self._terminate()  # a worker that will not settle is not reused

    def _died(self, when: str) -> BackendError:
        how = processes.exit_status(self._proc)
        self._terminate()
        return BackendError(f"The SGLang worker exited ({how}) {when}.",
                            hint=f"Last lines of {self.log_path}:\n{self._log_tail()}")

    def _worker_error(self, reply: dict[str, Any], what: str) -> BackendError:
        message = reply.get("message") or json.dumps(reply)
        hint = "Check the model path, GPU memory (--mem-fraction-static) and the worker log: " + str(self.log_path)
        if reply.get("traceback"):
            hint += "\n" + self._log_tail()
        return BackendError(f"{what}: {reply.get('error', 'error')}: {message}", hint=hint)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:])


def _wire_prompt(prompt: Prompt) -> dict[str, Any]:
    parts = []
    for part in prompt.parts:
        if part.kind == "image":
            parts.append({"kind": "image", "path": str(Path(part.file()).resolve())})
        else:
            parts.append({"kind": "text", "text": part.text})
    return {"system": prompt.system, "parts": parts}


def _to_usage(reply: dict[str, Any], ttft: float, total: float) -> Usage:
    return Usage(
        prompt_tokens=reply["prompt_tokens"],
        completion_tokens=reply["completion_tokens"],
        cached_tokens=reply["cached_tokens"],
        ttft_s=ttft,
        total_s=total,
        finish_reason=reply["finish_reason"],
        details={"engine_e2e_latency_s": reply.get("e2e_latency", 0.0)},
    )


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    """Whether every process of the group has exited within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _group_alive(pgid: int) -> bool:
    """Any live (not zombie) process in the group; exited orphans wait for init to reap them."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
