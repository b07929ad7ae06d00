"""Quire's error hierarchy. Every message tells the user what happened and what to do.

Lower layers raise these (``raise ... from exc`` to keep the cause); the CLI and
the UI turn them into a user message at one boundary each.
"""

from __future__ import annotations


class QuireError(Exception):
    """An error meant for the user."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def user_message(self) -> str:
        return f"{self.message} {self.hint}".strip()


# -- ingestion --------------------------------------------------------------
class IngestError(QuireError):
    """A file could not be ingested. ``path`` names it."""

    def __init__(self, path: str, message: str, *, hint: str = "") -> None:
        super().__init__(f"{path}: {message}", hint=hint)
        self.path = path


class UnsupportedFile(IngestError):
    pass


class EmptyFile(IngestError):
    pass


class EncryptedPdf(IngestError):
    pass


class WrongPassword(EncryptedPdf):
    pass


class CorruptFile(IngestError):
    pass


class TooLarge(IngestError):
    pass


class NotReadable(IngestError):
    """The file opened but nothing in it could be read: it is not added."""


class Cancelled(IngestError):
    pass


# -- runtimes ---------------------------------------------------------------
class BackendError(QuireError):
    """The LLM runtime could not be started or failed while answering."""


class RuntimeUnavailable(BackendError):
    """A runtime's requirements (package, GPU, server) are missing."""


# -- sessions and storage ---------------------------------------------------
class NotFound(QuireError):
    pass


class InvalidName(QuireError):
    pass
