"""The ingestion pipeline: files, folders and archives in, stored documents out.

For each input: refuse what cannot be read with a message naming the file,
skip what the database already holds (by sha256), run the extractor, keep the
original bytes as a content-addressed blob, and write the document with all
its segments in one transaction. One bad file never stops the batch.

A folder or archive of documents (no source code in it) is added document by
document; an archive's documents are copied for the batch into temporary files
under the cache directory, removed when the batch ends.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from core.document import ParsedDocument
from core.errors import CorruptFile, EmptyFile, IngestError, NotReadable, TooLarge, UnsupportedFile, printable
from core.settings import Settings
from ingest.archive import ArchiveLimits, ArchiveReader, is_archive
from ingest.base import ExtractContext, Progress, registry
from ingest.code import archive_documents, document_files
from ingest.jobs import IngestResult, Job, extract_in_worker, guard, load_extractors, run_extractor, warm_up
from ingest.workers import WorkerPool, worker_memory_mb
from storage import repo
from storage.blobs import BlobStore
from storage.db import Database

__all__ = ["Ingestor", "IngestResult", "Job", "load_extractors", "sha256_file", "sniff_suffix"]


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
    if head[257:262] == b"ustar":
        return ".tar"
    return None


@dataclass
class Input:
    """One thing to add: a file or folder as given, or a document found in a folder or archive given."""

    path: Path  # on disk; an archive's member: its temporary copy
    name: str  # shown and stored: "a.pdf", "deal/schedules/b.pdf", "deal.zip/schedules/b.pdf"
    source: str = ""  # where it came from, kept with the document: the path, or "archive/member"
    problem: IngestError | None = None  # a member that could not be taken out of its archive: reported, not read

    def __post_init__(self) -> None:
        self.source = self.source or str(self.path)


class _Scratch:
    """One batch's temporary files: a folder of its own under the cache directory, made on first use and
    removed, with everything in it, when the ``with`` block ends."""

    def __init__(self, parent: Path) -> None:
        self.parent, self.folder = parent, None

    def __enter__(self) -> _Scratch:
        return self

    def __exit__(self, *exc) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def open(self, suffix: str) -> tuple[BinaryIO, Path]:
        """A new, empty file with a generated name ending in ``suffix``, open for writing, and its path."""
        if self.folder is None:
            self.parent.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix="batch-", dir=self.parent))
        fd, target = tempfile.mkstemp(suffix=suffix, dir=self.folder)
        return os.fdopen(fd, "wb"), Path(target)


class Ingestor:
    """Runs the pipeline for one session.

    Checks, hashing and every database write happen in this process (one
    writer); extraction runs in a pool of worker processes when a batch has
    several files, so both cores work. A re-run after a crash or a kill skips
    whatever was already stored (each document is written whole or not at all).
    """

    def __init__(self, settings: Settings, db: Database, blobs: BlobStore, workers: WorkerPool | None = None) -> None:
        """``workers``: the extraction processes to use, owned (and shut down) by the caller; without
        them, as with ``settings.workers`` 1, every file is read in this process."""
        self.settings, self.db, self.blobs, self.pool = settings, db, blobs, workers
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
        with _Scratch(self.settings.cache_dir / "unpacked") as scratch:  # the members' copies go with the batch
            inputs = self._expanded([Path(p) for p in paths], names or {}, scratch)
            return self._ingest(session_id, inputs, passwords, progress, cancelled)

    def _ingest(self, session_id: int, inputs: list[Input], passwords: dict[str, str] | str | None,
                progress: Callable[[Progress], None], cancelled: Callable[[], bool]) -> list[IngestResult]:
        total = len(inputs)
        if min(self._workers(), total) > 1:
            self.warm(min(self._workers(), total))  # the workers import while the files are checked and hashed here
        results: dict[int, IngestResult] = {}
        jobs: list[Job] = []

        def record(index: int, outcome: IngestResult) -> None:
            results[index] = outcome
            stage = "error" if outcome.status == "error" else "done"
            pages = sum(r.pages for r in results.values() if r.status == "added")
            tokens = sum(r.tokens for r in results.values() if r.status == "added")
            progress(Progress(stage, outcome.name, len(results), total, outcome.message, pages, tokens))

        def finished(job: Job, outcome) -> None:
            if not isinstance(outcome, IngestResult):
                outcome = guard(job.name, lambda: self._store(session_id, job, outcome))
            record(job.index, outcome)

        for index, item in enumerate(inputs):
            own = Path(item.source).name  # a member's own file name, not its temporary copy's
            password = (passwords.get(item.name) or passwords.get(own) or passwords.get(item.source)) \
                if isinstance(passwords, dict) else passwords
            outcome = guard(item.name, lambda: self.plan(session_id, index, item.path, item.name, password,
                                                         source=item.source, problem=item.problem))
            if isinstance(outcome, Job):
                jobs.append(outcome)
            else:
                record(index, outcome)

        workers = min(self._workers(), len(jobs))
        jobs.sort(key=_job_size, reverse=True)  # the biggest first, so no large file is left alone at the end
        if jobs and self.pool is not None and self.settings.workers != 1:  # in workers: parallel, and a crash cannot take the app down
            self._run_pool(jobs, workers, finished, progress, cancelled)
        else:
            for job in jobs:
                if cancelled():
                    finished(job, IngestResult(job.name, "cancelled", message=f"{printable(job.name)}: cancelled before it was read"))
                    continue
                progress(Progress("file", job.name, len(results), total))
                ctx = self._context(job, progress, cancelled)
                finished(job, guard(job.name, lambda: run_extractor(job, ctx)))
        return [results[i] for i in range(total)]

    def _expanded(self, paths: list[Path], names: dict[str, str], scratch: _Scratch) -> list[Input]:
        """The inputs with each folder or archive of documents (no source code in it) replaced by its documents,
        each named ``folder/relative path`` or ``archive/relative path``; one of code stays one codebase document."""
        out: list[Input] = []
        for path in paths:
            name = names.get(str(path)) or path.name
            found = None
            if path.is_dir():
                found = [Input(path / rel, f"{name}/{rel}") for rel in document_files(str(path), _is_document) or ()]
            elif path.is_file() and (is_archive(name) or is_archive(path.name)):
                found = self._unpacked(path, name, scratch)
            out.extend(found or [Input(path, name)])
        return out

    def _unpacked(self, path: Path, name: str, scratch: _Scratch) -> list[Input] | None:
        """The documents of an archive of documents, each copied to a temporary file (in path order, then the
        members its safety rules refused); None for an archive of code, or one that cannot be listed (read as a
        codebase, its reader then says what is wrong with it)."""
        try:
            with ArchiveReader(path, name, ArchiveLimits.from_settings(self.settings)) as reader:
                found = archive_documents(reader, _is_document)
                if found is None:
                    return None
                members, refused = found
                copies, problems = self._copied(reader, members, scratch)
        except Exception:  # noqa: BLE001 - read as a codebase instead, whose reader reports it by name, in the guard
            return None
        out = []
        for rel, size in members:
            shown, source = f"{name}/{rel}", f"{path}/{rel}"
            problem = self._too_large(shown, size)
            if problem is None and rel not in copies:
                why = problems.get(rel) or "the archive is damaged before it"
                problem = CorruptFile(shown, f"could not be taken out of the archive ({why}).",
                                      hint="Re-create the archive, or add the file on its own.")
            out.append(Input(copies.get(rel, path), shown, source, problem))
        for skipped in refused:
            shown = f"{name}/{skipped['path']}"
            out.append(Input(path, shown, f"{path}/{skipped['path']}",
                             IngestError(shown, f"was not taken out of the archive: {skipped['reason']}.",
                                         hint="Quire never reads such a member from an archive; add the file on "
                                              "its own if you trust it.")))
        return out

    def _copied(self, reader: ArchiveReader, members: list[tuple[str, int]],
                scratch: _Scratch) -> tuple[dict[str, Path], dict[str, str]]:
        """Copy the members not too large to read into temporary files: ({member: its copy}, {member: problem})."""
        wanted = {rel for rel, size in members if self._too_large(rel, size) is None}
        targets: dict[str, Path] = {}

        def open_target(rel: str) -> BinaryIO:
            out, targets[rel] = scratch.open(_member_suffix(rel))
            return out

        problems: dict[str, str] = {}
        try:
            for rel, problem in reader.copy(wanted, open_target):
                if problem:
                    problems[rel] = problem
        except (IngestError, OSError) as exc:  # the archive's stream failed, or the disk: the rest is not copied
            reason = exc.message if isinstance(exc, IngestError) else f"{exc.strerror or exc}"
            problems.update({rel: reason for rel in wanted if rel not in problems})
        return {rel: target for rel, target in targets.items() if rel not in problems}, problems

    def _too_large(self, name: str, size: int) -> TooLarge | None:
        if size <= self.settings.max_file_mb * 1024 * 1024:
            return None
        return TooLarge(name, f"is {size / 2**20:.0f} MiB, over the {self.settings.max_file_mb} MiB limit.",
                        hint="Split it, or raise --max-file-mb.")

    def warm(self, workers: int | None = None) -> None:
        """Start the extraction workers ahead of the first batch (the app does it at launch)."""
        if self.pool is not None:
            self.pool.warm(workers or self._workers(), warm_up, self._memory_mb())

    def _workers(self) -> int:
        """Worker processes for a batch: the setting, or one per core."""
        return self.settings.workers or os.cpu_count() or 1

    def _memory_mb(self) -> int:
        """Each worker's address-space bound (its share of the machine: the configured worker count,
        not a batch's, so the pool keeps its size and bound from batch to batch)."""
        return worker_memory_mb(self.settings.worker_memory_mb, self._workers())

    # -- steps ---------------------------------------------------------------------
    def plan(self, session_id: int, index: int, path: Path, name: str, password: str | None, *,
             source: str = "", problem: IngestError | None = None) -> Job | IngestResult:
        """Checks that need no extractor: existence, size, duplicates, file type. ``source``: where the file came
        from, kept with the document (default: ``path``); ``problem``: why it cannot be read, found already."""
        if problem is not None:
            raise problem
        if not path.exists():
            raise IngestError(name, "does not exist.", hint="Check the path.")
        if path.is_dir():
            return Job(index, path, name, "", None, password, source=source)
        size = path.stat().st_size
        if size == 0:
            raise EmptyFile(name, "is empty.", hint="Nothing to read: check that the upload finished.")
        if (too_large := self._too_large(name, size)) is not None:
            raise too_large
        sha = sha256_file(path)
        existing = repo.find_document(self.db, sha)
        if existing is not None:
            return self._reuse(session_id, existing, name)
        lookup = _extractor_key(name, path)
        if lookup is None:
            suffix = _suffix_of(name)
            raise UnsupportedFile(
                name, f"is a file type Quire does not read ({suffix or 'no extension'}).",
                hint="Supported: PDF, EPUB, XPS, images, text, Markdown, CSV/TSV, JSON, HTML, e-mail (.eml), DOCX, "
                     "PPTX, Jupyter notebooks, source code, and zip/tar archives of code or of these documents.",
            )
        return Job(index, path, name, _suffix_of(lookup), sha, password, lookup, source)

    def ingest_one(self, session_id: int, path: Path, *, name: str | None = None, password: str | None = None,
                   progress: Callable[[Progress], None] = lambda e: None,
                   cancelled: Callable[[], bool] = lambda: False) -> IngestResult:
        """One file, in this process; raises the IngestError instead of reporting it."""
        name = name or path.name
        outcome = self.plan(session_id, 0, Path(path), name, password)
        if isinstance(outcome, IngestResult):
            return outcome
        return self._store(session_id, outcome, run_extractor(outcome, self._context(outcome, progress, cancelled)))

    def _context(self, job: Job, progress, cancelled) -> ExtractContext:
        return ExtractContext(settings=self.settings, blobs=self.blobs, password=job.password,
                              display_name=job.name, progress=progress, cancelled=cancelled)

    def _run_pool(self, jobs, workers, finished, progress, cancelled) -> None:
        queue = self.pool.progress_queue()
        memory_mb = self._memory_mb()

        def drain() -> None:
            while not queue.empty():
                progress(queue.get_nowait())

        def failed(job: Job, why: str) -> None:
            name = printable(job.name)
            if why == "timeout":
                message = (f"{name}: reading it took longer than {self.settings.file_timeout_s} s and was stopped. "
                           "Split the file, or raise --file-timeout-s.")
            elif why == "crashed":
                message = (f"{name}: the reader crashed on this file; it is probably corrupt, or needed more than "
                           f"the {memory_mb:,} MiB a reader may use. Re-export it and try again, or raise "
                           "--worker-memory-mb.")
            else:
                message = f"{name}: could not be read ({why}). Check the file and try again."
            finished(job, IngestResult(job.name, "error", message=message))

        self.pool.run_all(
            [(job, self.settings, queue) for job in jobs],
            extract_in_worker,
            workers=workers,
            timeout_s=self.settings.file_timeout_s,
            on_result=lambda item, out: finished(item[0], out[1] if out[0] == "ok" else IngestResult(item[0].name, "error", message=out[1])),
            on_failure=lambda item, why: failed(item[0], why),
            cancelled=cancelled,
            on_cancel=lambda item: finished(item[0], IngestResult(item[0].name, "cancelled",
                                                                 message=f"{printable(item[0].name)}: cancelled")),
            on_tick=drain,
            memory_mb=memory_mb,
        )
        drain()

    def _reuse(self, session_id: int, document_id: int, name: str) -> IngestResult:
        """A document the database holds already: linked to the session if it is not in it yet."""
        added = repo.link_document(self.db, session_id, document_id, name)
        info = repo.get_document(self.db, document_id)
        note = "already in the session" if not added else "already stored: reused"
        return IngestResult(name, "duplicate", document_id, info.tokens, info.pages, info.segments, note,
                            list(info.meta.get("warnings") or []))

    def _store(self, session_id: int, job: Job, parsed: ParsedDocument) -> IngestResult:
        warnings = list(parsed.meta.get("warnings") or [])
        if not parsed.segments:
            raise not_readable(job.name, parsed, warnings)
        sha = job.sha or _sha_of_parsed(parsed)
        if job.sha is None and (existing := repo.find_document(self.db, sha)) is not None:
            return self._reuse(session_id, existing, job.name)  # a folder read again, unchanged
        blob_sha = self.blobs.put_file(job.path, sha, job.suffix) if job.sha else None
        doc_id = repo.store_document(self.db, session_id, parsed, sha256=sha, source_path=job.source or str(job.path),
                                     blob_sha=blob_sha)
        return IngestResult(job.name, "added", doc_id, parsed.tokens, parsed.pages, len(parsed.segments),
                            warnings=warnings)


