"""A remote OpenAI-compatible server: SGLang (or its router), vLLM, llama.cpp's server, Ollama.

Streams ``POST {endpoint}/v1/chat/completions`` with ``stream_options.include_usage``
and reads the usage the server reports: ``prompt_tokens``, ``completion_tokens`` and,
where given, ``prompt_tokens_details.cached_tokens`` (SGLang with
``--enable-cache-report``, vLLM) or ``timings.cache_n`` (llama.cpp's C++ server). A
server that sends no usage in the stream (llama-cpp-python's server) gets counted
figures instead, from its tokenizer where it exposes one.

Token counts use the server's own tokenizer when it has a route for it (SGLang and
vLLM ``/tokenize``, llama.cpp ``/tokenize``, llama-cpp-python ``/extras/tokenize/count``);
otherwise cl100k plus ``SAFETY_MARGIN``, scaled by the ratio of reported to estimated
prompt tokens seen so far.
"""

from __future__ import annotations

import base64
import json
import math
import mimetypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import httpx
from PIL import Image

from backend import presets
from backend.imagecost import qwen_vl_image_tokens
from backend.base import Delta, Event, GenerateOptions, Prompt, Runtime, Usage
from core.errors import BackendError, RuntimeUnavailable
from core.settings import Settings
from core.tokens import estimate_tokens

SAFETY_MARGIN = 1.10  # cl100k is not the served model's tokenizer: count 10% over
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 600.0  # a long prefill on a big corpus can take minutes before the first token
_START_HINT = "Call start() first (Quire does), or pass --model NAME and --context-window N."

# (path, body builder, how to read the count); tried in order, the first that answers is kept.
_TOKENIZE_ROUTES = (
    # SGLang (/tokenize is an alias of /v1/tokenize) and vLLM take "prompt"; llama.cpp's server takes "content".
    ("/tokenize", lambda model, text: {"model": model, "prompt": text, "content": text, "add_special_tokens": False}),
    ("/extras/tokenize/count", lambda model, text: {"input": text}),  # llama-cpp-python's server
)


def normalize_endpoint(endpoint: str) -> str:
    """Server root without a trailing slash or ``/v1``: ``http://h:30000/v1/`` -> ``http://h:30000``."""
    url = endpoint.strip().rstrip("/")
    if not url:
        raise RuntimeUnavailable("The openai runtime needs a server address.", hint="Pass --endpoint http://HOST:PORT.")
    if "://" not in url:
        url = "http://" + url
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


