"""Image extraction on corpus charts and screenshots and on images built here with Pillow."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from core.errors import CorruptFile, EmptyFile, TooLarge
from ingest.base import registry
from ingest.image import MAX_SIDE, THUMB_SIDE, extract_image


def _stored(blobs, sha: str) -> Image.Image:
    return Image.open(io.BytesIO(blobs.read(sha)))


def _no_ocr(ctx):
    ctx.settings.ocr = False  # until Settings has an `ocr` field; the extractor reads it with getattr
    return ctx


def test_exif_orientation_is_applied(tmp_path, ctx, blobs):
    image = Image.new("RGB", (80, 40), "white")
    ImageDraw.Draw(image).rectangle((0, 0, 19, 39), fill="red")  # red band on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    path = tmp_path / "photo.jpg"
    image.save(path, exif=exif, quality=95)
    doc = extract_image(path, _no_ocr(ctx))
    assert doc.kind == "image"
    assert (doc.meta["width"], doc.meta["height"]) == (40, 80)
    stored = _stored(blobs, doc.meta["image"]).convert("RGB")
    assert stored.size == (40, 80)
    red, green, blue = stored.getpixel((20, 5))  # the red band is now along the top
    assert red > 200 and green < 80 and blue < 80
    assert stored.getexif().get(0x0112, 1) == 1


def test_chart_from_corpus_is_one_image_segment_with_thumbnail(corpus, ctx, blobs):
    path = next(iter(sorted((corpus / "images/charts").rglob("*.png"))))
    doc = extract_image(path, _no_ocr(ctx))
    first = doc.segments[0]
    with Image.open(path) as original:
        size = original.size
    assert first.kind == "image" and first.text == f"[image: {path.name}, {size[0]}x{size[1]}]"
    assert first.locator.path == path.name and first.image_sha == doc.meta["image"]
    assert (first.meta["width"], first.meta["height"]) == size
    assert max(_stored(blobs, doc.meta["thumb"]).size) <= THUMB_SIDE
    assert doc.meta["warnings"] == ["OCR is turned off: the image was kept as an image only."]


def test_screenshot_is_read_by_ocr(corpus, ctx):
    image = Image.new("RGB", (900, 260), "white")
    font = ImageFont.load_default(size=44)
    draw = ImageDraw.Draw(image)
    draw.text((30, 30), "Invoice total 4512 EUR", fill="black", font=font)
    draw.text((30, 150), "Payment due March", fill="black", font=font)
    path = tmp = Path(ctx.settings.home) / "shot.png"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    doc = extract_image(path, ctx)
    texts = [s for s in doc.segments if s.kind == "text"]
    joined = " ".join(s.text for s in texts).lower()
    assert "invoice" in joined and "4512" in joined and "payment" in joined
    assert doc.meta["text_layer"] == "ocr"
    for seg in texts:
        x0, y0, x1, y1 = seg.locator.bbox
        assert 0 <= x0 < x1 <= 900 and 0 <= y0 < y1 <= 260 and seg.meta == {"ocr": True}


@pytest.mark.parametrize("angle", [90, 270])
def test_a_photo_taken_sideways_is_read_upright(ctx, angle):
    lines = ["Invoice total 4512 EUR", "Payment due in March", "Account 889 Ghent", "Thank you for your order"]
    page = Image.new("RGB", (900, 90 + 110 * len(lines)), "white")
    draw = ImageDraw.Draw(page)
    for n, line in enumerate(lines):
        draw.text((30, 40 + 110 * n), line, fill="black", font=ImageFont.load_default(size=44))
    path = Path(ctx.settings.home) / f"sideways{angle}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.rotate(angle, expand=True).save(path)  # the image as the camera stored it: text running up or down
    doc = extract_image(path, ctx)
    texts = [s for s in doc.segments if s.kind == "text"]
    joined = " ".join(s.text for s in texts).lower()
    assert joined.index("invoice") < joined.index("payment") < joined.index("thank")  # in reading order
    assert {s.meta.get("turned") for s in texts} == {360 - angle}  # turned back anticlockwise
    width, height = page.height, page.width  # the stored image is turned: its sides swap
    for seg in texts:
        x0, y0, x1, y1 = seg.locator.bbox
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height and (y1 - y0) > (x1 - x0)  # boxes stand upright


@pytest.mark.parametrize("fmt,suffix", [("GIF", ".gif"), ("WEBP", ".webp"), ("TIFF", ".tif"), ("BMP", ".bmp")])
def test_other_formats_are_stored_as_png(tmp_path, ctx, blobs, fmt, suffix):
    path = tmp_path / ("pic" + suffix)
    frames = [Image.new("RGB", (64, 48), colour) for colour in ("blue", "yellow")]
    if fmt == "GIF":
        frames[0].save(path, save_all=True, append_images=frames[1:])
    else:
        frames[0].save(path, format=fmt)
    assert registry.find(path) is extract_image
    doc = extract_image(path, _no_ocr(ctx))
    stored = _stored(blobs, doc.meta["image"])
    assert stored.format == "PNG" and stored.size == (64, 48)
    assert stored.convert("RGB").getpixel((10, 10))[2] > 200  # the first frame (blue)


def test_big_images_are_downsampled(tmp_path, ctx, blobs):
    path = tmp_path / "panorama.png"
    Image.new("L", (MAX_SIDE * 2, 300), 200).save(path)
    doc = extract_image(path, _no_ocr(ctx))
    assert (doc.meta["width"], doc.meta["height"]) == (MAX_SIDE, 150)
    assert doc.meta["original_size"] == [MAX_SIDE * 2, 300]
    assert _stored(blobs, doc.meta["image"]).size == (MAX_SIDE, 150)


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(tmp_path, ctx):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(60_000, 60_000))  # 3.6 gigapixels declared in a few bytes
    with pytest.raises(TooLarge, match="bomb.png"):
        extract_image(path, _no_ocr(ctx))


def test_corrupt_and_empty_images(tmp_path, ctx):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 30)
    with pytest.raises(CorruptFile, match="junk.png"):
        extract_image(junk, _no_ocr(ctx))
    good = io.BytesIO()
    Image.new("RGB", (300, 300), "green").save(good, format="JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.getvalue()[:400])
    with pytest.raises(CorruptFile, match="cut.jpg"):
        extract_image(truncated, _no_ocr(ctx))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(EmptyFile):
        extract_image(empty, ctx)


def test_unchanged_png_is_stored_byte_for_byte(tmp_path, ctx, blobs):
    path = tmp_path / "plain.png"
    Image.new("RGB", (120, 90), "orange").save(path)
    doc = extract_image(path, _no_ocr(ctx))
    assert blobs.read(doc.meta["image"]) == path.read_bytes() and "original_size" not in doc.meta
