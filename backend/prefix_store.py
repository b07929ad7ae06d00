"""A bounded on-disk store of llama.cpp KV states, keyed by the corpus they hold.

The key is a hash of the model, the window and the exact prompt prefix (system
text and corpus). A changed document changes the key, so a stale state can
never be used; least recently used files go first when the store is over its
size bound.

A state is written to a temporary file first (``.KEY.PID.tmp``) and renamed
into place, so a kill mid-save leaves only the temporary: it counts against
the bound while it exists, and the next store opened on the folder removes it
once the process that wrote it is gone.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class PrefixStore:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.stale_removed, self.stale_bytes = self.remove_stale()

    def remove_stale(self) -> tuple[int, int]:
        """Delete the temporaries of saves that never finished (their writer is dead); (files, bytes)."""
        count = size = 0
        for tmp in self.root.glob(".*.tmp"):
            if _writer_alive(tmp):
                continue
            try:
                nbytes = tmp.stat().st_size
                tmp.unlink()
            except FileNotFoundError:
                continue
            count, size = count + 1, size + nbytes
        if count:
            log.info("removed %d unfinished KV-state file(s) (%.1f MiB) from %s", count, size / 2**20, self.root)
        return count, size

    @staticmethod
    def key(*parts: str) -> str:
        h = hashlib.sha256()
        for part in parts:
            h.update(part.encode("utf-8", "replace"))
            h.update(b"\0")
        return h.hexdigest()[:40]

    @staticmethod
    def file(root: Path, key: str) -> Path:
        """Where the state of ``key`` lives under ``root`` (whether or not it is there)."""
        return Path(root) / f"{key}.llstate"

    def path(self, key: str) -> Path:
        return self.file(self.root, key)

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
        removed, total = [], self._temporary_bytes()  # saves in progress take room first
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
        """Bytes on disk: the states, and the temporaries of saves in progress."""
        return sum(f.stat().st_size for f in self.root.glob("*.llstate")) + self._temporary_bytes()

    def _temporary_bytes(self) -> int:
        total = 0
        for tmp in self.root.glob(".*.tmp"):
            try:
                total += tmp.stat().st_size
            except FileNotFoundError:  # committed or removed meanwhile
                continue
        return total


def _writer_alive(tmp: Path) -> bool:
    """Whether the process named in ``.KEY.PID.tmp`` still runs (a name without a pid: assume not)."""
    try:
        pid = int(tmp.name.rsplit(".", 2)[-2])
    except (ValueError, IndexError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
