"""What every extractor receives and how extractors are found.

An extractor is a function ``(path, ctx) -> ParsedDocument``. It raises an
:class:`core.errors.IngestError` subclass for input it cannot read, writes
images through ``ctx.blobs`` (content-addressed, so a retried file costs
nothing), and reports progress through ``ctx.progress``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core.document import ParsedDocument
from core.settings import Settings
from storage.blobs import BlobStore

from core.tokens import estimate_tokens


@dataclass
class Progress:
    """One progress event: ``done`` of ``total`` units for ``name``; "done" and "error" events also carry the
    pages and tokens stored so far in the batch.

    "file": the batch reaches its document ``done`` (from 0) of ``total``. Within that document, 1-based:
    "page" (a PDF's or an image's pages) and "source" (a codebase's files read, the file in ``message``)."""

    stage: str  # "file", "page", "source", "done", "error"
    name: str
    done: int = 0
    total: int = 0
    message: str = ""
    pages: int = 0
    tokens: int = 0


@dataclass
class ExtractContext:
    settings: Settings
    blobs: BlobStore
    password: str | None = None
    display_name: str = ""
    progress: Callable[[Progress], None] = lambda event: None
    count_tokens: Callable[[str], int] = estimate_tokens
    cancelled: Callable[[], bool] = lambda: False


Extractor = Callable[[Path, ExtractContext], ParsedDocument]


@dataclass
class ExtractorRegistry:
    """Maps file suffixes to extractors; built-ins register like any plugin would."""

    by_suffix: dict[str, Extractor] = field(default_factory=dict)

    def register(self, *suffixes: str) -> Callable[[Extractor], Extractor]:
        def deco(fn: Extractor) -> Extractor:
            for suffix in suffixes:
                self.by_suffix[suffix.lower()] = fn
            return fn

        return deco

    def find(self, path: Path) -> Extractor | None:
        name = path.name.lower()
        # longest suffix first, so ".tar.gz" wins over ".gz"
        for suffix in sorted(self.by_suffix, key=len, reverse=True):
            if name.endswith(suffix):
                return self.by_suffix[suffix]
        return None


registry = ExtractorRegistry()
