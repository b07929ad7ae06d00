"""Content-addressed files (page images, original uploads) under the data directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha: str, suffix: str = "") -> Path:
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"not a sha256 blob id: {sha!r}")
        return self.root / sha[:2] / (sha + suffix)

    def put(self, data: bytes, suffix: str = "") -> str:
        sha = hashlib.sha256(data).hexdigest()
        self._write(self.path(sha, suffix), lambda fh: fh.write(data))
        return sha

    def put_file(self, source: Path, sha: str, suffix: str = "") -> str:
        """Keep a copy of the file ``source``, whose sha256 the caller has computed already (the pipeline hashes
        every input once, to find duplicates), without reading it into memory."""
        with open(source, "rb") as src:
            self._write(self.path(sha, suffix), lambda fh: shutil.copyfileobj(src, fh, 1 << 20))
        return sha

    @staticmethod
    def _write(target: Path, write: Callable[[BinaryIO], object]) -> None:
        if target.exists():
            return  # content-addressed: the same bytes are there already
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, target)  # atomic: a reader never sees half a blob

    def find(self, sha: str) -> Path | None:
        folder = self.root / sha[:2]
        if not folder.is_dir():
            return None
        for candidate in folder.glob(sha + "*"):
            return candidate
        return None

    def read(self, sha: str) -> bytes:
        found = self.find(sha)
        if found is None:
            raise FileNotFoundError(sha)
        return found.read_bytes()