def _is_document(rel: str) -> bool:
    """Whether a file in a folder or archive of documents is one Quire reads on its own."""
    return registry.find(Path(rel)) is not None


_SUFFIX = re.compile(r"(\.[a-z0-9]{1,8}){1,2}")


def _member_suffix(rel: str) -> str:
    """The suffix a member's temporary copy keeps (".pdf", ".tar.gz"): nothing else of its name is used."""
    suffix = _suffix_of(rel.rsplit("/", 1)[-1])
    return suffix if _SUFFIX.fullmatch(suffix) else ""


def not_readable(name: str, parsed: ParsedDocument, warnings: list[str]) -> NotReadable:
    """A document without one readable passage is reported, never added as if it were read."""
    where = {0: "it", 1: "its one page"}.get(parsed.pages, f"any of its {parsed.pages} pages")
    why = "".join(f" {w.rstrip('.')}." for w in warnings)
    return NotReadable(name, f"is not readable: no text or image could be read from {where}.{why}",
                       hint="Check that it opens in another program; if it does, re-export it (e.g. print it to PDF) "
                            "and add it again.")


def _job_size(job: Job) -> int:
    try:
        return job.path.stat().st_size if job.path.is_file() else 1 << 40
    except OSError:
        return 0


def _extractor_key(name: str, path: Path) -> str | None:
    """The name to look the extractor up by: the display name, the file's own name, or (for a file
    whose name says nothing useful) the type its first bytes show."""
    for candidate in (name, path.name):
        if registry.find(Path(candidate)) is not None:
            return candidate
    sniffed = sniff_suffix(path)
    if sniffed and registry.find(Path("x" + sniffed)) is not None:
        return "x" + sniffed
    return None


def _suffix_of(name: str) -> str:
    lower = name.lower()
    for double in (".tar.gz", ".tar.bz2", ".tar.xz"):
        if lower.endswith(double):
            return double
    return Path(lower).suffix


def _sha_of_parsed(parsed: ParsedDocument) -> str:
    h = hashlib.sha256(parsed.name.encode())
    for seg in parsed.segments:
        h.update(b"\0")
        h.update(seg.text.encode("utf-8", "replace"))
    return h.hexdigest()
