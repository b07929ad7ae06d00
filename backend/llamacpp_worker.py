"""The process that owns the llama.cpp model: ``python -m backend.llamacpp_worker --fd N``.

The CPU runtime (``backend.llamacpp``) keeps the model here, out of the app's process,
so that a segfault, an out-of-memory kill or a hang in native code costs one question
and not the server. The app tokenizes (it loads the vocabulary only) and renders the
chat template; this process evaluates tokens, keeps the KV cache between questions, and
saves and restores corpus states on disk.

Protocol: JSON messages over an inherited socket (``multiprocessing.connection``)::

    {"op": "init", "config": {...}}     -> {"type": "ready", "n_ctx": int, "pid": int} | error
    {"op": "generate", "tokens": [...], "options": {...}, "key": str, "save_min": int}
        -> {"type": "alive"} (at most once a second while computing)
           {"type": "delta", "text": str} ...
           then {"type": "usage", ...}  (finish_reason "cancelled" after a cancel)
    {"op": "prefill", "tokens": [...], "key": str}
        -> {"type": "alive"} ..., then {"type": "usage", ...} with finish_reason "prefilled" (or "cancelled"):
           the tokens are computed and their state saved under ``key``, no answer (a shard warmed ahead)
    {"op": "reset"}      -> {"type": "reset"}  (forget the KV cache in memory; saved states stay)
    {"op": "cancel"}     (at any time: aborts the running prefill or decode within milliseconds)
    {"op": "shutdown"}   -> {"type": "bye"}, then the process exits

A failed request is answered ``{"type": "error", "error": class name, "message": str}``.
Cancelling works through llama.cpp's abort callback, which ggml calls between graph nodes,
so even a long prefill stops at once. A reader thread takes ``cancel`` off the socket while
the main thread is inside native code.

``python -m backend.llamacpp_worker --check`` loads the bundled model and generates one
token; setup (``bootstrap.py``) runs it in a child to prove the build runs on this CPU.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import queue
import signal
import struct
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from backend.llamacpp import bundled_model_path
from backend.prefix_store import PrefixStore

HEARTBEAT_S = 1.0


class Worker:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.send_lock = threading.Lock()
        self.requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.cancelled = threading.Event()
        self.llm = None
        self.store = None
        self.saved: set[str] = set()
        self._last_beat = 0.0
        self._abort_cb = None  # the ctypes callback must outlive the context that holds it

    # -- messages ------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        with self.send_lock:
            self.conn.send_bytes(json.dumps(message).encode("utf-8"))

    def read_loop(self) -> None:
        """Reader thread: requests go to the queue, ``cancel`` takes effect at once."""
        while True:
            try:
                message = json.loads(self.conn.recv_bytes().decode("utf-8"))
            except (EOFError, OSError):
                # The app closed the socket or died (the kernel closes a dead process's end). This thread runs
                # even while the main one is inside llama.cpp (ctypes releases the GIL), so the model process
                # never outlives the app. Not PR_SET_PDEATHSIG: that fires when the *thread* that started us
                # ends, and web servers start the runtime from pool threads that retire when idle.
                os._exit(0)
            if message.get("op") == "cancel":
                self.cancelled.set()
            else:
                if message.get("op") in ("generate", "prefill"):
                    self.cancelled.clear()  # here, in order: a cancel sent right after it still counts
                self.requests.put(message)

    def serve(self) -> None:
        threading.Thread(target=self.read_loop, name="quire-llama-reader", daemon=True).start()
        while (message := self.requests.get()) is not None:
            op = message.get("op")
            try:
                if op == "shutdown":
                    self.send({"type": "bye"})
                    return
                if op == "init":
                    self.init(message["config"])
                elif op == "generate":
                    self.generate(message)
                elif op == "prefill":
                    self.prefill(message)
                elif op == "reset":
                    self.llm.reset()  # forget the KV cache in memory (states on disk stay)
                    self.send({"type": "reset"})
                else:
                    raise ValueError(f"unknown op {op!r}")
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the app as a message
                traceback.print_exc(file=sys.stderr)
                self.send({"type": "error", "error": type(exc).__name__, "message": str(exc)})

    # -- the model -------------------------------------------------------------
    def init(self, config: dict[str, Any]) -> None:
        from llama_cpp import GGML_TYPE_Q8_0, Llama, ggml_abort_callback, llama_set_abort_callback

        kv = {"type_k": GGML_TYPE_Q8_0, "type_v": GGML_TYPE_Q8_0, "flash_attn": True} \
            if config.get("kv_cache_type") == "q8_0" else {}  # llama.cpp quantises the V cache only with flash attention
        self.llm = Llama(
            **kv,
            model_path=config["model_path"],
            n_ctx=config["n_ctx"],
            n_threads=config["threads"],
            n_threads_batch=config["threads"],
            n_batch=config.get("n_batch", 512),
            seed=config.get("seed", 0),
            verbose=False,
        )
        self._abort_cb = ggml_abort_callback(self._abort)
        llama_set_abort_callback(self.llm.ctx, self._abort_cb, None)
        if config.get("state_dir") and config.get("state_mb", 0) > 0:
            self.store = PrefixStore(Path(config["state_dir"]), int(config["state_mb"]) * 2**20)
        self.send({"type": "ready", "n_ctx": self.llm.n_ctx(), "pid": os.getpid()})

    def _abort(self, _data: object) -> bool:
        """Called by ggml between graph nodes: stop when cancelled; say we are alive once a second."""
        if self.cancelled.is_set():
            return True
        now = time.monotonic()
        if now - self._last_beat >= HEARTBEAT_S:
            self._last_beat = now
            try:
                self.send({"type": "alive"})
            except OSError:
                return True
        return False

    def generate(self, message: dict[str, Any]) -> None:
        llm = self.llm
        if llm is None:
            raise RuntimeError("the model is not loaded (init first)")
        tokens: list[int] = message["tokens"]
        options: dict[str, Any] = message["options"]
        key: str = message.get("key", "")
        started = time.perf_counter()
        cached = self.cached_prefix(tokens)
        source = "memory" if cached else ""
        held = self.stored_prefix(key, tokens)  # None: a state whose file's head cannot be read
        if (cached < len(tokens) // 2 if held is None else held > cached) and self.restore(key, len(tokens)):
            cached, source = self.cached_prefix(tokens), "disk"
        ttft, completion, finish = 0.0, 0, ""
        try:
            for chunk in llm.create_completion(
                prompt=tokens, max_tokens=options["max_tokens"], temperature=options["temperature"],
                seed=options["seed"], stop=options.get("stop") or None, stream=True,
                repeat_penalty=options.get("repeat_penalty", 1.0),
            ):
                if self.cancelled.is_set():
                    finish = "cancelled"
                    break
                choice = chunk["choices"][0]
                text = choice.get("text", "")
                if text:
                    ttft = ttft or time.perf_counter() - started
                    completion += 1
                    self.send({"type": "delta", "text": text})
                finish = choice.get("finish_reason") or finish
        except RuntimeError:
            if not self.cancelled.is_set():  # llama_decode returns 2 when the abort callback stopped it
                raise
            finish = "cancelled"
        total = time.perf_counter() - started
        save_min = int(message.get("save_min", 256))
        usage = {
            "type": "usage", "prompt_tokens": len(tokens), "completion_tokens": completion,
            "cached_tokens": max(0, min(cached, len(tokens) - 1)), "ttft_s": ttft or total, "total_s": total,
            "finish_reason": finish, "details": {"cache_source": source},
        }
        if finish == "cancelled":
            # The app waits less than a second for a cancelled answer to settle, so it hears first; the state is
            # saved after, when the prompt was whole (the cancel came after the first answer token: Stop, or the
            # loop guard cutting a repeating answer). One cancelled in the prefill has nothing to keep.
            usage["details"]["state_saved"] = False
            self.send(usage)
            if completion > 0:
                self.persist(key, len(tokens), save_min)
            return
        usage["details"]["state_saved"] = self.persist(key, len(tokens), save_min)
        self.send(usage)

    def prefill(self, message: dict[str, Any]) -> None:
        """Compute ``tokens`` (a shard, no question) and save their state, unless it is on disk already."""
        llm = self.llm
        if llm is None:
            raise RuntimeError("the model is not loaded (init first)")
        tokens: list[int] = message["tokens"]
        key: str = message.get("key", "")
        started = time.perf_counter()
        existed = bool(self.store is not None and key and self.store.get(key) is not None)
        cached, finish, saved = 0, "prefilled", False
        if not existed:
            cached = self.cached_prefix(tokens)
            llm.n_tokens = cached  # eval drops what the cache holds after this, then computes the rest
            try:
                llm.eval(tokens[cached:])
            except RuntimeError:
                if not self.cancelled.is_set():
                    raise
                finish = "cancelled"
            if finish != "cancelled":
                saved = self.persist(key, len(tokens), 0)
        total = time.perf_counter() - started
        self.send({
            "type": "usage", "prompt_tokens": len(tokens), "completion_tokens": 0, "cached_tokens": cached,
            "ttft_s": total, "total_s": total, "finish_reason": finish,
            "details": {"state_saved": saved, "existed": existed, "kept": saved or existed},
        })

    def cached_prefix(self, tokens: list[int]) -> int:
        """How many leading tokens of ``tokens`` are already in the KV cache."""
        n = 0
        for a, b in zip(self.llm.input_ids, tokens):
            if a != b:
                break
            n += 1
        return n

    # -- corpus states on disk -------------------------------------------------
    def stored_prefix(self, key: str, tokens: list[int]) -> int | None:
        """How many leading tokens of ``tokens`` the state saved under ``key`` holds (0 when there is none), read
        from the head of its file (llama.cpp's session format: magic, version, token count, tokens) without
        loading it; None when the head cannot be read. The state is loaded only when it holds more of the prompt
        than memory does: the prompt before may share its system text and first passages (a focus question over
        the same documents), or all of them and more (the matrix field before, over the same shard). A state
        whose head cannot be read is loaded when memory holds less than half of the prompt."""
        if self.store is None or not key or (path := self.store.get(key)) is None:
            return 0
        import llama_cpp

        try:
            with open(path, "rb") as f:
                magic, version, count = struct.unpack("<III", f.read(12))
                if (magic, version) != (llama_cpp.LLAMA_SESSION_MAGIC, llama_cpp.LLAMA_SESSION_VERSION):
                    raise ValueError(f"session format {magic:#x}/{version}")
                n = min(count, len(tokens))
                saved = struct.unpack(f"<{n}i", f.read(4 * n))
        except (OSError, ValueError, struct.error):
            return None
        return next((i for i, (a, b) in enumerate(zip(saved, tokens)) if a != b), n)

    def restore(self, key: str, prompt_tokens: int) -> bool:
        if self.store is None or not key or (path := self.store.get(key)) is None:
            return False
        import llama_cpp

        llm = self.llm
        n_ctx = llm.n_ctx()
        buf = (llama_cpp.llama_token * n_ctx)()
        count = ctypes.c_size_t(0)
        if not llama_cpp.llama_state_load_file(llm.ctx, str(path).encode(), buf, n_ctx, ctypes.byref(count)):
            path.unlink(missing_ok=True)  # unreadable (another llama.cpp build, say): recompute next time
            llm.reset()
            return False
        # Keep at least one prompt token to evaluate, so the first answer token comes from fresh logits.
        n = min(count.value, prompt_tokens - 1)
        llm.n_tokens = n_ctx  # input_ids is a view of the first n_tokens: clear the stale tail, then set
        llm.input_ids[:n] = buf[:n]
        llm.input_ids[n:] = -1
        llm.n_tokens = n
        self.saved.add(key)
        return True

    def persist(self, key: str, prompt_tokens: int, save_min: int) -> bool:
        """Save the KV state after the first answer on a new corpus (small prompts are not worth it)."""
        if self.store is None or not key or prompt_tokens < save_min:
            return False
        if key in self.saved and self.store.get(key) is not None:
            return False
        import llama_cpp

        llm = self.llm
        n = llm.n_tokens
        tokens = (llama_cpp.llama_token * n)(*llm.input_ids[:n].tolist())
        tmp = self.store.reserve(key)
        if not llama_cpp.llama_state_save_file(llm.ctx, str(tmp).encode(), tokens, n):
            tmp.unlink(missing_ok=True)
            return False
        self.store.commit(key, tmp)
        self.saved.add(key)
        return True


def check(threads: int) -> int:
    """Load the bundled model and generate one token; print what happened (bootstrap reads the last line)."""
    from llama_cpp import Llama

    started = time.perf_counter()
    llm = Llama(model_path=str(bundled_model_path()), n_ctx=512, n_threads=threads, n_threads_batch=threads,
                verbose=False)
    out = llm.create_completion("The capital of France is", max_tokens=1, temperature=0.0)
    llm.close()
    print(f"the bundled model answers ({out['choices'][0]['text']!r} in {time.perf_counter() - started:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, help="inherited socket to the app")
    parser.add_argument("--check", action="store_true", help="load the bundled model and generate one token")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.check:
        return check(args.threads)
    if args.fd is None:
        parser.error("--fd or --check is required")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the app's terminal is the app's to handle
    Worker(Connection(args.fd)).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
