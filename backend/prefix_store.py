"""A bounded on-disk store of llama.cpp KV states, keyed by the corpus they hold.

The key is a hash of the model, the window and the exact prompt prefix (system
text and corpus). A changed document changes the key, so a stale state can
never be used; least recently used files go first when the store is over its
size bound.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class PrefixStore:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    @staticmethod
    def key(*parts: str) -> str:
        h = hashlib.sha256()
        for part in parts:
            h.update(part.encode("utf-8", "replace"))
            h.update(b"\0")
        return h.hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.root / f"{key}.llstate"

    def get(self, key: str) -> Path | None:
        path = self.path(key)
        if not path.is_file():
            return None
        os.utime(path)  # mark as recently used
        return path

    def reserve(self, key: str) -> Path:
        """A temporary path to write a state to; :meth:`commit` makes it visible."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f".{key}.{os.getpid()}.tmp"

    def commit(self, key: str, tmp: Path) -> Path:
        final = self.path(key)
        os.replace(tmp, final)
        self.evict()
        return final

    def evict(self) -> list[Path]:
        files = sorted(self.root.glob("*.llstate"), key=lambda p: p.stat().st_mtime, reverse=True)
        removed, total = [], 0
        for f in files:
            total += f.stat().st_size
            if total > self.max_bytes:
                f.unlink(missing_ok=True)
                removed.append(f)
        return removed

    def clear(self) -> None:
        for f in self.root.glob("*.llstate"):
            f.unlink(missing_ok=True)

    def size(self) -> int:
        return sum(f.stat().st_size for f in self.root.glob("*.llstate"))
