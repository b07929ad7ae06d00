"""Quire's Python API: what the CLI, the UI and the tests all call.

    from quire.api import Quire
    with Quire() as q:
        q.ingest("contracts", ["a.pdf", "b.pdf"])
        for event in q.ask("contracts", "Which contract ends first?"):
            ...

Nothing happens at import: the database opens on first use, the model loads on
the first question.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from backend import citations
from backend.base import Delta, GenerateOptions, Runtime, Usage
from backend.context import AssembledContext, TokenCounter, assemble
from backend.registry import create_runtime, resolve_name, runtime_class
from backend.sweep import Status, SweepResult, run_sweep, wants_exhaustive
from ingest.base import Progress
from quire.errors import QuireError
from quire.settings import Settings
from storage import repo
from storage.blobs import BlobStore
from storage.db import Database


STRATEGIES = ("auto", "full", "focus", "sweep")
WAIT_REPORT_S = 5.0  # a waiting asker hears where it stands at least this often


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
class Answer:
    """The end of a streamed answer: the stored turn and how it was produced."""

    turn: repo.TurnRecord
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.turn.answer


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


class Quire:
    def __init__(self, settings: Settings | None = None, *, runtime: Runtime | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self._db: Database | None = None
        self._runtime = runtime
        self._counters: dict[int, TokenCounter] = {}
        self._lock = threading.RLock()
        self._asking = AskQueue()

    # -- resources ---------------------------------------------------------------
    @property
    def db(self) -> Database:
        with self._lock:
            if self._db is None:
                self.settings.home.mkdir(parents=True, exist_ok=True)
                self._db = Database(self.settings.db_path)
            return self._db

    @property
    def blobs(self) -> BlobStore:
        return BlobStore(self.settings.blob_dir)

    @property
    def runtime_name(self) -> str:
        return self._runtime.name if self._runtime else resolve_name(self.settings)

    def runtime(self) -> Runtime:
        with self._lock:
            if self._runtime is None:
                self._runtime = create_runtime(self.settings).start()
            return self._runtime

    def close(self) -> None:
        with self._lock:
            if self._runtime is not None:
                self._runtime.shutdown()
                self._runtime = None
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> "Quire":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sessions --------------------------------------------------------------------
    def sessions(self) -> list[repo.SessionInfo]:
        return repo.list_sessions(self.db)

    def session(self, name: str, *, create: bool = True) -> repo.SessionInfo:
        return repo.get_session(self.db, name, create=create)

    def rename_session(self, name: str, new_name: str) -> repo.SessionInfo:
        info = self.session(name, create=False)
        repo.rename_session(self.db, info.id, new_name)
        return self.session(new_name, create=False)

    def set_session_settings(self, name: str, **values: Any) -> repo.SessionInfo:
        """Per-session settings (e.g. the strategy), kept with the session across restarts."""
        info = self.session(name, create=False)
        repo.update_session_settings(self.db, info.id, values)
        return self.session(name, create=False)

    def delete_session(self, name: str) -> None:
        info = self.session(name, create=False)
        repo.delete_session(self.db, info.id)

    # -- documents -------------------------------------------------------------------------
    def ingest(
        self,
        session: str,
        paths: Iterable[Path | str],
        *,
        passwords: dict[str, str] | str | None = None,
        progress: Callable[[Progress], None] = lambda e: None,
        cancelled: Callable[[], bool] = lambda: False,
        names: dict[str, str] | None = None,
    ):
        from ingest.pipeline import Ingestor

        info = self.session(session)
        ingestor = Ingestor(self.settings, self.db, self.blobs)
        return ingestor.ingest(info.id, paths, passwords=passwords, progress=progress, cancelled=cancelled, names=names)

    def warm_ingest(self) -> None:
        """Start the extraction workers now (their imports take about a second), so the first
        upload does not wait for them. The app calls it at launch."""
        from ingest.pipeline import Ingestor

        if self.settings.workers != 1:
            Ingestor(self.settings, self.db, self.blobs).warm()

    def documents(self, session: str) -> list[repo.DocumentInfo]:
        return repo.session_documents(self.db, self.session(session, create=False).id)

    def remove_document(self, session: str, document_id: int) -> None:
        repo.remove_document(self.db, self.session(session, create=False).id, document_id)

    def budget(self, session: str, *, exact: bool = False) -> Budget:
        """Tokens per document against the window, before anything is sent.

        Stored counts are ingest-time estimates; ``exact`` recounts with the
        runtime's own tokenizer (which loads the model).
        """
        docs = self.documents(session)
        if exact or self._runtime:
            window = self.runtime().context_window
        else:  # before the model is loaded: what the chosen runtime defaults to
            window = self.settings.context_window or runtime_class(resolve_name(self.settings)).DEFAULT_WINDOW
        rows = [(d.name, d.tokens) for d in docs]
        if exact:
            rt = self.runtime()
            segs = repo.session_segments(self.db, self.session(session, create=False).id)
            per_doc: dict[int, int] = {}
            for s in segs:
                per_doc[s.document_id] = per_doc.get(s.document_id, 0) + rt.count_tokens(s.text)
            rows = [(d.name, per_doc.get(d.id, 0)) for d in docs]
        return Budget(window, self.settings.max_answer_tokens, rows)

    # -- questions ---------------------------------------------------------------------------
    def assemble(self, session: str, question: str, *, strategy: str | None = None) -> AssembledContext:
        info = self.session(session, create=False)
        return self._assemble(info, self._segments(info), question, strategy or self.settings.strategy)

    def _segments(self, info: repo.SessionInfo) -> list[repo.SegmentRecord]:
        segments = repo.session_segments(self.db, info.id)
        if not segments:
            raise QuireError(f"Session {info.name!r} has no documents yet.",
                             hint="Add files first (upload, or `python app.py ingest`).")
        return segments

    def _counter(self, rt: Runtime) -> TokenCounter:
        """Token counts of rendered passages, remembered per runtime across questions."""
        return self._counters.setdefault(id(rt), TokenCounter(rt))

    def _assemble(self, info: repo.SessionInfo, segments: list[repo.SegmentRecord], question: str,
                  strategy: str) -> AssembledContext:
        rt = self.runtime()
        return assemble(
            segments,
            question,
            rt,
            max_answer_tokens=self.settings.max_answer_tokens,
            strategy="auto" if strategy == "sweep" else strategy,  # sweep is run by ask(), not assembled
            rank=lambda q: [sid for sid, _ in repo.search_segments(self.db, info.id, q, limit=500)],
            counter=self._counter(rt),
            image_path=self.blobs.find,
        )

    def ask(self, session: str, question: str, *, strategy: str | None = None) -> Iterator[Delta | Status | Answer]:
        """Stream the answer: Delta (answer text) and Status (progress) events; the last is the stored :class:`Answer`.

        One question at a time holds the model; while others are ahead, Waiting events say this one's
        place in line and the expected wait (when the line moves, and every WAIT_REPORT_S)."""
        question = (question or "").strip()
        if not question:
            raise QuireError("The question is empty.", hint="Type a question about the documents.")
        requested = strategy or self.settings.strategy
        if requested not in STRATEGIES:
            raise QuireError(f"Unknown strategy {requested!r}.", hint=f"Choose one of: {', '.join(STRATEGIES)}.")
        info = self.session(session, create=False)
        ticket = self._asking.join()
        try:
            while place := self._asking.place(ticket):
                yield _waiting(place, self._asking.expected_wait(ticket))
                self._asking.wait(ticket, WAIT_REPORT_S)
            yield from self._answer(info, question, requested)
        finally:  # answered, failed, or the asker went away (the generator closed): the line moves on
            self._asking.leave(ticket)

    def _answer(self, info: repo.SessionInfo, question: str, requested: str) -> Iterator[Delta | Status | Answer]:
        started = time.perf_counter()
        rt = self.runtime()
        options = GenerateOptions(
            max_tokens=self.settings.max_answer_tokens, temperature=self.settings.temperature, seed=self.settings.seed
        )
        segments = self._segments(info)
        ctx = None if requested == "sweep" else self._assemble(info, segments, question, requested)
        use_sweep = requested == "sweep" or (requested == "auto" and ctx.narrowed and wants_exhaustive(question))
        parts: list[str] = []
        usage = Usage()
        if use_sweep:
            for event in run_sweep(segments, question, rt, counter=self._counter(rt), options=options):
                if isinstance(event, SweepResult):
                    ctx, usage = event.context, event.usage
                    continue
                if isinstance(event, Delta):
                    parts.append(event.text)
                yield event
        else:
            yield Status(f"Reading {ctx.segments_used} passages ({ctx.tokens_used} tokens)", 0, 1)
            for event in rt.generate(ctx.prompt, options):
                if isinstance(event, Delta):
                    parts.append(event.text)
                    yield event
                else:
                    usage = event
        answer = "".join(parts).strip()
        checked = citations.check(answer, ctx.refs)
        meta = ctx.metadata() | {
            "unknown_refs": checked.unknown_refs,
            "wall_s": round(time.perf_counter() - started, 4),
            "finish_reason": usage.finish_reason,
            **usage.details,
        }
        turn = repo.TurnRecord(
            id=0, question=question, answer=answer, runtime=rt.name, model=rt.model_name, strategy=ctx.strategy,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens, ttft_s=round(usage.ttft_s, 4), total_s=round(usage.total_s, 4),
            meta=meta, citations=checked.citations,
        )
        turn.id = repo.save_turn(self.db, info.id, turn)
        yield Answer(turn, meta)

    def answer(self, session: str, question: str, **kw) -> Answer:
        """Ask and wait for the whole answer."""
        result = None
        for event in self.ask(session, question, **kw):
            if isinstance(event, Answer):
                result = event
        assert result is not None
        return result

    def turns(self, session: str) -> list[repo.TurnRecord]:
        return repo.list_turns(self.db, self.session(session, create=False).id)

    # -- export ----------------------------------------------------------------------------------
    def export(self, session: str, fmt: str, out: Path | str) -> list[Path]:
        import export

        info = self.session(session, create=False)
        return export.export_session(self.db, self.blobs, info.id, fmt, Path(out))



def _waiting(place: int, expected: float | None) -> Waiting:
    where = "next in line" if place == 1 else f"{place} questions ahead"
    wait = "no estimate yet (no answer timed so far)" if expected is None else f"about {_duration(expected)}"
    return Waiting(f"Waiting for the model: {where}; expected wait {wait}", 0, 0, place, expected)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{seconds / 60:.0f} min"
