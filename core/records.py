"""What storage hands back: one dataclass per stored thing, each built by keyword.

One concept has one name everywhere: the table ``turns``, its ORM class ``storage.models.TurnRow``
and the record :class:`TurnRecord` here. A record field with the name of a column of its table
is that column; ``storage.models`` maps rows to records and back by those names, in one place,
so a new column is a field here, a column there and a migration. Fields that are not columns are
said so below (counts and names taken from other tables).

Records hold no database session and never load anything lazily: callers (API, CLI, UI,
backend) keep them as long as they like.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.document import Locator


@dataclass(kw_only=True)
class SessionRecord:
    """A user's session (table ``sessions``): its documents, questions and settings."""

    id: int
    name: str
    user_id: int = 0  # its owner
    settings: dict[str, Any] = field(default_factory=dict)
    owner: str = ""  # not a column: the owner's user name
    role: str = "owner"  # not a column: what the asking user may do here (a key of ROLES)
    documents: int = 0  # not a column: documents linked to the session
    tokens: int = 0  # not a column: their estimated tokens
    turns: int = 0  # not a column: questions asked in it

    @property
    def qualified(self) -> str:
        """The name that finds it for the asking user: its own name, or OWNER/NAME when it is someone else's."""
        return self.name if self.role == "owner" else f"{self.owner}/{self.name}"


ROLES = {  # a user's access to a session -> what it allows
    "reader": "ask, read, export",
    "editor": "also upload, remove documents, rename",
    "owner": "also share and delete",
    "admin": "everything, on every session",
}
SHARE_ROLES = ("reader", "editor")  # what a session can be shared as


@dataclass(kw_only=True)
class UserRecord:
    """An account (table ``users``). The password itself is never in a record: only whether one is set."""

    id: int
    name: str
    is_admin: bool = False
    has_password: bool = False  # not a column: a password hash is stored
    created_at: str = ""

    @property
    def can_log_in(self) -> bool:
        return self.has_password


@dataclass(kw_only=True)
class ApiTokenRecord:
    """A personal API token (table ``api_tokens``): only its hash is stored, so the token itself is nowhere."""

    id: int
    user_id: int
    name: str
    prefix: str = ""  # the first characters of the token, to tell tokens apart in a list
    created_at: str = ""
    last_used_at: str | None = None
    revoked_at: str | None = None


@dataclass(kw_only=True)
class ShareRecord:
    """A session shared with a user (table ``shares``) as reader or editor."""

    session_id: int
    user_id: int
    user_name: str = ""  # not a column: the user's name
    role: str = "reader"  # a key of SHARE_ROLES


@dataclass(kw_only=True)
class DocumentRecord:
    """A stored document (table ``documents``) as one session holds it."""

    id: int
    name: str  # the name the session shows (its ``session_documents.display_name``)
    kind: str
    sha256: str
    pages: int = 0
    tokens: int = 0
    segments: int = 0  # not a column: how many segments it has
    source_path: str = ""
    blob_sha: str | None = None  # the original file's bytes, when kept
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """What went wrong while it was read (a page left out, a repair), as its extractor wrote it down."""
        return [str(w) for w in self.meta.get("warnings") or []]


@dataclass(kw_only=True)
class SegmentRecord:
    """A stored segment (table ``segments``): one passage or image of a document, in reading order."""

    id: int
    document_id: int
    document_name: str  # not a column: the document's name in the session
    ordinal: int
    kind: str
    text: str
    locator: Locator = field(default_factory=Locator)
    tokens: int = 0
    image_sha: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


CITATION_STATUSES = {  # status -> what it means, in words (UI, CLI, API and reports show these)
    "verified": "verified: the quote is in the passage and supports the claim",
    "quoted": "quoted only: the words are in the passage but do not support the claim",
    "unverified": "unverified: the quote was not found in the passage",
    "missing": "missing: no passage has this id",
}


