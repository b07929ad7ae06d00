"""The one interface every LLM runtime implements.

A runtime declares what it can do (``context_window``, ``supports_images``,
``prefix_cache``), counts tokens with the served model's own tokenizer, and
implements one generating call, :meth:`Runtime.generate`, which streams
:class:`Delta` events and ends with one :class:`Usage`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, Literal

from PIL import Image

from core.errors import BackendError
from core.settings import DEFAULT_WINDOW, Settings
from core.tokens import estimate_tokens


@dataclass
class Part:
    """A piece of the user turn: text, or an image file."""

    kind: Literal["text", "image"]
    text: str = ""
    image_path: Path | None = None

    def file(self) -> Path:
        """The image's file; an image part without one is a bug in whatever built the prompt."""
        if self.image_path is None:
            raise BackendError("An image part has no file.", hint="This is a bug in the context builder.")
        return self.image_path


@dataclass
class Prompt:
    """System instructions plus the user turn as ordered parts (corpus first, question last)."""

    system: str
    parts: list[Part]

    def text_only(self) -> str:
        return "".join(p.text for p in self.parts if p.kind == "text")


@dataclass
class GenerateOptions:
    max_tokens: int = 384
    temperature: float = 0.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    repeat_penalty: float = 1.0  # 1.0: none; runtimes pass it to their sampler (llama.cpp repeat_penalty, SGLang repetition_penalty)


@dataclass
class Delta:
    text: str


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from a prefix/KV cache
    ttft_s: float = 0.0
    total_s: float = 0.0
    finish_reason: str = ""
    details: dict = field(default_factory=dict)  # runtime-specific facts, e.g. where the cache came from


Event = Delta | Usage


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def final_usage(events: Iterable[Event]) -> Usage:
    """The Usage that ends a stream (its text is not wanted)."""
    usage = Usage()
    for event in events:
        if isinstance(event, Usage):
            usage = event
    return usage


class Runtime(abc.ABC):
    """Base class of every runtime. Subclasses set ``name`` and implement ``generate``."""

    name: ClassVar[str] = ""
    supports_images: bool = False  # may be set per instance: it can depend on the model
    DEFAULT_WINDOW: ClassVar[int] = DEFAULT_WINDOW  # the window before the runtime has started and can say
    prefix_cache: ClassVar[bool] = False
    default_repeat_penalty: ClassVar[float] = 1.0  # what suits the runtime's model when --repeat-penalty is 0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- capabilities ----------------------------------------------------
    @property
    @abc.abstractmethod
    def context_window(self) -> int:
        """Tokens the model can attend to, prompt and answer together."""

    @property
    def model_name(self) -> str:
        return self.settings.model

    def count_tokens(self, text: str) -> int:
        """Exact where the runtime has its tokenizer; subclasses override."""
        return estimate_tokens(text)

    def image_tokens(self, width: int, height: int) -> int:
        """What one image costs in this model's context (0 when images are not taken)."""
        return 0

    def count_prompt(self, prompt: "Prompt") -> int:
        """Tokens of a whole prompt as this runtime will send it (exact where the runtime can render it)."""
        total = self.count_tokens(prompt.system) + self.template_overhead()
        for part in prompt.parts:
            if part.kind == "text":
                total += self.count_tokens(part.text)
            elif part.image_path is not None:
                total += self.image_tokens(*_image_size(part.image_path))
        return total

    def template_overhead(self) -> int:
        """Tokens the chat template adds around system and user text."""
        return 32

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "Runtime":
        return self

    def shutdown(self) -> None:
        pass

    def cancel(self) -> None:
        """Stop the generation now running, from any thread (Stop in the UI); runtimes that can, override."""

    def __enter__(self) -> "Runtime":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- the one generating call --------------------------------------------
    @abc.abstractmethod
    def generate(self, prompt: Prompt, options: GenerateOptions) -> Iterator[Event]:
        """Stream the answer as Delta events, then exactly one Usage."""

    # -- preparing a prefix ahead of the question ----------------------------
    def prefill(self, prompt: Prompt) -> Usage:
        """Compute ``prompt`` (a shard, and the text its questions start with: ``Shard.prefix``) into the runtime's
        prefix cache, so a later question that starts with it computes only its own tokens. Here: one answer token is generated
        and dropped, which is what a server's prefix cache (SGLang's radix cache, llama.cpp's server) keeps.
        ``finish_reason`` is "cancelled" when :meth:`cancel` stopped it; ``details["kept"]`` says whether the
        state is now kept (the embedded CPU runtime saves it to disk and overrides this)."""
        usage = final_usage(self.generate(prompt, GenerateOptions(max_tokens=1)))
        usage.details = {**usage.details, "kept": usage.finish_reason != "cancelled" and self.prefix_cache}
        return usage

    def has_prefix(self, prompt: Prompt) -> bool:
        """Whether ``prompt``'s prefix is known to be kept already (only runtimes that keep states can tell)."""
        return False
