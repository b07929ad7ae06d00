"""Quire's Python API: the one door the CLI, the UI, the exports, the evaluations and the tests use.

    from quire.api import Quire
    with Quire() as q:
        q.ingest("contracts", ["a.pdf", "b.pdf"])
        for event in q.ask("contracts", "Which contract ends first?"):
            ...

Nothing happens at import: the database opens on first use, the model loads on
the first question, the extraction workers with the first batch of files (or
:meth:`Quire.warm_ingest`); :meth:`Quire.close` ends all three.

Every call acts as one user: a ``Quire`` made from settings is the operator at the machine (the
local user, or ``--user``); :meth:`Quire.as_user` gives the view a front end uses for one request,
sharing the database, the model and the workers. The access checks are here, in every method, so
every front end has them: a session the user may not see is not found (the same words as one that does
not exist), one they may only read refuses changes (:class:`AccessDenied`).

A session argument is a name or the :class:`SessionRecord` that :meth:`Quire.session`
returned; a caller that makes several calls on one session looks it up once and
passes the record on. What the front ends receive are records (``core.records``) and
the stream events below, never a database handle.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import logging
import threading
import time
from collections import deque
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from PIL import Image

from backend import citations, shards
from backend.base import Delta, GenerateOptions, Runtime, Usage
from backend.context import AssembledContext, TokenCounter, assemble
from backend.evidence import top_passages
from backend.clauses import CUAD_CATEGORIES
from backend.expansion import expand
from backend.matrix import CellDone, Field, Stopped, parse_fields, run_document
from backend.ranking import EMBEDDING_WEIGHT, Embedder, fuse
from backend.registry import available, create_runtime, resolve_name, runtime_class
from backend.repetition import generate_guarded, kept_text
from backend.sweep import Status, SweepResult, run_sweep, wants_exhaustive
from core.document import ParsedDocument
from core.errors import AccessDenied, NotFound, QuireError
from core.records import (
    ApiTokenRecord,
    DocumentRecord,
    EvalRunRecord,
    MatrixCellRecord,
    SegmentRecord,
    SessionRecord,
    ShareRecord,
    TurnRecord,
    UserRecord,
)
from core.settings import STRATEGIES, Settings
from ingest.base import Progress
from ingest.pdf import find_quote, render_page
from ingest.pipeline import Ingestor, IngestResult
from ingest.workers import WorkerPool
from storage import accounts, eval_runs, matrix, repo
from storage.blobs import BlobStore
from storage.db import Database

LOCAL_USER = repo.LOCAL_USER  # the user of single-user mode
__all__ = ["LOCAL_USER", "Answer", "Budget", "CUAD_CATEGORIES", "CellDone", "Delta", "Field", "IngestResult", "MatrixRun",
           "Progress", "Quire", "STRATEGIES", "Status", "Waiting", "Warming", "parse_fields", "runtime_choices"]
log = logging.getLogger(__name__)

SessionRef = str | SessionRecord  # a session's name, or its record from Quire.session()
READ, EDIT, OWN = "read", "edit", "own"  # what a call needs of the session
_ALLOWS = {READ: {"reader", "editor", "owner", "admin"}, EDIT: {"editor", "owner", "admin"}, OWN: {"owner", "admin"}}
_REFUSED = {EDIT: "Only its owner and its editors can change it.", OWN: "Only its owner can do this."}
WAIT_REPORT_S = 5.0  # a waiting asker hears where it stands at least this often
RANKED = 500  # passages each rank keeps for focus (more than any window holds)


@dataclass
class Waiting(Status):
    """Another question holds the model: this one's place in line (1: next) and the expected wait."""

    place: int = 0
    expected_s: float | None = None  # None until an answer has been timed


class AskQueue:
    """One model, one question at a time; the others wait in line, first come first served, and can be
    told their place and how long the questions ahead are expected to take (the mean of recent answers)."""

    def __init__(self, history: int = 20) -> None:
        self._cond = threading.Condition()
        self._line: deque[int] = deque()  # tickets in order; the first holds the model
        self._tickets = 0
        self._durations: deque[float] = deque(maxlen=history)
        self._since = 0.0  # when the first in line got the model

    def join(self) -> int:
        with self._cond:
            self._tickets += 1
            self._line.append(self._tickets)
            if len(self._line) == 1:
                self._since = time.monotonic()
            return self._tickets

    def idle(self) -> bool:
        """Whether no question holds the model or waits for it."""
        with self._cond:
            return not self._line

    def place(self, ticket: int) -> int:
        """Questions ahead of this one (0: it holds the model)."""
        with self._cond:
            return self._line.index(ticket)

    def wait(self, ticket: int, timeout: float) -> None:
        """Wait until the line moves up (or ``timeout`` passes)."""
        with self._cond:
            ahead = self._line.index(ticket)
            if ahead:
                self._cond.wait_for(lambda: self._line.index(ticket) < ahead, timeout)

    def expected_wait(self, ticket: int) -> float | None:
        """Seconds until this ticket gets the model: the rest of the current answer and a mean answer for each
        question between; None before any answer was timed."""
        with self._cond:
            ahead = self._line.index(ticket)
            if not ahead:
                return 0.0
            if not self._durations:
                return None
            mean = sum(self._durations) / len(self._durations)
            return max(0.0, mean - (time.monotonic() - self._since)) + (ahead - 1) * mean

    def leave(self, ticket: int) -> None:
        """Out of line: answered (its time is kept for the estimate), or given up while waiting."""
        with self._cond:
            first = self._line[0] == ticket
            self._line.remove(ticket)
            if first:
                now = time.monotonic()
                self._durations.append(now - self._since)
                self._since = now
            self._cond.notify_all()


