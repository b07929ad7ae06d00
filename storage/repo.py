"""Plain functions over the database: sessions, documents, segments, turns.

They return small dataclasses, never live ORM objects, so callers (CLI, UI,
backend) hold no database session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy import delete, func, select, text, update

from quire.document import Locator, ParsedDocument
from quire.errors import InvalidName, NotFound
from storage.db import Database
from storage.models import (
    Citation,
    Document,
    SegmentRow,
    SessionDocument,
    Setting,
    Turn,
    User,
    Workspace,
    utcnow,
)

LOCAL_USER = "local"
_NAME_RE = re.compile(r"^[\w][\w .,()@+\-]{0,99}$", re.UNICODE)


# -- value objects returned to callers ----------------------------------------
@dataclass
class SessionInfo:
    id: int
    name: str
    settings: dict[str, Any]
    documents: int = 0
    tokens: int = 0
    turns: int = 0


@dataclass
class DocumentInfo:
    id: int
    name: str
    kind: str
    sha256: str
    pages: int
    tokens: int
    segments: int
    source_path: str
    blob_sha: str | None
    meta: dict[str, Any]

    @property
    def warnings(self) -> list[str]:
        """What went wrong while it was read (a page left out, a repair), as its extractor wrote it down."""
        return [str(w) for w in self.meta.get("warnings") or []]


@dataclass
class SegmentRecord:
    id: int
    document_id: int
    document_name: str
    ordinal: int
    kind: str
    text: str
    locator: Locator
    tokens: int
    image_sha: str | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class CitationRecord:
    ref: str
    segment_id: int | None
    document_name: str
    locator: Locator
    quote: str
    status: str
    origin: str = "model"


@dataclass
class TurnRecord:
    id: int
    question: str
    answer: str
    runtime: str
    model: str
    strategy: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    ttft_s: float
    total_s: float
    meta: dict[str, Any]
    citations: list[CitationRecord]
    created_at: str = ""


# -- users and sessions --------------------------------------------------------
def ensure_user(db: Database, name: str = LOCAL_USER) -> int:
    with db.read() as s:
        uid = s.scalar(select(User.id).where(User.name == name))
    if uid is not None:
        return uid
    with db.write() as s:
        uid = s.scalar(select(User.id).where(User.name == name))
        if uid is None:
            user = User(name=name)
            s.add(user)
            s.flush()
            uid = user.id
    return uid


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME_RE.match(name):
        raise InvalidName(
            f"{name!r} is not a usable session name.",
            hint="Use 1-100 letters, digits, spaces or . , ( ) @ + - _ and start with a letter or digit.",
        )
    return name


def create_session(db: Database, name: str, *, user: str = LOCAL_USER, settings: dict | None = None) -> SessionInfo:
    name = check_name(name)
    uid = ensure_user(db, user)
    with db.write() as s:
        existing = s.scalar(select(Workspace).where(Workspace.user_id == uid, Workspace.name == name))
        if existing is None:
            existing = Workspace(user_id=uid, name=name, settings=settings or {})
            s.add(existing)
            s.flush()
        return SessionInfo(existing.id, existing.name, dict(existing.settings or {}))


def get_session(db: Database, name: str, *, user: str = LOCAL_USER, create: bool = False) -> SessionInfo:
    uid = ensure_user(db, user)
    with db.read() as s:
        ws = s.scalar(select(Workspace).where(Workspace.user_id == uid, Workspace.name == name))
        if ws is not None:
            return SessionInfo(ws.id, ws.name, dict(ws.settings or {}))
    if create:
        return create_session(db, name, user=user)
    raise NotFound(f"No session named {name!r}.", hint="List sessions with `python app.py sessions`.")


def get_session_by_id(db: Database, session_id: int) -> SessionInfo:
    with db.read() as s:
        ws = s.get(Workspace, session_id)
        if ws is None:
            raise NotFound(f"Session {session_id} no longer exists.", hint="List sessions with `python app.py sessions`.")
        return SessionInfo(ws.id, ws.name, dict(ws.settings or {}))


def list_sessions(db: Database, *, user: str = LOCAL_USER) -> list[SessionInfo]:
    uid = ensure_user(db, user)
    docs = (
        select(SessionDocument.session_id, func.count().label("n"), func.sum(Document.tokens).label("t"))
        .join(Document, Document.id == SessionDocument.document_id)
        .group_by(SessionDocument.session_id)
        .subquery()
    )
    turns = select(Turn.session_id, func.count().label("n")).group_by(Turn.session_id).subquery()
    q = (
        select(Workspace, docs.c.n, docs.c.t, turns.c.n)
        .outerjoin(docs, docs.c.session_id == Workspace.id)
        .outerjoin(turns, turns.c.session_id == Workspace.id)
        .where(Workspace.user_id == uid)
        .order_by(Workspace.updated_at.desc(), Workspace.id.desc())
    )
    with db.read() as s:
        return [
            SessionInfo(ws.id, ws.name, dict(ws.settings or {}), n or 0, t or 0, tn or 0)
            for ws, n, t, tn in s.execute(q)
        ]


def rename_session(db: Database, session_id: int, new_name: str) -> None:
    new_name = check_name(new_name)
    with db.write() as s:
        ws = s.get(Workspace, session_id)
        if ws is None:
            raise NotFound(f"Session {session_id} no longer exists.")
        clash = s.scalar(
            select(Workspace.id).where(Workspace.user_id == ws.user_id, Workspace.name == new_name, Workspace.id != ws.id)
        )
        if clash is not None:
            raise InvalidName(f"A session named {new_name!r} already exists.", hint="Pick another name.")
        ws.name = new_name


def update_session_settings(db: Database, session_id: int, settings: dict[str, Any]) -> None:
    with db.write() as s:
        ws = s.get(Workspace, session_id)
        if ws is None:
            raise NotFound(f"Session {session_id} no longer exists.")
        ws.settings = {**(ws.settings or {}), **settings}


def delete_session(db: Database, session_id: int) -> None:
    with db.write() as s:
        ws = s.get(Workspace, session_id)
        if ws is not None:
            s.delete(ws)
        s.flush()
        _drop_orphan_documents(s)


def _drop_orphan_documents(s) -> None:
    orphans = select(Document.id).where(~Document.id.in_(select(SessionDocument.document_id)))
    s.execute(delete(SegmentRow).where(SegmentRow.document_id.in_(orphans)))
    s.execute(delete(Document).where(Document.id.in_(orphans)))


def touch_session(db: Database, session_id: int) -> None:
    with db.write() as s:
        s.execute(update(Workspace).where(Workspace.id == session_id).values(updated_at=utcnow()))


# -- documents -----------------------------------------------------------------
def find_document(db: Database, sha256: str) -> int | None:
    with db.read() as s:
        return s.scalar(select(Document.id).where(Document.sha256 == sha256))


def link_document(db: Database, session_id: int, document_id: int, display_name: str) -> bool:
    """Add an already stored document to a session. False if it was there already."""
    with db.write() as s:
        return _link(s, session_id, document_id, display_name)


def _link(s, session_id: int, document_id: int, display_name: str) -> bool:
    exists = s.scalar(
        select(SessionDocument.id).where(
            SessionDocument.session_id == session_id, SessionDocument.document_id == document_id
        )
    )
    if exists is not None:
        return False
    position = (s.scalar(select(func.max(SessionDocument.position)).where(SessionDocument.session_id == session_id)) or 0) + 1
    s.add(SessionDocument(session_id=session_id, document_id=document_id, display_name=display_name, position=position))
    s.execute(update(Workspace).where(Workspace.id == session_id).values(updated_at=utcnow()))
    return True


def store_document(
    db: Database,
    session_id: int,
    parsed: ParsedDocument,
    *,
    sha256: str,
    source_path: str = "",
    blob_sha: str | None = None,
) -> int:
    """Write a parsed document and link it to the session, all in one transaction."""
    with db.write() as s:
        doc_id = s.scalar(select(Document.id).where(Document.sha256 == sha256))
        if doc_id is None:
            doc = Document(
                sha256=sha256,
                name=parsed.name,
                kind=parsed.kind,
                source_path=source_path,
                blob_sha=blob_sha,
                pages=parsed.pages,
                tokens=parsed.tokens,
                meta=parsed.meta,
            )
            s.add(doc)
            s.flush()
            doc_id = doc.id
            if parsed.segments:
                s.execute(
                SegmentRow.__table__.insert(),
                [
                    {
                        "document_id": doc_id,
                        "ordinal": i,
                        "kind": seg.kind,
                        "text": seg.text,
                        "locator": seg.locator.to_dict(),
                        "tokens": seg.tokens,
                        "image_sha": seg.image_sha,
                        "meta": seg.meta,
                    }
                    for i, seg in enumerate(parsed.segments)
                ],
                )
        _link(s, session_id, doc_id, parsed.name)
        return doc_id


def remove_document(db: Database, session_id: int, document_id: int) -> None:
    with db.write() as s:
        s.execute(
            delete(SessionDocument).where(
                SessionDocument.session_id == session_id, SessionDocument.document_id == document_id
            )
        )
        _drop_orphan_documents(s)


def session_documents(db: Database, session_id: int) -> list[DocumentInfo]:
    nseg = select(SegmentRow.document_id, func.count().label("n")).group_by(SegmentRow.document_id).subquery()
    q = (
        select(Document, SessionDocument.display_name, nseg.c.n)
        .join(SessionDocument, SessionDocument.document_id == Document.id)
        .outerjoin(nseg, nseg.c.document_id == Document.id)
        .where(SessionDocument.session_id == session_id)
        .order_by(SessionDocument.position)
    )
    with db.read() as s:
        return [
            DocumentInfo(d.id, name, d.kind, d.sha256, d.pages, d.tokens, n or 0, d.source_path, d.blob_sha, dict(d.meta or {}))
            for d, name, n in s.execute(q)
        ]


def get_document(db: Database, document_id: int) -> DocumentInfo:
    with db.read() as s:
        d = s.get(Document, document_id)
        if d is None:
            raise NotFound(f"Document {document_id} no longer exists.")
        n = s.scalar(select(func.count()).where(SegmentRow.document_id == d.id)) or 0
        return DocumentInfo(d.id, d.name, d.kind, d.sha256, d.pages, d.tokens, n, d.source_path, d.blob_sha, dict(d.meta or {}))


def _segment_record(row: SegmentRow, name: str) -> SegmentRecord:
    return SegmentRecord(
        row.id, row.document_id, name, row.ordinal, row.kind, row.text,
        Locator.from_dict(row.locator), row.tokens, row.image_sha, dict(row.meta or {}),
    )


def session_segments(db: Database, session_id: int) -> list[SegmentRecord]:
    """Every segment of the session in a stable order: documents as added, then reading order."""
    q = (
        select(SegmentRow, SessionDocument.display_name)
        .join(SessionDocument, SessionDocument.document_id == SegmentRow.document_id)
        .where(SessionDocument.session_id == session_id)
        .order_by(SessionDocument.position, SegmentRow.ordinal)
    )
    with db.read() as s:
        return [_segment_record(row, name) for row, name in s.execute(q)]


def get_segments(db: Database, ids: Iterable[int]) -> dict[int, SegmentRecord]:
    ids = list(ids)
    if not ids:
        return {}
    q = select(SegmentRow, Document.name).join(Document, Document.id == SegmentRow.document_id).where(SegmentRow.id.in_(ids))
    with db.read() as s:
        return {row.id: _segment_record(row, name) for row, name in s.execute(q)}


def search_segments(db: Database, session_id: int, query: str, limit: int = 200) -> list[tuple[int, float]]:
    """Segment ids of the session ranked by FTS5 bm25 (best first) with their scores."""
    match = fts_query(query)
    if not match:
        return []
    sql = text(
        "SELECT f.rowid, bm25(segments_fts) AS score FROM segments_fts f "
        "JOIN segments sg ON sg.id = f.rowid "
        "JOIN session_documents sd ON sd.document_id = sg.document_id AND sd.session_id = :sid "
        "WHERE segments_fts MATCH :q ORDER BY score LIMIT :limit"
    )
    with db.read() as s:
        return [(rid, -score) for rid, score in s.execute(sql, {"sid": session_id, "q": match, "limit": limit})]


_WORD = re.compile(r"\w{2,}", re.UNICODE)
_STOP = frozenset(
    "the a an and or of to in on for with what which who whom whose when where why how is are was were be been "
    "does do did this that these those it its as at by from about into than then there their they them can could "
    "would should will shall may might must not no yes any all each every document documents say says said".split()
)


def fts_query(question: str) -> str:
    """An OR query of the question's content words, quoted so no FTS syntax leaks through."""
    words = [w.lower() for w in _WORD.findall(question)]
    terms = [w for w in dict.fromkeys(words) if w not in _STOP]
    return " OR ".join('"' + w.replace('"', "") + '"' for w in terms[:32])


