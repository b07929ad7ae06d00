"""Images: one image segment (the picture, upright, at most ``MAX_SIDE`` pixels), plus OCR text.

The stored image has EXIF orientation applied and is downsampled when its long
side exceeds ``MAX_SIDE``; OCR boxes (``Locator.bbox``) and ``meta["width"]``
/ ``meta["height"]`` are in the pixels of that stored image. Decompression
bombs are refused before any pixel is decoded (JPEGs are decoded at a reduced
scale instead, which costs no more memory than a normal image).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.document import Locator, ParsedDocument, Segment
from core.errors import CorruptFile, EmptyFile, TooLarge
from ingest import ocr
from ingest.base import ExtractContext, Progress, registry

MAX_SIDE = 4096  # stored images are downsampled to this long side
MAX_PIXELS = 100_000_000  # refuse images with more pixels than this (a JPEG is decoded reduced instead)
THUMB_SIDE = 256
OCR_MAX_SIDE = 2700  # OCR reads a copy at most this large
SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".gif", ".tif", ".tiff", ".bmp", ".dib",
            ".ico", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k", ".pcx", ".sgi", ".icns")
KEEP_AS_IS = ("PNG", "JPEG")
ORIENTATION = 0x0112  # the EXIF tag  # formats stored byte for byte when nothing had to change


@registry.register(*SUFFIXES)
def extract_image(path: Path, ctx: ExtractContext) -> ParsedDocument:
    name = ctx.display_name or path.name
    if path.stat().st_size == 0:
        raise EmptyFile(name, "is empty.", hint="Nothing to read: check that the upload finished.")
    image, original, fmt, changed = load(path, name, ctx.settings.max_image_megapixels * 1_000_000)
    width, height = image.size
    if changed or fmt not in KEEP_AS_IS:
        data, suffix = encode(image, fmt)
    else:
        data, suffix = path.read_bytes(), ".jpg" if fmt == "JPEG" else ".png"
    sha = ctx.blobs.put(data, suffix=suffix)
    thumb = ctx.blobs.put(*encode(_thumbnail(image), fmt))
    caption = f"[image: {name}, {width}x{height}]"
    segments = [Segment("image", caption, Locator(path=name), tokens=ctx.count_tokens(caption), image_sha=sha,
                        meta={"width": width, "height": height})]
    meta = {"width": width, "height": height, "image": sha, "thumb": thumb, "format": fmt}
    if original != (width, height):
        meta["original_size"] = list(original)
    engine, why_not = ocr.for_settings(ctx.settings)
    if engine is None:
        meta["warnings"] = [why_not.format(what="the image was")]
    else:
        segments += _ocr_segments(image, name, engine, ctx)
        meta["text_layer"] = "ocr" if len(segments) > 1 else "none"
    ctx.progress(Progress("page", name, 1, 1))
    return ParsedDocument(name=name, kind="image", segments=segments, pages=0, meta=meta)


def load(path: Path, name: str, max_pixels: int | None = None) -> tuple[Image.Image, tuple[int, int], str, bool]:
    """The first frame, upright, RGB/RGBA/L, at most ``MAX_SIDE``; with its original size, format, and
    whether anything changed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt, original = im.format or "PNG", im.size
                _check_size(im, name, max_pixels)
                im.seek(0)
                turned = im.getexif().get(ORIENTATION, 1) not in (0, 1)
                upright = ImageOps.exif_transpose(im) if turned else im
                upright.load()
                out = _normal_mode(upright)
                changed = turned or out is not upright or out.size != original
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(name, "has too many pixels to decode safely.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptFile(name, "cannot be read as an image.",
                          hint="The file is damaged or not an image: open and re-save it, then add it again.") from exc
    if max(out.size) > MAX_SIDE:
        out.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        changed = True
    return out, original, fmt, changed


def _check_size(im: Image.Image, name: str, max_pixels: int | None = None) -> None:
    max_pixels = max_pixels or MAX_PIXELS
    width, height = im.size
    if width * height <= max_pixels:
        return
    if im.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale: memory stays bounded
        im.draft(im.mode if im.mode in ("RGB", "L") else "RGB", (MAX_SIDE, MAX_SIDE))
        if im.size[0] * im.size[1] <= max_pixels:
            return
    raise _too_large(name, f"is {width}x{height} pixels, over the {max_pixels // 1_000_000} megapixel limit.")


def _too_large(name: str, what: str) -> TooLarge:
    return TooLarge(name, what, hint="Scale it down (or crop it) and add it again.")


def _normal_mode(im: Image.Image) -> Image.Image:
    if im.mode in ("RGB", "RGBA", "L"):
        return im
    if im.mode in ("LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        return im.convert("RGBA")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / float greyscale: scale into 8 bits
        return im.convert("I").point(lambda v: v / 256).convert("L")
    return im.convert("RGB")


def encode(im: Image.Image, fmt: str) -> tuple[bytes, str]:
    """JPEG for photographs that came as JPEG (no alpha), PNG for everything else."""
    buf = io.BytesIO()
    if fmt == "JPEG" and im.mode in ("RGB", "L"):
        im.save(buf, format="JPEG", quality=90)
        return buf.getvalue(), ".jpg"
    im.save(buf, format="PNG")
    return buf.getvalue(), ".png"


def _thumbnail(im: Image.Image) -> Image.Image:
    small = im.copy()
    small.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return small


def _ocr_segments(image: Image.Image, name: str, engine: ocr.OcrEngine, ctx: ExtractContext) -> list[Segment]:
    grey = image.convert("L")
    scale = 1.0
    if max(grey.size) > OCR_MAX_SIDE:
        scale = max(grey.size) / OCR_MAX_SIDE
        grey = grey.resize((round(grey.width / scale), round(grey.height / scale)), Image.Resampling.LANCZOS)
    pieces = ocr.ocr_pieces(engine.read(np.asarray(grey)), scale=scale)
    out = []
    for piece in pieces:
        text = piece.text.strip()
        if text:
            box = tuple(round(min(max(v, 0.0), limit), 1) for v, limit in zip(piece.box, (image.width, image.height) * 2))
            meta = {"ocr": True, **({"turned": piece.meta["turned"]} if piece.meta.get("turned") else {})}
            out.append(Segment("text", text, Locator(path=name, bbox=box), tokens=ctx.count_tokens(text), meta=meta))
    return out