@dataclass
class Warming:
    """Where preparing a session's shards stands: ``done`` of ``total`` shards have their state kept.

    ``state``: queued, warming, paused (a question has the model), done, stopped, off, or failed."""

    session_id: int
    state: str
    done: int = 0
    total: int = 0
    computed: int = 0  # shards prepared by this run (the others were kept already)
    seconds: float = 0.0
    message: str = ""


FINISHED = ("done", "stopped", "off", "failed")


class ShardWarmer:
    """Prepares sessions' shard states in one background thread, one shard at a time, only while no question
    holds or waits for the model; a question that joins the line interrupts the shard being prepared (it is
    prepared again later). See :meth:`Quire.warm`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[tuple[int, Callable[[Callable[[], bool]], Warming]]] = deque()
        self.status: dict[int, Warming] = {}
        self._thread: threading.Thread | None = None
        self._active = False  # a shard is being prepared now
        self._closed = False
        self._runtime: Runtime | None = None

    def request(self, session_id: int, job: Callable[[Callable[[], bool]], Warming]) -> Warming:
        with self._cond:
            if all(sid != session_id for sid, _ in self._queue):
                self._queue.append((session_id, job))
                self.status[session_id] = Warming(session_id, "queued")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="quire-warm", daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return self.status[session_id]

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                session_id, job = self._queue.popleft()
            try:
                self.update(job(lambda: self._closed))
            except Exception as exc:  # noqa: BLE001 - a failed warm is reported, and questions go on
                log.warning("warming session %s failed: %s", session_id, exc)
                self.update(Warming(session_id, "failed", message=str(exc)))

    def update(self, status: Warming) -> None:
        with self._cond:
            self.status[status.session_id] = dataclasses.replace(status)
            self._cond.notify_all()

    def wait(self, session_id: int, progress: Callable[[Warming], None]) -> Warming:
        """Until the session's warming has ended, telling ``progress`` of each step."""
        seen = None
        with self._cond:
            while True:
                status = self.status[session_id]
                if status != seen:
                    seen = status
                    progress(status)
                queued = any(sid == session_id for sid, _ in self._queue)
                if status.state in FINISHED and not queued:
                    return status
                self._cond.wait(0.5)

    def turn(self, idle: Callable[[], bool], runtime: Runtime) -> bool:
        """Wait until no question wants the model, then hold it for one shard; False when closing."""
        with self._cond:
            while not self._closed and not idle():
                self._cond.wait(0.25)
            if self._closed:
                return False
            self._active, self._runtime = True, runtime
            return True

    def done_turn(self) -> None:
        with self._cond:
            self._active = False
            self._cond.notify_all()

    def interrupt(self) -> None:
        """A question joined the line: stop the shard being prepared, and return once it has let go of the model."""
        deadline = time.monotonic() + 5.0
        with self._cond:
            while self._active and time.monotonic() < deadline:
                if self._runtime is not None:
                    self._runtime.cancel()  # a no-op until the prefill has started: so again, until it lets go
                self._cond.wait(0.02)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.interrupt()


@dataclass
class MatrixRun:
    """The end of a matrix run: ``done`` of ``total`` cells are stored (``reused`` of them from before)."""

    done: int
    total: int
    reused: int
    stopped: bool
    wall_s: float


@dataclass
class Answer:
    """The end of a streamed answer: the stored turn and how it was produced."""

    turn: TurnRecord
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.turn.answer

    @property
    def evidence(self) -> list[dict[str, Any]]:
        """The passages the answer rests on, or that retrieval ranked best (see ``backend.evidence``)."""
        return self.turn.evidence


@dataclass
class Budget:
    window: int
    answer_reserve: int
    documents: list[tuple[str, int]]  # (name, tokens)

    @property
    def total(self) -> int:
        return sum(t for _, t in self.documents)

    @property
    def fits(self) -> bool:
        return self.total <= self.window - self.answer_reserve


class _Shared:
    """What every user's view of one Quire shares: the database, the model, the line for it."""

    def __init__(self, runtime: Runtime | None) -> None:
        self.db: Database | None = None
        self.runtime = runtime
        self.answering: str | None = None  # the asker whose question holds the model now
        self.warmer = ShardWarmer()  # prepares shard states in the background while nobody asks
        self.prefill_rates: deque[float] = deque(maxlen=8)  # prompt tokens a second the model computed lately
        self.views: dict[int, "Quire"] = {}  # user id -> that user's view


