"""The ingestion pipeline: files and folders in, stored documents out.

For each input: refuse what cannot be read with a message naming the file,
skip what the database already holds (by sha256), run the extractor, keep the
original bytes as a content-addressed blob, and write the document with all
its segments in one transaction. One bad file never stops the batch.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ingest.base import ExtractContext, Progress, registry
from quire.errors import EmptyFile, IngestError, QuireError, TooLarge, UnsupportedFile
from quire.settings import Settings
from storage import repo
from storage.blobs import BlobStore
from storage.db import Database

BUILTIN_EXTRACTORS = ("ingest.pdf", "ingest.image", "ingest.text", "ingest.code")
_loaded = False


def load_extractors() -> None:
    """Import the built-in extractor modules, which register themselves with ``registry``."""
    global _loaded
    if not _loaded:
        for name in BUILTIN_EXTRACTORS:
            importlib.import_module(name)
        _loaded = True


@dataclass
class IngestResult:
    name: str
    status: str  # added | duplicate | error | cancelled
    document_id: int | None = None
    tokens: int = 0
    pages: int = 0
    segments: int = 0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("added", "duplicate")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


_MAGIC = (
    (b"%PDF", ".pdf"),
    (b"\x89PNG", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF8", ".gif"),
    (b"PK\x03\x04", ".zip"),
    (b"\x1f\x8b", ".tar.gz"),
    (b"RIFF", ".webp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)


def sniff_suffix(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(1024)
    for magic, suffix in _MAGIC:
        if head.startswith(magic):
            return suffix
    if b"%PDF-" in head:  # PDFs with junk before the header still open
        return ".pdf"
    return None


class Ingestor:
    """Runs the pipeline for one session."""

    def __init__(self, settings: Settings, db: Database, blobs: BlobStore) -> None:
        self.settings, self.db, self.blobs = settings, db, blobs
        load_extractors()

    def ingest(
        self,
        session_id: int,
        paths: Iterable[Path | str],
        *,
        passwords: dict[str, str] | str | None = None,
        progress: Callable[[Progress], None] = lambda e: None,
        cancelled: Callable[[], bool] = lambda: False,
        names: dict[str, str] | None = None,
    ) -> list[IngestResult]:
        paths = [Path(p) for p in paths]
        results: list[IngestResult] = []
        for index, path in enumerate(paths):
            name = (names or {}).get(str(path)) or path.name
            if cancelled():
                results.append(IngestResult(name, "cancelled", message="cancelled before it started"))
                continue
            progress(Progress("file", name, index, len(paths)))
            password = passwords.get(name) or passwords.get(str(path)) if isinstance(passwords, dict) else passwords
            try:
                result = self.ingest_one(session_id, path, name=name, password=password, progress=progress, cancelled=cancelled)
            except IngestError as exc:
                result = IngestResult(name, "error", message=exc.user_message())
            except QuireError as exc:
                result = IngestResult(name, "error", message=f"{name}: {exc.user_message()}")
            except MemoryError:
                result = IngestResult(name, "error", message=f"{name}: ran out of memory while reading it. Split the file or raise the limits.")
            except Exception as exc:  # noqa: BLE001 - the batch goes on; the message names the file and the cause
                result = IngestResult(
                    name, "error", message=f"{name}: could not be read ({type(exc).__name__}: {exc}). Check the file and try again."
                )
            results.append(result)
            progress(Progress("error" if result.status == "error" else "done", name, index + 1, len(paths), result.message))
        return results

    def ingest_one(
        self,
        session_id: int,
        path: Path,
        *,
        name: str | None = None,
        password: str | None = None,
        progress: Callable[[Progress], None] = lambda e: None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> IngestResult:
        name = name or path.name
        if not path.exists():
            raise IngestError(name, "does not exist.", hint="Check the path.")
        ctx = ExtractContext(
            settings=self.settings, blobs=self.blobs, password=password, display_name=name,
            progress=progress, cancelled=cancelled,
        )
        if path.is_dir():
            from ingest.code import extract_codebase

            parsed = extract_codebase(path, ctx)
            sha = _sha_of_parsed(parsed)
            return self._store(session_id, parsed, sha, source=str(path), blob_sha=None)

        size = path.stat().st_size
        if size == 0:
            raise EmptyFile(name, "is empty.", hint="Nothing to read: check that the upload finished.")
        if size > self.settings.max_file_mb * 1024 * 1024:
            raise TooLarge(name, f"is {size / 2**20:.0f} MiB, over the {self.settings.max_file_mb} MiB limit.",
                           hint="Split it, or raise --max-file-mb.")
        sha = sha256_file(path)
        existing = repo.find_document(self.db, sha)
        if existing is not None:
            added = repo.link_document(self.db, session_id, existing, name)
            info = repo.get_document(self.db, existing)
            note = "already in the session" if not added else "already stored: reused"
            return IngestResult(name, "duplicate", existing, info.tokens, info.pages, info.segments, note)

        extractor = registry.find(Path(name)) or registry.find(path)
        suffix = _suffix_of(name)
        if extractor is None:
            sniffed = sniff_suffix(path)
            extractor = registry.find(Path("x" + sniffed)) if sniffed else None
            suffix = sniffed or suffix
        if extractor is None:
            raise UnsupportedFile(
                name, f"is a file type Quire does not read ({suffix or 'no extension'}).",
                hint="Supported: PDF, images, text and Markdown, source code, zip/tar archives of code.",
            )
        parsed = extractor(path, ctx)
        blob_sha = self._keep_original(path, sha, suffix)
        return self._store(session_id, parsed, sha, source=str(path), blob_sha=blob_sha)

    def _keep_original(self, path: Path, sha: str, suffix: str) -> str:
        target = self.blobs.path(sha, suffix)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            os.close(fd)
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        return sha

    def _store(self, session_id: int, parsed, sha: str, *, source: str, blob_sha: str | None) -> IngestResult:
        doc_id = repo.store_document(self.db, session_id, parsed, sha256=sha, source_path=source, blob_sha=blob_sha)
        return IngestResult(parsed.name, "added", doc_id, parsed.tokens, parsed.pages, len(parsed.segments))


def _suffix_of(name: str) -> str:
    lower = name.lower()
    for double in (".tar.gz", ".tar.bz2", ".tar.xz"):
        if lower.endswith(double):
            return double
    return Path(lower).suffix


def _sha_of_parsed(parsed) -> str:
    h = hashlib.sha256(parsed.name.encode())
    for seg in parsed.segments:
        h.update(b"\0")
        h.update(seg.text.encode("utf-8", "replace"))
    return h.hexdigest()