@dataclass(kw_only=True)
class CitationRecord:
    """One cited passage of an answer (table ``citations``), checked against its source."""

    ref: str  # the id the model cited, e.g. "S12"
    segment_id: int | None
    document_name: str
    locator: Locator = field(default_factory=Locator)
    quote: str = ""
    status: str = "unverified"  # a key of CITATION_STATUSES
    origin: str = "model"  # model | matched

    @property
    def status_words(self) -> str:
        """The status in words, with how the passage was found."""
        words = CITATION_STATUSES.get(self.status, self.status)
        return words + (" (the answer cited nothing: matched to this passage)" if self.origin == "matched" else "")


@dataclass(kw_only=True)
class TurnRecord:
    """One question and its answer (table ``turns``), with what produced it."""

    id: int = 0
    question: str
    user_id: int | None = None  # who asked
    asked_by: str = ""  # not a column: that user's name
    answer: str = ""
    runtime: str = ""
    model: str = ""
    strategy: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    citations: list[CitationRecord] = field(default_factory=list)  # rows of ``citations``
    created_at: str = ""  # ISO time, seconds; "" until stored

    @property
    def evidence(self) -> list[dict[str, Any]]:
        """The passages listed beside the answer (``backend.evidence.top_passages``), kept in ``meta``."""
        return list((self.meta or {}).get("evidence") or [])

    @property
    def warning(self) -> str:
        """Why the answer should not be trusted ("" when a citation of it is verified), kept in ``meta``."""
        return str((self.meta or {}).get("warning") or "")


@dataclass(kw_only=True)
class EvalRunRecord:
    """One evaluation run (table ``eval_runs``): one kind, one strategy; its items are stored as they finish."""

    id: int = 0
    kind: str
    runtime: str
    model: str
    strategy: str
    window: int
    corpus_sha: str
    params: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    out_dir: str = ""
    status: str = "running"
    created_at: str = ""

    def plot(self) -> str | None:
        """The run's main plot (heatmap or bar chart), if it was written (looks at the disk)."""
        for name in self.summary.get("plots", []):
            path = Path(self.out_dir) / name
            if path.is_file():
                return str(path)
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for result files and the UI; with the ``plot`` path."""
        return {k: v for k, v in asdict(self).items() if k != "results"} | {"plot": self.plot()}


CELL_STATUSES = {  # a matrix cell's status -> what it means, in words (UI, CLI, exports show these)
    "verified": "verified: the quote is in the passage it cites",
    "quoted": "quoted only: the words are in the passage but share nothing with the field",
    "unverified": "unverified: no quote of the answer was found in the passage it cites",
    "not_found": "not found",
}
CELL_MARKS = ("", "correct", "wrong", "edited")  # a reviewer's mark; "" until one is set


@dataclass(kw_only=True)
class MatrixCellRecord:
    """One cell of a session's review matrix (table ``matrix_cells``): one document, one field.

    ``field_name`` is the column's name, ``question`` what was asked for it (a CUAD category's description, or
    the field itself). ``read_tokens`` of the document's ``total_tokens`` were read (all of them unless the
    run was cut short); ``mark`` and ``edit`` are the reviewer's, kept across reruns.
    """

    id: int = 0
    session_id: int
    document_id: int
    document_name: str = ""  # not a column: the document's name in the session
    field_name: str
    question: str = ""
    status: str = "not_found"  # a key of CELL_STATUSES
    answer: str = ""
    quote: str = ""
    segment_id: int | None = None
    locator: Locator = field(default_factory=Locator)
    read_tokens: int = 0
    total_tokens: int = 0
    mark: str = ""  # one of CELL_MARKS
    edit: str = ""  # the reviewer's answer, when the mark is "edited"
    meta: dict[str, Any] = field(default_factory=dict)  # how it was found: pass, passages read, model, times
    created_at: str = ""

    @property
    def status_words(self) -> str:
        """The status in words; "not found" says how much of the document was read."""
        if self.status == "not_found":
            share = self.read_tokens / self.total_tokens if self.total_tokens else 1.0
            return f"not found (read {self.read_tokens:,} of {self.total_tokens:,} tokens, {share:.0%} of the document)"
        return CELL_STATUSES.get(self.status, self.status)

    @property
    def shown_answer(self) -> str:
        """What the cell shows: the reviewer's edit where there is one, else the model's answer."""
        return self.edit if self.mark == "edited" and self.edit else self.answer