class Quire:
    def __init__(self, settings: Settings | None = None, *, runtime: Runtime | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self._shared = _Shared(runtime)
        self._user: UserRecord | None = None  # who this view acts as; None: the operator, resolved on first use
        self._operator = not self.settings.user  # made at the machine (CLI, tests) as no one in particular: an admin
        self._blobs = BlobStore(self.settings.blob_dir)
        self._workers = WorkerPool()  # started by the first batch (or warm_ingest), ended by close()
        self._counters: dict[int, TokenCounter] = {}
        self._lock = threading.RLock()
        self._asking = AskQueue()
        self._embedder = Embedder()  # the model loads with the first hybrid-ranked question
        self._stop = threading.Event()  # Stop pressed during a matrix run: it ends before the next model call

    # -- resources ---------------------------------------------------------------
    def _database(self) -> Database:
        with self._lock:
            if self._shared.db is None:
                self.settings.home.mkdir(parents=True, exist_ok=True)
                self._shared.db = Database(self.settings.db_url)
            return self._shared.db

    def runtime_name(self) -> str:
        """The runtime in use, or the one the first question will start (``auto`` may look for a GPU: a method)."""
        return self._shared.runtime.name if self._shared.runtime else resolve_name(self.settings)

    def runtime(self) -> Runtime:
        """The runtime, started on first use (this loads the model or connects to the server)."""
        with self._lock:
            if self._shared.runtime is None:
                self._shared.runtime = create_runtime(self.settings).start()
            return self._shared.runtime

    def close(self) -> None:
        """Stop the runtime and the extraction workers, close the database. Safe to call twice."""
        self._shared.warmer.close()
        with self._lock:
            if self._shared.runtime is not None:
                self._shared.runtime.shutdown()
                self._shared.runtime = None
            self._workers.shutdown()
            if self._shared.db is not None:
                self._shared.db.close()
                self._shared.db = None

    def __enter__(self) -> "Quire":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- who is asking --------------------------------------------------------------
    def whoami(self) -> UserRecord:
        """The user this view acts as: the one it was made for, else ``--user``, else the local user."""
        if self._user is None:
            db = self._database()
            if self.settings.user:
                self._user = accounts.get_user(db, self.settings.user)
            else:
                self._user = accounts.get_user_by_id(db, repo.ensure_user(db))
        return self._user

    def as_user(self, user: UserRecord | str) -> "Quire":
        """This Quire acting as ``user`` (a record from :meth:`authenticate`/:meth:`user_for_token`, or a name):
        the same database, model and workers, that user's rights. Front ends make one per request."""
        record = user if isinstance(user, UserRecord) else accounts.get_user(self._database(), user)
        view = self._shared.views.get(record.id)
        if view is None or view._user != record:
            view = copy.copy(self)
            view._user, view._operator = record, False
            self._shared.views[record.id] = view
        return view

    def _is_admin(self) -> bool:
        return self._operator or self.whoami().is_admin

    def _require_admin(self, what: str) -> None:
        if not self._is_admin():
            raise AccessDenied(f"Only an admin can {what}.", hint="Ask an admin (`python app.py users list`).")

    # -- accounts ---------------------------------------------------------------------
    def accounts_exist(self) -> bool:
        """Whether any user has a password: then the web server asks who is there."""
        return accounts.accounts_exist(self._database())

    def authenticate(self, name: str, password: str) -> UserRecord | None:
        return accounts.authenticate(self._database(), name, password)

    def user_for_token(self, token: str) -> UserRecord | None:
        """The user a personal API token acts for (None: unknown or revoked)."""
        return accounts.user_for_token(self._database(), token)

    def user_named(self, name: str, *, create: bool = False) -> UserRecord:
        """A user by name; ``create`` adds one without a password (a name a trusted proxy vouches for)."""
        db = self._database()
        if create:
            repo.ensure_user(db, accounts.check_user_name(name))
        return accounts.get_user(db, name)

    def users(self) -> list[UserRecord]:
        self._require_admin("list users")
        return accounts.list_users(self._database())

    def add_user(self, name: str, *, password: str | None = None, admin: bool = False) -> UserRecord:
        self._require_admin("add users")
        return accounts.add_user(self._database(), name, password=password, admin=admin)

    def remove_user(self, name: str) -> None:
        self._require_admin("remove users")
        accounts.remove_user(self._database(), name)

    def set_password(self, name: str, password: str) -> None:
        if not (self._is_admin() or self.whoami().name == name):
            raise AccessDenied("Only an admin can change another user's password.")
        accounts.set_password(self._database(), name, password)

    def create_token(self, name: str = "token", *, user: str | None = None) -> tuple[ApiTokenRecord, str]:
        """A personal API token for this user (an admin: for ``user``); the token itself is returned only here."""
        owner = self.whoami() if user is None else self._other_user(user)
        return accounts.create_token(self._database(), owner.id, name)

    def tokens(self, *, user: str | None = None) -> list[ApiTokenRecord]:
        if user is None and self._operator:
            return accounts.list_tokens(self._database())
        owner = self.whoami() if user is None else self._other_user(user)
        return accounts.list_tokens(self._database(), owner.id)

    def revoke_token(self, token_id: int) -> ApiTokenRecord:
        mine = None if self._is_admin() else self.whoami().id
        return accounts.revoke_token(self._database(), token_id, user_id=mine)

    def _other_user(self, name: str) -> UserRecord:
        if name != self.whoami().name:
            self._require_admin("act for another user")
        return accounts.get_user(self._database(), name)

    def share(self, session: SessionRef, user: str, role: str) -> ShareRecord:
        """Share the session with ``user`` as reader or editor (its owner or an admin)."""
        info = self.session(session, create=False, need=OWN)
        return accounts.share(self._database(), info.id, accounts.get_user(self._database(), user).id, role)

    def unshare(self, session: SessionRef, user: str) -> None:
        info = self.session(session, create=False, need=OWN)
        accounts.unshare(self._database(), info.id, accounts.get_user(self._database(), user).id)

    def shares(self, session: SessionRef) -> list[ShareRecord]:
        return accounts.shares(self._database(), self.session(session, create=False, need=OWN).id)

    # -- sessions --------------------------------------------------------------------
    def sessions(self) -> list[SessionRecord]:
        """The sessions this user may see: their own, those shared with them (an admin: every one)."""
        return repo.list_sessions(self._database(), user_id=self.whoami().id, admin=self._is_admin())

    def session(self, name: SessionRef, *, create: bool = True, need: str = READ) -> SessionRecord:
        """The session's record (a handle for the calls that follow); created if missing unless ``create`` is
        False. One this user may not see is not found; one they may see but not ``need`` is refused."""
        if isinstance(name, SessionRecord):
            info = name
        else:
            me, db = self.whoami(), self._database()
            if create:
                repo.check_name(name.rpartition("/")[2])
            info = repo.get_session(db, name.strip(), user_id=me.id, create=create, admin=self._is_admin())
        if info.role not in _ALLOWS[need]:
            raise AccessDenied(f"You can read session {info.name!r} but not change it.", hint=_REFUSED[need])
        return info

    def rename_session(self, session: SessionRef, new_name: str) -> SessionRecord:
        info = self.session(session, create=False, need=EDIT)
        repo.rename_session(self._database(), info.id, new_name)
        return replace_name(info, repo.get_session_by_id(self._database(), info.id))

    def set_session_settings(self, session: SessionRef, **values: Any) -> SessionRecord:
        """Per-session settings (e.g. the strategy), kept with the session across restarts."""
        info = self.session(session, create=False, need=EDIT)
        repo.update_session_settings(self._database(), info.id, values)
        return replace_name(info, repo.get_session_by_id(self._database(), info.id))

    def delete_session(self, session: SessionRef) -> None:
        repo.delete_session(self._database(), self.session(session, create=False, need=OWN).id)

    # -- app state -------------------------------------------------------------------
    def _state_key(self, key: str) -> str:
        me = self.whoami()
        return key if me.name == repo.LOCAL_USER else f"{key}@{me.id}"  # each user's own

    def state(self, key: str) -> dict[str, Any]:
        """What a front end keeps between runs under ``key`` for this user (e.g. the UI's last session)."""
        return repo.get_state(self._database(), self._state_key(key))

    def set_state(self, key: str, value: dict[str, Any]) -> None:
        repo.set_state(self._database(), self._state_key(key), value)

    # -- documents -------------------------------------------------------------------------
    def ingest(
        self,
        session: SessionRef,
        paths: Iterable[Path | str],
        *,
        passwords: dict[str, str] | str | None = None,
        progress: Callable[[Progress], None] = lambda e: None,
        cancelled: Callable[[], bool] = lambda: False,
        names: dict[str, str] | None = None,
    ) -> list[IngestResult]:
        info = self.session(session, need=EDIT)
        results = self._ingestor().ingest(info.id, paths, passwords=passwords, progress=progress,
                                          cancelled=cancelled, names=names)
        if self.settings.warm_shards != "off" and any(r.ok for r in results):
            self.warm(info)
        return results

    def warm_ingest(self) -> None:
        """Start the extraction workers now (their imports take about a second), so the first
        upload does not wait for them. The app calls it at launch."""
        if self.settings.workers != 1:
            self._ingestor().warm()

    def _ingestor(self) -> Ingestor:
        return Ingestor(self.settings, self._database(), self._blobs, self._workers)

    def add_parsed(self, session: SessionRef, parsed: ParsedDocument, *, sha256: str) -> int:
        """Store a document built in code (no file, no extractor), as evaluations and benchmarks do."""
        return repo.store_document(self._database(), self.session(session, need=EDIT).id, parsed, sha256=sha256)

    def documents(self, session: SessionRef) -> list[DocumentRecord]:
        return repo.session_documents(self._database(), self.session(session, create=False).id)

    def document(self, document_id: int) -> DocumentRecord:
        """A stored document, when it is in a session this user may read."""
        if not self._readable([document_id]):
            raise NotFound("No such document.", hint="It may have been removed, or it is not shared with you.")
        return repo.get_document(self._database(), document_id)

    def _readable(self, document_ids: Iterable[int]) -> set[int]:
        """Those of the documents that are in a session this user may read."""
        ids = set(document_ids)
        if self._is_admin():
            return ids
        return repo.readable_documents(self._database(), ids, user_id=self.whoami().id)

    def remove_document(self, session: SessionRef, document_id: int) -> None:
        repo.remove_document(self._database(), self.session(session, create=False, need=EDIT).id, document_id)

    def segments(self, session: SessionRef) -> list[SegmentRecord]:
        """Every segment of the session, documents as added, then reading order."""
        return repo.session_segments(self._database(), self.session(session, create=False).id)

    def segments_by_id(self, ids: Iterable[int]) -> dict[int, SegmentRecord]:
        """Stored segments by id (those that still exist, in sessions this user may read), e.g. a turn's passages."""
        found = repo.get_segments(self._database(), ids)
        allowed = self._readable({s.document_id for s in found.values()}) if found else set()
        return {sid: seg for sid, seg in found.items() if seg.document_id in allowed}

    def search(self, session: SessionRef, query: str, *, limit: int = 200) -> list[tuple[int, float]]:
        """Segment ids of the session ranked by full-text relevance to ``query`` (best first), with scores."""
        return repo.search_segments(self._database(), self.session(session, create=False).id, query, limit=limit)

    def image(self, sha: str | None) -> Path | None:
        """The stored file of an image (a page image, a figure, an uploaded image), if it is there."""
        return self._blobs.find(sha) if sha else None

    def open_image(self, sha: str | None) -> Image.Image | None:
        """A stored image, loaded (an image segment shown in the viewer)."""
        path = self.image(sha)
        return _load(path) if path is not None else None

    def original(self, document: DocumentRecord) -> Path | None:
        """The kept original file of a document (PDFs and images are kept; codebases are not)."""
        return self._blobs.find(document.blob_sha) if document.blob_sha else None

    def quote_boxes(self, document: DocumentRecord, page: int, quote: str) -> list[tuple[int, tuple[float, ...]]]:
        """Where ``quote`` stands on page ``page`` of the kept original PDF (and on the next page, when it runs
        on): (page, box in PDF points) per line; [] when the PDF is not kept or the words are not found."""
        original = self.original(document)
        return find_quote(original, page, quote) if original is not None and quote.strip() else []

    def page_image(self, document: DocumentRecord, page: int) -> tuple[Image.Image | None, tuple[float, float] | None]:
        """Page ``page`` (1-based) as an image with the page's size in PDF points (None where unknown):
        the page image stored at ingest, else the page rendered from the kept original PDF."""
        entry = _page_entry(document, page)
        size = (entry.get("width"), entry.get("height")) if entry else None
        path = self.image(entry.get("image")) if entry else None
        if path is not None:
            return _load(path), size if size and all(size) else None
        original = self.original(document)
        rendered = render_page(original, page, self.settings.render_dpi) if original is not None else None
        if rendered is None:
            return None, None
        png, size = rendered
        return _load(io.BytesIO(png)), size

    def budget(self, session: SessionRef, *, exact: bool = False) -> Budget:
        """Tokens per document against the window, before anything is sent.

        Stored counts are ingest-time estimates, scaled by how the runtime's tokenizer has counted the
        passages it was sent so far; ``exact`` recounts with that tokenizer (which loads the model).
        """
        info = self.session(session, create=False)
        docs = self.documents(info)
        if exact or self._shared.runtime:
            window = self.runtime().context_window
        else:  # before the model is loaded: what the chosen runtime defaults to
            window = self.settings.context_window or runtime_class(resolve_name(self.settings)).DEFAULT_WINDOW
        scale = self._counter(self._shared.runtime).scale() if self._shared.runtime else 1.0
        rows = [(d.name, round(d.tokens * scale)) for d in docs]
        if exact:
            rt = self.runtime()
            per_doc: dict[int, int] = {}
            for s in self.segments(info):
                per_doc[s.document_id] = per_doc.get(s.document_id, 0) + rt.count_tokens(s.text)
            rows = [(d.name, per_doc.get(d.id, 0)) for d in docs]
        return Budget(window, self.settings.max_answer_tokens, rows)

    # -- questions ---------------------------------------------------------------------------
    def assemble(self, session: SessionRef, question: str, *, strategy: str | None = None) -> AssembledContext:
        info = self.session(session, create=False)
        return self._assemble(info, self._segments(info), question, strategy or self.settings.strategy)

    def _segments(self, info: SessionRecord) -> list[SegmentRecord]:
        segments = self.segments(info)
        if not segments:
            raise QuireError(f"Session {info.name!r} has no documents yet.",
                             hint="Add files first (upload, or `python app.py ingest`).")
        return segments

    def _counter(self, rt: Runtime) -> TokenCounter:
        """Token counts of rendered passages, remembered per runtime across questions."""
        return self._counters.setdefault(id(rt), TokenCounter(rt))

    def _ranking(self, info: SessionRecord, question: str, segments: Sequence[SegmentRecord]) -> Callable[[], list[int]]:
        """The session's passages ranked for the question (``settings.rank``: lexical, or fused with the
        embedding rank), searched once however often it is asked for."""
        def ranked() -> list[int]:
            query = expand(question) if self.settings.expand_queries else question
            lexical = [sid for sid, _ in self.search(info, query, limit=RANKED)]
            if self.settings.rank == "lexical":
                return lexical
            semantic = self._embedder.rank(question, segments, limit=RANKED)
            return fuse(lexical, semantic, weights=[1.0, EMBEDDING_WEIGHT])[:RANKED]
        return functools.cache(ranked)

    def _assemble(self, info: SessionRecord, segments: list[SegmentRecord], question: str,
                  strategy: str, ranking: Callable[[], list[int]] | None = None) -> AssembledContext:
        rt = self.runtime()
        ranking = ranking or self._ranking(info, question, segments)
        return assemble(
            segments,
            question,
            rt,
            max_answer_tokens=self.settings.max_answer_tokens,
            strategy="auto" if strategy == "sweep" else strategy,  # sweep is run by ask(), not assembled
            rank=lambda _question: ranking(),
            counter=self._counter(rt),
            image_path=self.image,
            quota=self.settings.document_quota,
        )

    def ask(self, session: SessionRef, question: str, *, strategy: str | None = None,
            asker: str | None = None, documents: Sequence[int] | None = None) -> Iterator[Delta | Status | Answer]:
        """Stream the answer: Delta (answer text) and Status (progress) events; the last is the stored :class:`Answer`.

        One question at a time holds the model; while others are ahead, Waiting events say this one's
        place in line and the expected wait (when the line moves, and every WAIT_REPORT_S). A caller
        that stops reading early closes the stream (``with contextlib.closing(q.ask(...))``, or ``.close()``),
        which also closes the runtime's own stream at once, so the next question can start.
        ``asker`` names who asks (a browser session), so that :meth:`stop` stops only that one's answer.
        ``documents`` (ids of the session's documents) limits what is read to those; the answer's meta names them.
        """
        question = (question or "").strip()
        if not question:
            raise QuireError("The question is empty.", hint="Type a question about the documents.")
        requested = strategy or self.settings.strategy
        if requested not in STRATEGIES:
            raise QuireError(f"Unknown strategy {requested!r}.", hint=f"Choose one of: {', '.join(STRATEGIES)}.")
        info = self.session(session, create=False)
        only = self._chosen(info, documents)
        ticket = self._asking.join()
        try:
            self._shared.warmer.interrupt()  # a shard being prepared in the background gives way
            while place := self._asking.place(ticket):
                yield _waiting(place, self._asking.expected_wait(ticket))
                self._asking.wait(ticket, WAIT_REPORT_S)
            self._shared.answering = asker
            try:
                yield from self._answer(info, question, requested, only)
            finally:
                self._shared.answering = None
        finally:  # answered, failed, or the asker went away (the generator closed): the line moves on
            self._asking.leave(ticket)

    def _chosen(self, info: SessionRecord, documents: Sequence[int] | None) -> dict[int, str] | None:
        """The chosen documents of the session by id, with their names; None for all of them."""
        if not documents:
            return None
        names = {d.id: d.name for d in self.documents(info)}
        chosen = {int(i): names[int(i)] for i in documents if int(i) in names}
        if not chosen:
            raise QuireError("None of the chosen documents is in this session.", hint="Pick documents of the session.")
        return chosen

    def _answer(self, info: SessionRecord, question: str, requested: str,
                only: dict[int, str] | None = None) -> Iterator[Delta | Status | Answer]:
        started = time.perf_counter()
        rt = self.runtime()
        options = GenerateOptions(
            max_tokens=self.settings.max_answer_tokens, temperature=self.settings.temperature, seed=self.settings.seed,
            repeat_penalty=self.settings.repeat_penalty or rt.default_repeat_penalty,
        )
        segments = self._segments(info)
        if only is not None:
            segments = [s for s in segments if s.document_id in only]
        ranking = self._ranking(info, question, segments)  # focus and the evidence list share one search
        ctx = None if requested == "sweep" else self._assemble(info, segments, question, requested, ranking)
        use_sweep = requested == "sweep" or (requested == "auto" and ctx.narrowed and wants_exhaustive(question))
        parts: list[str] = []
        usage = Usage()
        if use_sweep:
            with closing(run_sweep(segments, question, rt, counter=self._counter(rt), options=options,
                                   map_tokens=self.settings.sweep_answer_tokens,
                                   shard_tokens=self._shard_tokens(rt))) as events:
                for event in events:
                    if isinstance(event, SweepResult):
                        ctx, usage = event.context, event.usage
                        continue
                    if isinstance(event, Delta):
                        parts.append(event.text)
                    yield event
        else:
            yield self._reading(ctx)
            with closing(generate_guarded(rt, ctx.prompt, options)) as events:
                for event in events:
                    if isinstance(event, Delta):
                        parts.append(event.text)
                        yield event
                    else:
                        usage = event
        computed = usage.prompt_tokens - usage.cached_tokens
        if not use_sweep and computed >= 256 and usage.ttft_s > 0 and usage.finish_reason != "cancelled":
            self._shared.prefill_rates.append(computed / usage.ttft_s)
        answer = kept_text("".join(parts), usage).strip()
        checking = time.perf_counter()
        checked = citations.check(answer, ctx.refs, question)
        support = citations.verdict(checked.citations, ctx.refs, question)
        ranked = ranking()[:50]
        meta = ctx.metadata() | {
            "evidence": top_passages(question, ctx.refs, checked.citations, ranked),
            "checks_s": round(time.perf_counter() - checking, 4),  # citations, verdict and evidence: their cost
            "unknown_refs": checked.unknown_refs,
            "support": support,  # verified | unsupported | no_evidence
            "warning": citations.WARNINGS.get(support, ""),
            "wall_s": round(time.perf_counter() - started, 4),
            "finish_reason": usage.finish_reason,
            **({"documents": list(only.values())} if only is not None else {}),  # the question was limited to these
            **usage.details,
        }
        turn = TurnRecord(
            question=question, answer=answer, runtime=rt.name, model=rt.model_name, strategy=ctx.strategy,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens, ttft_s=round(usage.ttft_s, 4), total_s=round(usage.total_s, 4),
            meta=meta, citations=checked.citations, user_id=self.whoami().id, asked_by=self.whoami().name,
        )
        turn.id = repo.save_turn(self._database(), info.id, turn)
        yield Answer(turn, meta)

    def _reading(self, ctx: AssembledContext) -> Status:
        """What a single pass reads, with the most it should take at the rate of the last answers (a corpus the
        model holds already is read in a moment, so it is an upper bound)."""
        message = f"Reading {ctx.segments_used} passages ({ctx.tokens_used} tokens)"
        rates = self._shared.prefill_rates
        if not rates:
            return Status(message, 0, 1)
        rate = sum(rates) / len(rates)
        eta = ctx.tokens_used / rate
        return Status(f"{message}; up to about {_duration(eta)} at {rate:.0f} tokens/s", 0, 1, eta_s=eta)

    def stop(self, asker: str | None = None) -> None:
        """Stop the answer being generated now, from any thread (the UI's Stop button); it ends as cancelled.

        With ``asker``, only when that asker's question is the one holding the model: one user's Stop never
        ends another user's answer (a question still waiting in line is ended by closing its stream)."""
        runtime = self._shared.runtime
        if asker is None or asker == self._shared.answering:
            self._stop.set()
            if runtime is not None:
                runtime.cancel()

    # -- the review matrix ------------------------------------------------------------------------
    def matrix(self, session: SessionRef, fields: Sequence[str | Field] | str, *,
               documents: Sequence[int] | None = None, rerun: bool = False,
               asker: str | None = None) -> Iterator[Status | CellDone | MatrixRun]:
        """Fill the session's review matrix: one cell per document and field (see ``backend.matrix``).

        Cells already stored for the same field and question are handed back first (``CellDone(reused=True)``)
        and not computed again (``rerun`` recomputes them); then each document is read in turn, with Status
        events (``done``/``total`` counted in cells), and its cells are stored and yielded as it finishes.
        The last event is :class:`MatrixRun`. :meth:`stop` (or closing the stream) ends the run before the next
        model call; the cells stored so far stay, and the next run resumes from them. Like :meth:`ask`, the run
        waits its turn for the model.
        """
        wanted = [f if isinstance(f, Field) else Field.of(f) for f in fields] if not isinstance(fields, str) \
            else parse_fields(fields)
        wanted = list(dict.fromkeys(wanted))
        if not wanted:
            raise QuireError("No fields were given for the matrix.", hint="Name at least one field.")
        info = self.session(session, create=False)
        docs = [d for d in self.documents(info) if documents is None or d.id in documents]
        if not docs:
            raise QuireError(f"Session {info.name!r} has no documents to review.", hint="Add files first.")
        started = time.perf_counter()
        total = len(docs) * len(wanted)
        stored = {(c.document_id, c.field_name): c for c in matrix.cells(self._database(), info.id, [f.name for f in wanted])}
        todo: list[tuple[DocumentRecord, list[Field]]] = []
        done = reused = 0
        for d in docs:
            pending = []
            for f in wanted:
                old = stored.get((d.id, f.name))
                if old is not None and old.question == f.question and not rerun:
                    done += 1
                    reused += 1
                    yield CellDone(old, reused=True)
                else:
                    pending.append(f)
            if pending:
                todo.append((d, pending))
        if not todo:
            yield MatrixRun(done, total, reused, False, round(time.perf_counter() - started, 3))
            return
        ticket = self._asking.join()
        stopped = False
        try:
            self._shared.warmer.interrupt()
            while place := self._asking.place(ticket):
                yield _waiting(place, self._asking.expected_wait(ticket))
                self._asking.wait(ticket, WAIT_REPORT_S)
            self._shared.answering = asker
            self._stop.clear()
            try:
                rt = self.runtime()
                options = GenerateOptions(
                    max_tokens=self.settings.matrix_answer_tokens, temperature=self.settings.temperature,
                    seed=self.settings.seed, repeat_penalty=self.settings.repeat_penalty or rt.default_repeat_penalty,
                )
                segments = self.segments(info)
                counter = self._counter(rt)  # the counts the sweep and warming made of these shards
                for n, (doc, pending) in enumerate(todo, 1):
                    own = [s for s in segments if s.document_id == doc.id]
                    label = f"Document {n} of {len(todo)} ({doc.name}): "
                    log = matrix.ReplyLog(self.settings.cache_dir / "matrix-replies", info.id, doc.id)
                    before = done  # cells of the run stored before this document
                    with closing(run_document(own, pending, rt, counter=counter, options=options,
                                              shard_tokens=self._shard_tokens(rt),
                                              rank=self._field_ranking(info), stopped=self._stop.is_set,
                                              label=label, memo=log)) as events:
                        for event in events:
                            if isinstance(event, Stopped):
                                stopped = True
                                break
                            if isinstance(event, MatrixCellRecord):
                                event.session_id, event.document_id, event.document_name = info.id, doc.id, doc.name
                                event.id = matrix.save_cell(self._database(), event)
                                done += 1
                                yield CellDone(matrix.get_cell(self._database(), event.id))
                            else:  # progress within the document, told in cells of the whole run (a cell this
                                # document has stored already is in both ``done`` and its share: counted once)
                                share = event.done / event.total if event.total else 0.0
                                yield Status(event.message, max(done, before + int(share * len(pending))), total)
                    if stopped:
                        break
                    log.discard()  # the document's cells are stored: its replies are of no more use
            finally:
                self._shared.answering = None
        finally:
            self._asking.leave(ticket)
        yield MatrixRun(done, total, reused, stopped, round(time.perf_counter() - started, 3))

    def _field_ranking(self, info: SessionRecord) -> Callable[[Field], list[int]]:
        """A field's passages of the session ranked by full-text relevance (the second pass keeps its document's)."""
        return lambda f: [sid for sid, _ in self.search(info, expand(f"{f.name} {f.question}"), limit=500)]

    # -- shard states --------------------------------------------------------------------------------
    def _shard_tokens(self, rt: Runtime) -> int:
        """Passage tokens one shard holds: the sweep and the matrix cut alike (see ``backend.shards``)."""
        return shards.budget(rt, max(self.settings.sweep_answer_tokens, self.settings.matrix_answer_tokens))

    def shard_prompts(self, session: SessionRef) -> list:
        """The prefixes of every shard a sweep or the matrix reads in this session: the sweep's shards in
        document order, then the matrix's own shard of each short document the sweep packs with others."""
        info = self.session(session, create=False)
        rt = self.runtime()
        counter, limit = self._counter(rt), self._shard_tokens(rt)
        segments = self.segments(info)
        plan = shards.plan(segments, counter, limit)
        prompts = [s.prefix() for s in plan]
        for shard in plan:
            if len(shard.document_ids) > 1:
                for doc_id in shard.document_ids:
                    own = [s for s in segments if s.document_id == doc_id]
                    prompts += [p.prefix() for p in shards.document_shards(own, counter, limit)]
        return prompts

    def warm(self, session: SessionRef, *, wait: bool = False, force: bool = False,
             progress: Callable[[Warming], None] = lambda w: None) -> Warming:
        """Prepare the session's shard states ahead of the first sweep or matrix question.

        In the background by default (what an upload starts with ``--warm-shards``): one shard at a time, only
        while no question holds or waits for the model, and a question that comes interrupts it. ``wait``
        waits for it and returns when every shard is kept (``app.py warm``). With ``--warm-shards ac`` nothing is
        prepared on battery, unless ``force`` (the user asked for it)."""
        info = self.session(session, create=False)
        if self.settings.warm_shards == "ac" and not force and on_battery():
            status = Warming(info.id, "off", message="On battery: shards are prepared on mains power only.")
            self._shared.warmer.update(status)
            return status
        status = self._shared.warmer.request(info.id, functools.partial(self._warm_job, info))
        return self._shared.warmer.wait(info.id, progress) if wait else status

    def warm_status(self, session: SessionRef) -> Warming | None:
        """How preparing the session's shards goes, if it was started in this process."""
        return self._shared.warmer.status.get(self.session(session, create=False).id)

    def _warm_job(self, info: SessionRecord, closing_: Callable[[], bool]) -> Warming:
        started = time.perf_counter()
        rt = self.runtime()
        prompts = self.shard_prompts(info)
        warmer = self._shared.warmer
        status = Warming(info.id, "warming", 0, len(prompts))
        pending = []
        for prompt in prompts:
            if rt.has_prefix(prompt):
                status.done += 1
            else:
                pending.append(prompt)
        while pending:
            warmer.update(status)
            if closing_() or not warmer.turn(self._asking.idle, rt):
                status.state = "stopped"
                break
            try:
                usage = rt.prefill(pending[0])
            finally:
                warmer.done_turn()
            if usage.finish_reason == "cancelled":  # a question came: it goes first, this shard later
                status.state = "paused"
                continue
            status.state = "warming"
            pending.pop(0)
            status.done += 1
            status.computed += 1
        else:
            status.state = "done"
        status.seconds = round(time.perf_counter() - started, 3)
        status.message = f"{status.done} of {status.total} shards prepared"
        return status

    def matrix_cells(self, session: SessionRef, fields: Sequence[str] | None = None) -> list[MatrixCellRecord]:
        """The session's stored matrix cells (of ``fields`` only, by name, when given), in document order."""
        return matrix.cells(self._database(), self.session(session, create=False).id, fields)

    def matrix_cell(self, cell_id: int, *, need: str = READ) -> MatrixCellRecord:
        """A stored cell, when it is in a session this user may read (``need``: or change)."""
        cell = matrix.get_cell(self._database(), cell_id)
        if not self._readable([cell.document_id]):
            raise NotFound("No such matrix cell.", hint="It may have been removed, or it is not shared with you.")
        if need != READ:
            owner = repo.get_session_by_id(self._database(), cell.session_id)
            self.session(owner.name if owner.owner == self.whoami().name else f"{owner.owner}/{owner.name}",
                         create=False, need=need)
        return cell

    def mark_cell(self, cell_id: int, mark: str, edit: str = "") -> MatrixCellRecord:
        """A reviewer's verdict on a cell: ``correct``, ``wrong``, ``edited`` (with the new answer), "" to clear.
        Kept across reruns and exported. Readers may not mark."""
        self.matrix_cell(cell_id, need=EDIT)
        matrix.mark_cell(self._database(), cell_id, mark, edit)
        return matrix.get_cell(self._database(), cell_id)

    def answer(self, session: SessionRef, question: str, **kw) -> Answer:
        """Ask and wait for the whole answer."""
        result = None
        for event in self.ask(session, question, **kw):
            if isinstance(event, Answer):
                result = event
        assert result is not None
        return result

    def turns(self, session: SessionRef) -> list[TurnRecord]:
        return repo.list_turns(self._database(), self.session(session, create=False).id)

    # -- evaluation runs ------------------------------------------------------------------------
    def eval_runs(self, kind: str | None = None) -> list[EvalRunRecord]:
        """Stored evaluation runs, newest first."""
        return eval_runs.list_runs(self._database(), kind)

    def eval_run(self, run_id: int) -> EvalRunRecord:
        return eval_runs.get_run(self._database(), run_id)

    def create_eval_run(self, run: EvalRunRecord) -> EvalRunRecord:
        return self.eval_run(eval_runs.create_run(self._database(), run))

    def unfinished_eval_run(self, run: EvalRunRecord) -> EvalRunRecord | None:
        """The newest unfinished run that measures what ``run`` does (same kind, model, window, parameters)."""
        return eval_runs.find_unfinished(self._database(), run)

    def set_eval_out_dir(self, run_id: int, out_dir: str) -> None:
        eval_runs.set_out_dir(self._database(), run_id, out_dir)

    def save_eval_item(self, run_id: int, key: str, result: dict[str, Any]) -> None:
        """Store one finished item of a run; a key stored twice keeps the first result."""
        eval_runs.save_item(self._database(), run_id, key, result)

    def eval_items(self, run_id: int) -> dict[str, dict[str, Any]]:
        return eval_runs.items(self._database(), run_id)

    def finish_eval_run(self, run_id: int, *, results: dict, summary: dict, status: str) -> None:
        eval_runs.finish_run(self._database(), run_id, results=results, summary=summary, status=status)


def replace_name(seen: SessionRecord, stored: SessionRecord) -> SessionRecord:
    """A session read again after a change, with the asking user's role kept."""
    stored.role = seen.role
    return stored


def runtime_choices() -> tuple[str, ...]:
    """What ``--runtime`` accepts: ``auto`` and every registered runtime, those of plugins included."""
    return ("auto", *available())


def _page_entry(document: DocumentRecord, page: int) -> dict | None:
    """What the extractor recorded about a page (its stored image, its size), by page number."""
    pages: Sequence[dict] = [p for p in document.meta.get("pages") or [] if isinstance(p, dict)]
    for entry in pages:
        if entry.get("page") == page:
            return entry
    return pages[page - 1] if 0 < page <= len(pages) else None


def _load(source: Path | io.BytesIO) -> Image.Image:
    with Image.open(source) as im:
        im.load()
        return im.copy()


def on_battery() -> bool:
    """Whether this machine runs on battery now, as far as Linux's power-supply class tells (False elsewhere)."""
    root = Path("/sys/class/power_supply")
    try:
        supplies = list(root.iterdir())
    except OSError:
        return False
    for supply in supplies:
        try:
            if (supply / "type").read_text().strip() == "Battery" and \
                    (supply / "status").read_text().strip() == "Discharging":
                return True
        except OSError:
            continue
    return False


def _waiting(place: int, expected: float | None) -> Waiting:
    where = "next in line" if place == 1 else f"{place} questions ahead"
    wait = "no estimate yet (no answer timed so far)" if expected is None else f"about {_duration(expected)}"
    return Waiting(f"Waiting for the model: {where}; expected wait {wait}", place=place, expected_s=expected)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{seconds / 60:.0f} min"
