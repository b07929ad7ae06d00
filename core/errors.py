"""Quire's error hierarchy. Every message tells the user what happened and what to do.

Lower layers raise these (``raise ... from exc`` to keep the cause); the CLI and
the UI turn them into a user message at one boundary each.
"""

from __future__ import annotations

import re

# What a terminal obeys or a display reorders: C0 and C1 controls (a carriage return, an escape sequence
# that clears the line), and the bidirectional marks and overrides (U+202E shows "txt.exe" as "exe.txt").
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` safe to show anywhere: each control character and direction mark written as its escape
    (``\\r``, ``\\x1b``, ``\\u202e``), as Python writes them. ``lines`` keeps newlines and tabs (a passage,
    an answer); a file name is one line. Escaping twice changes nothing."""

    def escape(match: re.Match) -> str:
        c = match.group(0)
        if lines and c in "\n\t":
            return c
        return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")

    return _UNPRINTABLE.sub(escape, text or "")


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
        super().__init__(f"{printable(path)}: {message}", hint=hint)
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


# -- accounts and access ----------------------------------------------------
class NotAuthenticated(QuireError):
    """No user could be told from the request (no login, a bad or revoked token)."""


class AccessDenied(QuireError):
    """The user sees the session but may not do this in it (a reader uploading), or is no admin."""
