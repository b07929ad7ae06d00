"""Named serving presets for large vision-language models.

A preset fills SGLang ``ServerArgs`` fields the user left at their defaults and says
how images are charged in the model's context (see ``backend.imagecost``). Values
follow SGLang's documentation: Llama 4 Scout is served with ``--tp 8
--context-length 1000000`` on 8 H100s, ``--chat-template llama-4`` and
``--enable-multimodal`` (docs.sglang.io, basic_usage/llama4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backend import imagecost
from core.settings import Settings


@dataclass(frozen=True)
class Preset:
    name: str
    model_path: str
    chat_template: str = ""
    multimodal: bool = False
    context_length: int = 0  # 0: the model's own config
    tp_size: int = 1
    image_family: str = ""  # a key of imagecost.FAMILIES; "" when images are not taken
    image_params: dict[str, int] = field(default_factory=dict)
    server_args: dict[str, Any] = field(default_factory=dict)  # further ServerArgs fields
    notes: str = ""

    def image_tokens(self, width: int, height: int) -> int:
        if not (self.multimodal and self.image_family):
            return 0
        return imagecost.image_tokens(self.image_family, width, height, **self.image_params)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="llama4-scout",
            model_path="meta-llama/Llama-4-Scout-17B-16E-Instruct",
            chat_template="llama-4",
            multimodal=True,
            context_length=1_000_000,
            tp_size=8,
            image_family="llama4",
            image_params={"max_patches": imagecost.LLAMA4_MAX_PATCHES},
            notes="8 x H100 (80 GB): up to 1M tokens of context; 8 x H200: up to 2.5M (SGLang docs).",
        ),
        Preset(
            name="qwen2.5-vl-7b",
            model_path="Qwen/Qwen2.5-VL-7B-Instruct",
            multimodal=True,
            context_length=0,  # 128K in the model's config
            tp_size=1,
            image_family="qwen2.5-vl",
            image_params={
                "factor": imagecost.QWEN25_FACTOR,
                "min_pixels": imagecost.QWEN25_MIN_PIXELS,
                "max_pixels": imagecost.QWEN25_MAX_PIXELS,
            },
            notes="One 80 GB GPU. Image cost: one token per 28x28 pixels after smart_resize.",
        ),
        Preset(
            name="qwen3-vl-8b",
            model_path="Qwen/Qwen3-VL-8B-Instruct",
            multimodal=True,
            tp_size=1,
            image_family="qwen3-vl",
            image_params={
                "factor": imagecost.QWEN3_FACTOR,
                "min_pixels": imagecost.QWEN3_MIN_PIXELS,
                "max_pixels": imagecost.QWEN3_MAX_PIXELS,
            },
            notes="One 80 GB GPU. Image cost: one token per 32x32 pixels after smart_resize.",
        ),
    )
}


def get(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


def for_model(model: str) -> Preset | None:
    """The preset whose model this is (a hub id, a local directory named after it, or a served name)."""
    if not model:
        return None
    key = model.rstrip("/").lower()
    for preset in PRESETS.values():
        repo_name = preset.model_path.lower().split("/")[-1]
        if key == preset.model_path.lower() or key.endswith("/" + repo_name) or key == repo_name:
            return preset
    return None


def resolve(settings: Settings) -> Preset | None:
    """The preset named by ``settings.preset``, else the one matching ``settings.model``."""
    if settings.preset:
        return get(settings.preset)
    return for_model(settings.model)