# -- turns and citations ---------------------------------------------------------
def save_turn(db: Database, session_id: int, turn: TurnRecord) -> int:
    with db.write() as s:
        row = Turn(
            session_id=session_id,
            question=turn.question,
            answer=turn.answer,
            runtime=turn.runtime,
            model=turn.model,
            strategy=turn.strategy,
            prompt_tokens=turn.prompt_tokens,
            completion_tokens=turn.completion_tokens,
            cached_tokens=turn.cached_tokens,
            ttft_s=turn.ttft_s,
            total_s=turn.total_s,
            meta=turn.meta,
        )
        row.citations = [
            Citation(
                ref=c.ref,
                segment_id=c.segment_id,
                document_name=c.document_name,
                locator=c.locator.to_dict(),
                quote=c.quote,
                status=c.status,
                origin=c.origin,
            )
            for c in turn.citations
        ]
        s.add(row)
        s.execute(update(Workspace).where(Workspace.id == session_id).values(updated_at=utcnow()))
        s.flush()
        return row.id


def list_turns(db: Database, session_id: int) -> list[TurnRecord]:
    with db.read() as s:
        rows = s.scalars(select(Turn).where(Turn.session_id == session_id).order_by(Turn.id)).all()
        return [
            TurnRecord(
                t.id, t.question, t.answer, t.runtime, t.model, t.strategy, t.prompt_tokens,
                t.completion_tokens, t.cached_tokens, t.ttft_s, t.total_s, dict(t.meta or {}),
                [
                    CitationRecord(c.ref, c.segment_id, c.document_name, Locator.from_dict(c.locator), c.quote, c.status, c.origin)
                    for c in t.citations
                ],
                t.created_at.isoformat(timespec="seconds") if t.created_at else "",
            )
            for t in rows
        ]


# -- app state -------------------------------------------------------------------
def get_state(db: Database, key: str) -> dict[str, Any]:
    with db.read() as s:
        row = s.get(Setting, key)
        return dict(row.value) if row else {}


def set_state(db: Database, key: str, value: dict[str, Any]) -> None:
    with db.write() as s:
        row = s.get(Setting, key)
        if row is None:
            s.add(Setting(key=key, value=value))
        else:
            row.value = value