# -- the request ------------------------------------------------------------------
def image_data_url(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def build_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """System message, then one user message: a string, or a list of parts when images are present.

    Parts keep their order (corpus first, question last), so the serialized prefix stays
    byte-identical across questions on the same corpus and server prefix caches hit.
    """
    messages: list[dict[str, Any]] = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    if not any(p.kind == "image" for p in prompt.parts):
        messages.append({"role": "user", "content": prompt.text_only()})
        return messages
    content: list[dict[str, Any]] = []
    for part in prompt.parts:
        if part.kind == "image":
            content.append({"type": "image_url", "image_url": {"url": image_data_url(part.file())}})
        elif part.text:
            content.append({"type": "text", "text": part.text})
    messages.append({"role": "user", "content": content})
    return messages


# -- the response ------------------------------------------------------------------
@dataclass
class StreamState:
    """What one streamed answer reported, gathered from its SSE chunks."""

    text: str = ""
    finish_reason: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None


def sse_payloads(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """JSON payloads of ``data:`` lines, up to ``[DONE]``; comments and blank lines skipped."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        if data:
            yield json.loads(data)


def read_chunk(chunk: dict[str, Any], state: StreamState) -> str:
    """Fold one chunk into ``state``; returns its new answer text ("" if none)."""
    if chunk.get("error"):
        error = chunk["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise BackendError(f"The model server reported an error mid-answer: {message}")
    text = ""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        text += delta.get("content") or ""
        state.finish_reason = choice.get("finish_reason") or state.finish_reason
    usage = chunk.get("usage")
    if usage:
        state.prompt_tokens = usage.get("prompt_tokens", state.prompt_tokens)
        state.completion_tokens = usage.get("completion_tokens", state.completion_tokens)
        details = usage.get("prompt_tokens_details") or {}
        if details.get("cached_tokens") is not None:
            state.cached_tokens = details["cached_tokens"]
    timings = chunk.get("timings")  # llama.cpp's C++ server
    if timings and timings.get("cache_n") is not None:
        state.cached_tokens = timings["cache_n"]
    meta = chunk.get("meta_info")  # SGLang's native API shape, if a proxy passes it through
    if meta and meta.get("cached_tokens") is not None:
        state.cached_tokens = meta["cached_tokens"]
    state.text += text
    return text


# -- token estimates -----------------------------------------------------------------
class TokenEstimator:
    """cl100k counts scaled by what the server has reported, plus a safety margin."""

    def __init__(self, margin: float = SAFETY_MARGIN) -> None:
        self.margin = margin
        self.reported = 0
        self.estimated = 0

    @property
    def ratio(self) -> float:
        return self.reported / self.estimated if self.estimated else 1.0

    def observe(self, estimated: int, reported: int) -> None:
        if estimated > 0 and reported > 0:
            self.estimated += estimated
            self.reported += reported

    def count(self, text: str) -> int:
        raw = estimate_tokens(text)
        return math.ceil(raw * self.ratio * self.margin) if raw else 0


# -- the runtime ---------------------------------------------------------------------
class OpenAIRuntime(Runtime):
    name = "openai"
    supports_images = False  # set per instance from the preset (or settings.multimodal)
    prefix_cache = True  # SGLang's radix cache, vLLM's prefix caching, llama.cpp's slot cache

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.endpoint = normalize_endpoint(settings.endpoint)
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        self._client = httpx.Client(base_url=self.endpoint, headers=headers, timeout=timeout)
        self.preset = presets.resolve(settings)
        # A known vision model by name, or settings.multimodal to force images on.
        self.supports_images = bool(self.preset and self.preset.multimodal) or settings.multimodal
        self.estimator = TokenEstimator()
        self._model: str | None = settings.model or None
        self._window: int | None = settings.context_window or None
        self._tokenize_route: tuple | None | bool = None  # None: not probed; False: none found
        self._overhead: int | None = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> "OpenAIRuntime":
        """Asks the server what it serves: the model (unless --model names it) and the window (unless
        --context-window gives it). A server that does not answer is a clear error now, not at the first question."""
        cards = self._models()
        if self._model is None:
            if not cards:
                raise BackendError(f"{self.endpoint} serves no model.", hint="Pass --model NAME.")
            self._model = str(cards[0].get("id", ""))
        if self._window is None:
            self._window = self._discover_window(cards) or self.DEFAULT_WINDOW
        return self

    def shutdown(self) -> None:
        self._client.close()

    # -- capabilities --------------------------------------------------------------
    # Properties only report what is known: start() is what asks the server.
    @property
    def model_name(self) -> str:
        if self._model is None:
            raise BackendError("The openai runtime does not know the served model yet.", hint=_START_HINT)
        return self._model

    @property
    def context_window(self) -> int:
        if self._window is None:
            raise BackendError("The openai runtime does not know the server's window yet.", hint=_START_HINT)
        return self._window

    def image_tokens(self, width: int, height: int) -> int:
        if not self.supports_images:
            return 0
        if self.preset and self.preset.image_family:
            return self.preset.image_tokens(width, height)
        # Unknown vision model: charge as Qwen2.5-VL does (one token per 28x28 pixels).
        return qwen_vl_image_tokens(width, height)

    def template_overhead(self) -> int:
        """Learned once from a one-token request: reported prompt tokens minus the counted text."""
        if self._overhead is None:
            body = {
                "model": self.model_name,
                "messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}],
                "max_tokens": 1,
                "temperature": 0.0,
            }
            try:
                response = self._client.post("/v1/chat/completions", json=body)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            reported = (_json(response).get("usage") or {}).get("prompt_tokens") if response.status_code < 400 else None
            if isinstance(reported, int) and reported > 0:
                self._overhead = max(0, reported - self.count_tokens("a") - self.count_tokens("b"))
            else:
                self._overhead = super().template_overhead()
        return self._overhead

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        counted = self._server_count(text)
        return counted if counted is not None else self.estimator.count(text)

    # -- the generating call -----------------------------------------------------------
    def generate(self, prompt: Prompt, options: GenerateOptions) -> Iterator[Event]:
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": build_messages(prompt),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "seed": options.seed,
        }
        if options.stop:
            body["stop"] = options.stop
        if options.repeat_penalty != 1.0:  # SGLang's and vLLM's sampling parameter (not in OpenAI's own API)
            body["repetition_penalty"] = options.repeat_penalty
        state = StreamState()
        started = time.perf_counter()
        ttft = 0.0
        with _CheckedStream(self, "/v1/chat/completions", body) as response:
            try:
                for chunk in sse_payloads(response.iter_lines()):
                    text = read_chunk(chunk, state)
                    if text:
                        ttft = ttft or time.perf_counter() - started
                        yield Delta(text)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            except json.JSONDecodeError as exc:
                raise BackendError(f"{self.endpoint} sent a malformed event: {exc}.") from exc
        total = time.perf_counter() - started
        yield self._usage(prompt, state, ttft or total, total)

    # -- helpers ---------------------------------------------------------------------
    def _usage(self, prompt: Prompt, state: StreamState, ttft: float, total: float) -> Usage:
        prompt_tokens = state.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = self._count_prompt(prompt)
        elif not self._tokenize_route and not any(p.kind == "image" for p in prompt.parts):
            self.estimator.observe(self._estimate_raw(prompt), prompt_tokens)  # learn the tokenizer ratio
        completion = state.completion_tokens
        if completion is None:
            completion = self.count_tokens(state.text)
        details = {
            "usage": "reported" if state.prompt_tokens is not None else "counted",
            "cache_reported": state.cached_tokens is not None,
            "endpoint": self.endpoint,
        }
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            cached_tokens=state.cached_tokens or 0,
            ttft_s=ttft,
            total_s=total,
            finish_reason=state.finish_reason,
            details=details,
        )

    def _estimate_raw(self, prompt: Prompt) -> int:
        return estimate_tokens(prompt.system) + estimate_tokens(prompt.text_only()) + self.template_overhead()

    def _count_prompt(self, prompt: Prompt) -> int:
        """Prompt tokens when the server did not say: its tokenizer (or the estimate) plus images and template."""
        images = 0
        for part in prompt.parts:
            if part.kind == "image" and part.image_path is not None:
                images += self._image_cost(part.image_path)
        return self.count_tokens(prompt.system) + self.count_tokens(prompt.text_only()) + images + self.template_overhead()

    def _image_cost(self, path: Path) -> int:
        with Image.open(path) as img:
            return self.image_tokens(*img.size)

    def _server_count(self, text: str) -> int | None:
        routes = _TOKENIZE_ROUTES if self._tokenize_route is None else ([self._tokenize_route] if self._tokenize_route else [])
        for route in routes:
            path, make_body = route
            try:
                response = self._client.post(path, json=make_body(self.model_name, text))
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            if response.status_code >= 400:
                continue
            count = _read_count(response)
            if count is not None:
                self._tokenize_route = route
                return count
        if self._tokenize_route is None:
            self._tokenize_route = False
        return None

    def _models(self) -> list[dict[str, Any]]:
        response = self._get("/v1/models")
        if response.status_code >= 400:
            raise self._http_error(response, "/v1/models")
        return list(response.json().get("data") or [])

    def _discover_window(self, cards: list[dict[str, Any]]) -> int | None:
        """``max_model_len`` from the /v1/models cards (SGLang, vLLM), else llama.cpp's /props ``n_ctx``."""
        cards = sorted(cards, key=lambda card: card.get("id") != self._model)  # the served model's card first
        for card in cards:
            for key in ("max_model_len", "context_length", "context_window"):
                if isinstance(card.get(key), int) and card[key] > 0:
                    return card[key]
        props = self._get("/props")
        if props.status_code < 400:
            try:
                n_ctx = props.json().get("default_generation_settings", {}).get("n_ctx")
            except ValueError:
                n_ctx = None
            if isinstance(n_ctx, int) and n_ctx > 0:
                return n_ctx
        return None

    def _get(self, path: str) -> httpx.Response:
        try:
            return self._client.get(path)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: httpx.HTTPError) -> BackendError:
        if isinstance(exc, httpx.ConnectError):
            return BackendError(
                f"Cannot reach the model server at {self.endpoint} ({exc}).",
                hint="Start the server (e.g. python -m sglang.launch_server --model-path MODEL --port 30000) "
                "or correct --endpoint.",
            )
        if isinstance(exc, httpx.TimeoutException):
            return BackendError(
                f"The model server at {self.endpoint} did not answer in time ({type(exc).__name__}).",
                hint="The server may be overloaded or still loading the model; try again, or use a smaller context.",
            )
        return BackendError(f"The connection to the model server at {self.endpoint} failed: {exc}.")

    def _http_error(self, response: httpx.Response, path: str) -> BackendError:
        detail = _error_detail(response)
        hint = "Check the server's log."
        if response.status_code in (401, 403):
            hint = "Pass the server's key with --api-key (or QUIRE_API_KEY)."
        elif response.status_code == 404:
            hint = "Check --endpoint (the server root, e.g. http://HOST:30000) and --model (a name from /v1/models)."
        elif response.status_code in (400, 413, 422):
            hint = "The request was refused; if the prompt is too long, use the focus strategy or a larger window."
        return BackendError(f"{self.endpoint}{path} answered HTTP {response.status_code}: {detail}", hint=hint)


class _CheckedStream:
    """A streamed POST that turns transport failures and HTTP errors into BackendError."""

    def __init__(self, runtime: OpenAIRuntime, path: str, body: Any) -> None:
        self.runtime, self.path = runtime, path
        self._cm = runtime._client.stream("POST", path, json=body)

    def __enter__(self) -> httpx.Response:
        try:
            response = self._cm.__enter__()
        except httpx.HTTPError as exc:
            raise self.runtime._unreachable(exc) from exc
        if response.status_code >= 400:
            response.read()
            error = self.runtime._http_error(response, self.path)
            self._cm.__exit__(None, None, None)
            raise error
        return response

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _read_count(response: httpx.Response) -> int | None:
    data = _json(response)
    if isinstance(data.get("count"), int):
        return data["count"]
    tokens = data.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


def _error_detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    error = data.get("error", data.get("detail", data)) if isinstance(data, dict) else data
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error)[:300]
