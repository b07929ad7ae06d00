"""Image token costs, checked against cases worked out by hand from the reference algorithms."""

from __future__ import annotations

import pytest

from backend.imagecost import (
    image_tokens,
    llama4_canvases,
    llama4_image_tokens,
    llama4_tiles,
    qwen_smart_resize,
    qwen_vl_image_tokens,
)

# Llama 4: a tile is 336 px; scale(rows, cols) = min(rows*336/height, cols*336/width).
# get_best_fit takes the smallest scale >= 1 if any, else the largest scale; ties go to
# the smallest canvas. Tokens: 1 tile -> 2 + 1 + 144 = 147;
# n > 1 tiles -> 2 + n*(144 + 1) + 1 + 144 = 145n + 147.


def test_llama4_canvases_are_all_grids_up_to_max_patches():
    grids = llama4_canvases(16)
    assert (1, 1) in grids and (4, 4) in grids and (1, 16) in grids and (16, 1) in grids
    assert (3, 6) not in grids  # 18 tiles
    assert all(r * c <= 16 for r, c in grids) and len(grids) == len(set(grids)) == 50


@pytest.mark.parametrize(
    ("width", "height", "grid", "tokens"),
    [
        # exactly one tile: (1,1) scale 1; (1,2), (2,1) also 1 but bigger -> (1,1); 147
        (336, 336, (1, 1), 147),
        # small 200x100: (1,1) = min(3.36, 1.68) = 1.68, the smallest upscale -> one tile
        (200, 100, (1, 1), 147),
        # portrait 336x672 (w x h): (2,1) = min(2*336/672, 336/336) = 1 -> 2 tiles: 145*2 + 147 = 437
        (336, 672, (2, 1), 437),
        # a 110-dpi letter page, 935x1210: rows >= 4 (4*336/1210 = 1.11), cols >= 3 (3*336/935 = 1.078);
        # (4,3) -> 1.078 is the smallest upscale (5,3 ties, larger) -> 12 tiles: 145*12 + 147 = 1887
        (935, 1210, (4, 3), 1887),
        # wide 1600x400: rows >= 2 (1.68), cols >= 5 (1.05); (2,5) -> 1.05 -> 10 tiles: 1597
        (1600, 400, (2, 5), 1597),
        # large 4000x3000, no upscale possible: min(0.112 r, 0.084 c) is largest (0.336) at
        # (3,4), (4,4), (3,5) -> smallest (3,4) -> 12 tiles: 1887
        (4000, 3000, (3, 4), 1887),
    ],
)
def test_llama4_known_cases(width, height, grid, tokens):
    assert llama4_tiles(width, height) == grid
    assert llama4_image_tokens(width, height) == tokens


def test_llama4_max_patches_caps_the_grid():
    # With at most 4 tiles the letter page fits (2,2): min(2*336/1210, 2*336/935) = 0.555 is the largest downscale
    assert llama4_tiles(935, 1210, max_patches=4) == (2, 2)
    assert llama4_image_tokens(935, 1210, max_patches=4) == 145 * 4 + 147


# Qwen2.5-VL: factor 28, min_pixels 3136, max_pixels 12845056 (SGLang's defaults).


@pytest.mark.parametrize(
    ("width", "height", "resized", "tokens"),
    [
        # 1000x700: h = round(25.0)*28 = 700, w = round(35.71)*28 = 1008; 705600 px is in bounds;
        # 25 * 36 = 900 (+2) = 902
        (1000, 700, (1008, 700), 902),
        # 56x56 is exactly min_pixels: 2*2 = 4 (+2) = 6
        (56, 56, (56, 56), 6),
        # 30x20: rounds to 28x28 = 784 < 3136 -> beta = sqrt(3136/600) = 2.286;
        # h = ceil(20*2.286/28)*28 = 56, w = ceil(30*2.286/28)*28 = 84; 2*3 (+2) = 8
        (30, 20, (84, 56), 8),
        # 8000x6000: 8008x5992 is over max -> beta = sqrt(48e6/12845056) = 1.933;
        # h = floor(6000/1.933/28)*28 = 110*28 = 3080, w = floor(8000/1.933/28)*28 = 147*28 = 4116;
        # 110*147 = 16170 (+2) = 16172
        (8000, 6000, (4116, 3080), 16172),
    ],
)
def test_qwen25_vl_known_cases(width, height, resized, tokens):
    assert qwen_smart_resize(width, height) == resized
    assert qwen_vl_image_tokens(width, height) == tokens


def test_qwen_max_pixels_bounds_the_cost():
    # Capped at 1280 cells of 28x28 (a common serving setting), a huge page costs at most 1280 + 2
    cost = qwen_vl_image_tokens(8000, 6000, max_pixels=1280 * 28 * 28)
    assert 1200 < cost <= 1282


def test_qwen3_vl_uses_32px_cells():
    # 1000x700 with factor 32: h = round(21.875)*32 = 704, w = round(31.25)*32 = 992 -> 22*31 (+2) = 684
    assert image_tokens("qwen3-vl", 1000, 700) == 684


def test_dispatch_and_bad_input():
    assert image_tokens("llama4", 935, 1210) == 1887
    assert image_tokens("qwen2.5-vl", 1000, 700) == 902
    with pytest.raises(ValueError, match="unknown image-cost family"):
        image_tokens("gpt-9", 10, 10)
    with pytest.raises(ValueError, match="positive"):
        llama4_tiles(0, 10)
    with pytest.raises(ValueError, match="aspect ratio"):
        qwen_smart_resize(10_000, 20)
