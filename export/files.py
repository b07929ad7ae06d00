"""Safe names and atomic writes for exported files. Document names are untrusted."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from core.errors import QuireError

MAX_STEM = 80  # characters
MAX_STEM_BYTES = 160  # UTF-8 bytes, well under the usual 255-byte name limit
_UNSAFE = re.compile(r"[^\w.\-]+", re.UNICODE)


class ExportError(QuireError):
    """A report or annotated copy could not be written."""


def safe_stem(name: str, fallback: str = "document") -> str:
    """A file-name stem from an untrusted name: no separators, no leading dots, no ``..``, bounded length."""
    base = re.split(r"[\\/]", name or "")[-1]
    stem, ext = os.path.splitext(base)
    stem = stem if ext.lower() in {".pdf", ".md", ".html", ".htm", ".txt"} else base
    stem = _UNSAFE.sub("_", stem)
    stem = re.sub(r"\.{2,}", ".", stem).strip("._-")
    stem = stem[:MAX_STEM]
    while len(stem.encode("utf-8")) > MAX_STEM_BYTES:
        stem = stem[:-1]
    return stem.rstrip("._-") or fallback


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing anything that would resolve outside ``folder``."""
    root = Path(folder).resolve()
    target = (root / name).resolve()
    if target.parent != root:
        raise ExportError(f"Refusing to write {name!r} outside {root}.", hint="Rename the document and export again.")
    return target


def unique(path: Path, taken: set[Path]) -> Path:
    """``path``, or ``stem-2.ext``, ``stem-3.ext``... if an earlier file of this export took it."""
    candidate, n = path, 1
    while candidate in taken:
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    taken.add(candidate)
    return candidate


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
