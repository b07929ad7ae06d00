"""What a worker process needs to read one file, kept apart from the pipeline so that workers
never import the database layer: the job, its result, the extractor registry, and the guard
that turns any failure into that file's message.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core.document import ParsedDocument
from core.errors import IngestError, QuireError, printable
from core.tokens import estimate_tokens
from ingest.base import ExtractContext, registry
from ingest.code import extract_codebase
from storage.blobs import BlobStore

log = logging.getLogger(__name__)

BUILTIN_EXTRACTORS = ("ingest.pdf", "ingest.image", "ingest.text", "ingest.office", "ingest.code", "ingest.notebook")
_loaded = False


def load_extractors() -> None:
    """Import the built-in extractor modules, which register themselves with ``registry``."""
    global _loaded
    if not _loaded:
        for name in BUILTIN_EXTRACTORS:
            try:
                importlib.import_module(name)
            except ImportError as exc:  # one extractor's missing dependency must not stop the others
                log.warning("extractor %s unavailable: %s", name, exc)
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
    warnings: list[str] = field(default_factory=list)  # what went wrong while reading it, kept with the document

    @property
    def ok(self) -> bool:
        return self.status in ("added", "duplicate")


@dataclass
class Job:
    """A file that passed the checks and needs its extractor run."""

    index: int
    path: Path
    name: str
    suffix: str  # kept with the original: ".pdf", or what the content was sniffed as
    sha: str | None  # None for folders: hashed from their content after extraction
    password: str | None = None
    lookup: str = ""  # the file name the extractor registry resolves (see _extractor_key)
    source: str = ""  # kept with the document as where it came from (an archive's member: "archive/member")


def run_extractor(job: Job, ctx: ExtractContext) -> ParsedDocument:
    if job.path.is_dir():
        return extract_codebase(job.path, ctx)
    return registry.find(Path(job.lookup))(job.path, ctx)


def extract_in_worker(item: tuple) -> tuple[str, ParsedDocument | str]:
    """Runs in a worker process; errors come back as their user message (exceptions may not pickle)."""
    job, settings, queue = item
    load_extractors()
    ctx = ExtractContext(settings=settings, blobs=BlobStore(settings.blob_dir), password=job.password,
                         display_name=job.name, progress=queue.put)
    outcome = guard(job.name, lambda: run_extractor(job, ctx), memory_mb=_memory_bound())
    if isinstance(outcome, IngestResult) and outcome.message.endswith(TOO_LARGE_HINT):
        _give_back_memory()  # the next file gets the whole bound again
    return ("error", outcome.message) if isinstance(outcome, IngestResult) else ("ok", outcome)


def _memory_bound() -> int:
    """This worker's address-space bound in MiB (0: none)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return 0 if soft == resource.RLIM_INFINITY else soft // 2**20


def _give_back_memory() -> None:
    """After a file ran into the bound: empty MuPDF's cache and hand freed heap back to the system."""
    import ctypes
    import gc
    import sys

    gc.collect()
    try:
        import pymupdf

        pymupdf.TOOLS.store_shrink(100)
    except ImportError:
        pass
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).malloc_trim(0)


def warm_up(_: object = None) -> bool:
    """Run in each new worker before the first file arrives: the imports cost about a second."""
    load_extractors()
    estimate_tokens("warm")
    return True


TOO_LARGE_HINT = "Split it, or raise --worker-memory-mb."


def guard(name: str, step: Callable, memory_mb: int = 0):
    """Run one step for one file; any failure becomes that file's error result, never the batch's.
    ``memory_mb``: the bound this process runs under, named when a file runs into it."""
    shown = printable(name)
    try:
        return step()
    except MemoryError:
        if memory_mb:
            return IngestResult(name, "error", message=f"{shown}: is too large to read safely: reading it needed more "
                                                       f"than the {memory_mb:,} MiB a reader may use. {TOO_LARGE_HINT}")
        return IngestResult(name, "error", message=f"{shown}: ran out of memory while reading it. Split it or lower the limits.")
    except Exception as exc:  # noqa: BLE001 - the batch goes on; the message names the file and the cause
        return IngestResult(name, "error", message=describe(name, exc))


def describe(name: str, exc: BaseException) -> str:
    if isinstance(exc, IngestError):
        return exc.user_message()
    if isinstance(exc, QuireError):
        return f"{printable(name)}: {exc.user_message()}"
    return f"{printable(name)}: could not be read ({type(exc).__name__}: {exc}). Check the file, or report it if it opens elsewhere."
