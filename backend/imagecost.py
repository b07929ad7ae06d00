"""What one image costs in a vision model's context, per model family. Pure functions.

Llama 4 (Scout, Maverick)
    Follows Hugging Face transformers ``models/llama4/image_processing_llama4_fast.py``
    (``find_supported_resolutions``, ``get_best_fit``; defaults ``size`` 336x336,
    ``max_patches`` 16, ``resize_to_max_canvas`` False) and ``processing_llama4.py``
    (``Llama4Processor._prompt_split_image``), which SGLang's ``Mllama4ImageProcessor``
    (sglang/srt/multimodal/processors/mllama4.py) calls. The image is placed on the
    best-fitting canvas of ``rows x cols`` 336-px tiles with ``rows * cols <= max_patches``;
    every tile is 144 tokens ((336/14)^2 patches / 4 for the pixel shuffle). The prompt
    carries, for an image of more than one tile, each tile's 144 ``<|patch|>`` tokens, a
    ``<|tile_x_separator|>`` between tiles of a row and a ``<|tile_y_separator|>`` after
    each row, then a global tile (``<|image|>`` + 144 patches); a one-tile image is only
    the global tile. ``<|image_start|>`` and ``<|image_end|>`` wrap it all.

Qwen2.5-VL / Qwen3-VL
    ``smart_resize`` as in SGLang's sglang/srt/multimodal/processors/qwen_vl.py and the
    Qwen2-VL image processor in transformers: both sides rounded to multiples of
    ``factor`` (patch size x spatial merge: 14*2 = 28 for Qwen2/2.5-VL, 16*2 = 32 for
    Qwen3-VL), the area kept within ``[min_pixels, max_pixels]``; then one token per
    ``factor x factor`` cell, plus ``<|vision_start|>`` and ``<|vision_end|>``.
"""

from __future__ import annotations

import math
from fractions import Fraction

LLAMA4_TILE = 336
LLAMA4_MAX_PATCHES = 16
LLAMA4_TOKENS_PER_TILE = 144  # (336 // 14) ** 2 // 4

QWEN25_FACTOR = 28
QWEN25_MIN_PIXELS = 4 * 28 * 28  # 3136, sglang qwen_vl.py MIN_PIXELS
QWEN25_MAX_PIXELS = 16384 * 28 * 28  # 12845056, sglang SGLANG_IMAGE_MAX_PIXELS default
QWEN3_FACTOR = 32
QWEN3_MIN_PIXELS = 65536
QWEN3_MAX_PIXELS = 16777216
QWEN_MAX_RATIO = 200


# -- Llama 4 ------------------------------------------------------------------
def _factors(n: int) -> list[int]:
    return sorted({d for i in range(1, math.isqrt(n) + 1) if n % i == 0 for d in (i, n // i)})


def llama4_canvases(max_patches: int = LLAMA4_MAX_PATCHES) -> list[tuple[int, int]]:
    """Every (rows, cols) tile grid with at most ``max_patches`` tiles."""
    return [(f, n // f) for n in range(max_patches, 0, -1) for f in _factors(n)]


def llama4_tiles(width: int, height: int, max_patches: int = LLAMA4_MAX_PATCHES) -> tuple[int, int]:
    """The (rows, cols) grid ``get_best_fit`` picks for an image of ``width x height`` pixels.

    Scales are exact fractions here (transformers uses float tensors; the choice is the same).
    """
    _check_size(width, height)
    scored = []
    for rows, cols in llama4_canvases(max_patches):
        scale = min(Fraction(rows * LLAMA4_TILE, height), Fraction(cols * LLAMA4_TILE, width))
        scored.append((scale, rows * cols, rows, cols))
    upscales = [s for s in scored if s[0] >= 1]
    chosen_scale = min(s[0] for s in upscales) if upscales else max(s[0] for s in scored)
    _, _, rows, cols = min(s for s in scored if s[0] == chosen_scale)  # smallest area wins ties
    return rows, cols


def llama4_image_tokens(width: int, height: int, max_patches: int = LLAMA4_MAX_PATCHES) -> int:
    rows, cols = llama4_tiles(width, height, max_patches)
    per_tile = LLAMA4_TOKENS_PER_TILE
    global_tile = 1 + per_tile  # <|image|> + patches
    wrappers = 2  # <|image_start|>, <|image_end|>
    if rows * cols == 1:
        return wrappers + global_tile
    # per row: cols tiles, cols-1 x separators, one y separator -> cols * (per_tile + 1)
    return wrappers + rows * cols * (per_tile + 1) + global_tile


# -- Qwen-VL ------------------------------------------------------------------
def qwen_smart_resize(
    width: int,
    height: int,
    factor: int = QWEN25_FACTOR,
    min_pixels: int = QWEN25_MIN_PIXELS,
    max_pixels: int = QWEN25_MAX_PIXELS,
) -> tuple[int, int]:
    """(new_width, new_height), both multiples of ``factor``, area within the bounds."""
    _check_size(width, height)
    if max(height, width) / min(height, width) > QWEN_MAX_RATIO:
        raise ValueError(f"image aspect ratio above {QWEN_MAX_RATIO}: {width}x{height}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return w_bar, h_bar


def qwen_vl_image_tokens(
    width: int,
    height: int,
    factor: int = QWEN25_FACTOR,
    min_pixels: int = QWEN25_MIN_PIXELS,
    max_pixels: int = QWEN25_MAX_PIXELS,
) -> int:
    w_bar, h_bar = qwen_smart_resize(width, height, factor, min_pixels, max_pixels)
    return (h_bar // factor) * (w_bar // factor) + 2


# -- dispatch -----------------------------------------------------------------
FAMILIES = {
    "llama4": llama4_image_tokens,
    "qwen2.5-vl": qwen_vl_image_tokens,
    "qwen3-vl": lambda w, h, **kw: qwen_vl_image_tokens(
        w, h, **{"factor": QWEN3_FACTOR, "min_pixels": QWEN3_MIN_PIXELS, "max_pixels": QWEN3_MAX_PIXELS, **kw}
    ),
}


def image_tokens(family: str, width: int, height: int, **params: int) -> int:
    """Tokens one ``width x height`` image costs for a model ``family`` (see ``FAMILIES``)."""
    try:
        rule = FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown image-cost family {family!r}; known: {', '.join(FAMILIES)}") from None
    return rule(width, height, **params)


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, not {width}x{height}")
