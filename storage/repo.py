"""Plain functions over the database: sessions, documents, segments, turns, app state.

They return records (``core.records``), never live ORM objects, so callers (API,
ingest, backend) hold no database session.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError

from core.document import ParsedDocument
from core.errors import InvalidName, NotFound
from core.records import DocumentRecord, SegmentRecord, SessionRecord, TurnRecord
from storage.db import Database
from storage.models import (
    AppStateRow,
    CitationRow,
    DocumentRow,
    SegmentRow,
    SessionDocumentRow,
    SessionRow,
    ShareRow,
    TurnRow,
    UserRow,
    utcnow,
)

LOCAL_USER = "local"
_NAME_RE = re.compile(r"^[\w][\w .,()@+\-]{0,99}$", re.UNICODE)


# -- users and sessions --------------------------------------------------------
def ensure_user(db: Database, name: str = LOCAL_USER) -> int:
    with db.read() as s:
        uid = s.scalar(select(UserRow.id).where(UserRow.name == name))
    if uid is not None:
        return uid
    with db.write() as s:
        uid = s.scalar(select(UserRow.id).where(UserRow.name == name))
        if uid is None:
            user = UserRow(name=name)
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


def create_session(db: Database, name: str, *, user_id: int | None = None, settings: dict | None = None) -> SessionRecord:
    name = check_name(name)
    uid = user_id or ensure_user(db)
    with db.write() as s:
        existing = s.scalar(select(SessionRow).where(SessionRow.user_id == uid, SessionRow.name == name))
        if existing is None:
            existing = SessionRow(user_id=uid, name=name, settings=settings or {})
            s.add(existing)
            s.flush()
        owner = s.scalar(select(UserRow.name).where(UserRow.id == uid)) or ""
        return existing.to_record(owner=owner)


def _no_session(name: str) -> NotFound:
    """The same words whether the session does not exist or exists and the user may not see it."""
    return NotFound(f"No session named {name!r}.", hint="List sessions with `python app.py sessions`.")


def _role(s, row: SessionRow, uid: int, admin: bool) -> str | None:
    if row.user_id == uid:
        return "owner"
    shared = s.scalar(select(ShareRow.role).where(ShareRow.session_id == row.id, ShareRow.user_id == uid))
    return shared or ("admin" if admin else None)


def get_session(db: Database, name: str, *, user_id: int | None = None, create: bool = False,
                admin: bool = False) -> SessionRecord:
    """The session ``name`` as user ``user_id`` sees it: their own by that name, else one shared with them (or,
    for an admin, anyone's) by that name when only one is; ``OWNER/NAME`` names another user's session. A session
    the user may not see is not found, in the same words as one that does not exist."""
    uid = user_id or ensure_user(db)
    owner_name, _, plain = name.rpartition("/")
    with db.read() as s:
        q = select(SessionRow, UserRow.name).join(UserRow, UserRow.id == SessionRow.user_id).where(
            SessionRow.name == plain)
        q = q.where(UserRow.name == owner_name) if owner_name else q
        candidates = [(row, owner, _role(s, row, uid, admin)) for row, owner in s.execute(q.order_by(SessionRow.id))]
        visible = [(row, owner, role) for row, owner, role in candidates if role]
        own = [c for c in visible if c[2] == "owner"]
        shared = [c for c in visible if c[2] in ("editor", "reader")]
        chosen = own or shared or [c for c in visible if c[2] == "admin"]
        if len(chosen) == 1:
            row, owner, role = chosen[0]
            return row.to_record(owner=owner, role=role)
        if len(chosen) > 1:
            raise NotFound(f"Several sessions named {plain!r} are open to you.",
                           hint="Name it as OWNER/NAME, e.g. " + f"{chosen[0][1]}/{plain}.")
    if create and not owner_name:
        return create_session(db, name, user_id=uid)
    raise _no_session(name)


def get_session_by_id(db: Database, session_id: int) -> SessionRecord:
    with db.read() as s:
        row = s.get(SessionRow, session_id)
        if row is None:
            raise NotFound(f"Session {session_id} no longer exists.", hint="List sessions with `python app.py sessions`.")
        return row.to_record(owner=s.scalar(select(UserRow.name).where(UserRow.id == row.user_id)) or "")


def list_sessions(db: Database, *, user_id: int | None = None, admin: bool = False) -> list[SessionRecord]:
    """The sessions user ``user_id`` may see (their own, those shared with them; an admin: all), newest first."""
    uid = user_id or ensure_user(db)
    docs = (
        select(SessionDocumentRow.session_id, func.count().label("n"), func.sum(DocumentRow.tokens).label("t"))
        .join(DocumentRow, DocumentRow.id == SessionDocumentRow.document_id)
        .group_by(SessionDocumentRow.session_id)
        .subquery()
    )
    turns = select(TurnRow.session_id, func.count().label("n")).group_by(TurnRow.session_id).subquery()
    shares = select(ShareRow.session_id, ShareRow.role).where(ShareRow.user_id == uid).subquery()
    q = (
        select(SessionRow, UserRow.name, shares.c.role, docs.c.n, docs.c.t, turns.c.n)
        .join(UserRow, UserRow.id == SessionRow.user_id)
        .outerjoin(shares, shares.c.session_id == SessionRow.id)
        .outerjoin(docs, docs.c.session_id == SessionRow.id)
        .outerjoin(turns, turns.c.session_id == SessionRow.id)
        .order_by(SessionRow.updated_at.desc(), SessionRow.id.desc())
    )
    if not admin:
        q = q.where((SessionRow.user_id == uid) | (shares.c.role.is_not(None)))
    with db.read() as s:
        return [
            row.to_record(owner=owner, role="owner" if row.user_id == uid else (shared or "admin"),
                          documents=n or 0, tokens=t or 0, turns=tn or 0)
            for row, owner, shared, n, t, tn in s.execute(q)
        ]


def rename_session(db: Database, session_id: int, new_name: str) -> None:
    new_name = check_name(new_name)
    with db.write() as s:
        row = s.get(SessionRow, session_id)
        if row is None:
            raise NotFound(f"Session {session_id} no longer exists.")
        clash = s.scalar(
            select(SessionRow.id).where(SessionRow.user_id == row.user_id, SessionRow.name == new_name, SessionRow.id != row.id)
        )
        if clash is not None:
            raise InvalidName(f"A session named {new_name!r} already exists.", hint="Pick another name.")
        row.name = new_name


def update_session_settings(db: Database, session_id: int, settings: dict[str, Any]) -> None:
    with db.write() as s:
        row = s.get(SessionRow, session_id)
        if row is None:
            raise NotFound(f"Session {session_id} no longer exists.")
        row.settings = {**(row.settings or {}), **settings}


def delete_session(db: Database, session_id: int) -> None:
    with db.write() as s:
        row = s.get(SessionRow, session_id)
        if row is not None:
            s.delete(row)
        s.flush()
        _drop_orphan_documents(s)


def _drop_orphan_documents(s) -> None:
    orphans = select(DocumentRow.id).where(~DocumentRow.id.in_(select(SessionDocumentRow.document_id)))
    s.execute(delete(SegmentRow).where(SegmentRow.document_id.in_(orphans)))
    s.execute(delete(DocumentRow).where(DocumentRow.id.in_(orphans)))


# -- documents -----------------------------------------------------------------
def find_document(db: Database, sha256: str) -> int | None:
    with db.read() as s:
        return s.scalar(select(DocumentRow.id).where(DocumentRow.sha256 == sha256))


def link_document(db: Database, session_id: int, document_id: int, display_name: str) -> bool:
    """Add an already stored document to a session. False if it was there already."""
    with db.write() as s:
        return _link(s, session_id, document_id, display_name)


def _link(s, session_id: int, document_id: int, display_name: str) -> bool:
    exists = s.scalar(
        select(SessionDocumentRow.id).where(
            SessionDocumentRow.session_id == session_id, SessionDocumentRow.document_id == document_id
        )
    )
    if exists is not None:
        return False
    position = (s.scalar(select(func.max(SessionDocumentRow.position)).where(SessionDocumentRow.session_id == session_id)) or 0) + 1
    s.add(SessionDocumentRow(session_id=session_id, document_id=document_id, display_name=display_name, position=position))
    s.execute(update(SessionRow).where(SessionRow.id == session_id).values(updated_at=utcnow()))
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
    """Write a parsed document and link it to the session, all in one transaction. Two processes storing the same
    file at once (one database, two app processes): one writes it, the other's insert fails on the unique sha256
    and is retried, finding it there, and only links it."""
    for attempt in (1, 2):
        try:
            return _store_document(db, session_id, parsed, sha256=sha256, source_path=source_path, blob_sha=blob_sha)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _store_document(db: Database, session_id: int, parsed: ParsedDocument, *, sha256: str, source_path: str,
                    blob_sha: str | None) -> int:
    with db.write() as s:
        doc_id = s.scalar(select(DocumentRow.id).where(DocumentRow.sha256 == sha256))
        if doc_id is None:
            doc = DocumentRow.from_record(parsed, sha256=sha256, source_path=source_path, blob_sha=blob_sha,
                                          tokens=parsed.tokens)
            s.add(doc)
            s.flush()
            doc_id = doc.id
            if parsed.segments:
                rows = [SegmentRow.column_values(seg, document_id=doc_id, ordinal=i) for i, seg in enumerate(parsed.segments)]
                s.execute(SegmentRow.__table__.insert(), rows)
        _link(s, session_id, doc_id, parsed.name)
        return doc_id


def remove_document(db: Database, session_id: int, document_id: int) -> None:
    with db.write() as s:
        s.execute(
            delete(SessionDocumentRow).where(
                SessionDocumentRow.session_id == session_id, SessionDocumentRow.document_id == document_id
            )
        )
        _drop_orphan_documents(s)


def session_documents(db: Database, session_id: int) -> list[DocumentRecord]:
    nseg = select(SegmentRow.document_id, func.count().label("n")).group_by(SegmentRow.document_id).subquery()
    q = (
        select(DocumentRow, SessionDocumentRow.display_name, nseg.c.n)
        .join(SessionDocumentRow, SessionDocumentRow.document_id == DocumentRow.id)
        .outerjoin(nseg, nseg.c.document_id == DocumentRow.id)
        .where(SessionDocumentRow.session_id == session_id)
        .order_by(SessionDocumentRow.position)
    )
    with db.read() as s:
        return [
            d.to_record(name=name, segments=n or 0)
            for d, name, n in s.execute(q)
        ]


def get_document(db: Database, document_id: int) -> DocumentRecord:
    with db.read() as s:
        d = s.get(DocumentRow, document_id)
        if d is None:
            raise NotFound(f"Document {document_id} no longer exists.")
        n = s.scalar(select(func.count()).where(SegmentRow.document_id == d.id)) or 0
        return d.to_record(segments=n)


def readable_documents(db: Database, document_ids: Iterable[int], *, user_id: int) -> set[int]:
    """Those of the documents that are in a session the user owns or has a share of."""
    ids = list(document_ids)
    if not ids:
        return set()
    shared = select(ShareRow.session_id).where(ShareRow.user_id == user_id)
    q = (select(SessionDocumentRow.document_id).join(SessionRow, SessionRow.id == SessionDocumentRow.session_id)
         .where(SessionDocumentRow.document_id.in_(ids),
                (SessionRow.user_id == user_id) | SessionRow.id.in_(shared)))
    with db.read() as s:
        return set(s.scalars(q))


def session_segments(db: Database, session_id: int) -> list[SegmentRecord]:
    """Every segment of the session in a stable order: documents as added, then reading order."""
    q = (
        select(SegmentRow, SessionDocumentRow.display_name)
        .join(SessionDocumentRow, SessionDocumentRow.document_id == SegmentRow.document_id)
        .where(SessionDocumentRow.session_id == session_id)
        .order_by(SessionDocumentRow.position, SegmentRow.ordinal)
    )
    with db.read() as s:
        return [row.to_record(document_name=name) for row, name in s.execute(q)]


def get_segments(db: Database, ids: Iterable[int]) -> dict[int, SegmentRecord]:
    ids = list(ids)
    if not ids:
        return {}
    q = select(SegmentRow, DocumentRow.name).join(DocumentRow, DocumentRow.id == SegmentRow.document_id).where(SegmentRow.id.in_(ids))
    with db.read() as s:
        return {row.id: row.to_record(document_name=name) for row, name in s.execute(q)}


def search_segments(db: Database, session_id: int, query: str, limit: int = 200) -> list[tuple[int, float]]:
    """Segment ids of the session ranked by full-text relevance to ``query`` (best first) with their scores
    (higher is better): FTS5's bm25 on SQLite, the same bm25 over the GIN-indexed tsvector on PostgreSQL. Both
    match any of the question's content words (stemmed) and favour passages with more of them, rarer ones and
    shorter passages; equal scores come in passage order."""
    words = content_words(query)
    if not words:
        return []
    search = _search_postgresql if db.dialect == "postgresql" else _search_sqlite
    with db.read() as s:
        return search(s, session_id, words, limit)


def _search_sqlite(s, session_id: int, words: list[str], limit: int) -> list[tuple[int, float]]:
    sql = text(
        "SELECT f.rowid, bm25(segments_fts) AS score FROM segments_fts f "
        "JOIN segments sg ON sg.id = f.rowid "
        "JOIN session_documents sd ON sd.document_id = sg.document_id AND sd.session_id = :sid "
        "WHERE segments_fts MATCH :q ORDER BY score, f.rowid LIMIT :limit"
    )
    match = " OR ".join('"' + w + '"' for w in words)
    return [(rid, -score) for rid, score in s.execute(sql, {"sid": session_id, "q": match, "limit": limit})]


def _search_postgresql(s, session_id: int, words: list[str], limit: int) -> list[tuple[int, float]]:
    # FTS5's bm25 (k1 = 1.2, b = 0.75, idf = ln((N - n + 0.5) / (n + 0.5)), at least 1e-6) over the session's
    # passages, with the term counts of each tsvector (english stemming) and the passage's token estimate as its
    # length: ranked as SQLite ranks. The GIN index finds the passages; the words go in as values, never syntax.
    sql = text(
        "WITH terms AS (SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', :words))), "
        "query AS (SELECT plainto_tsquery('english', lexeme) AS one FROM terms), "
        "passages AS (SELECT sg.id, sg.tsv, GREATEST(sg.tokens, 1) AS len FROM segments sg "
        "  JOIN session_documents sd ON sd.document_id = sg.document_id AND sd.session_id = :sid), "
        "stats AS (SELECT count(*) AS n, avg(len) AS avglen FROM passages), "
        "hits AS (SELECT p.id, p.len, u.lexeme, cardinality(u.positions) AS tf FROM passages p "
        "  CROSS JOIN LATERAL unnest(p.tsv) u "
        "  WHERE p.tsv @@ (SELECT string_agg(one::text, ' | ')::tsquery FROM query) "
        "  AND u.lexeme IN (SELECT lexeme FROM terms)), "
        "df AS (SELECT lexeme, count(*) AS n FROM hits GROUP BY lexeme) "
        "SELECT hits.id, sum(GREATEST(ln((stats.n - df.n + 0.5) / (df.n + 0.5)), 1e-6) "
        "  * hits.tf * 2.2 / (hits.tf + 1.2 * (0.25 + 0.75 * hits.len / stats.avglen))) AS score "
        "FROM hits JOIN df USING (lexeme) CROSS JOIN stats GROUP BY hits.id ORDER BY score DESC, hits.id LIMIT :limit"
    )
    return [(rid, float(score)) for rid, score in s.execute(sql, {"sid": session_id, "words": " ".join(words),
                                                                   "limit": limit})]


_WORD = re.compile(r"\w{2,}", re.UNICODE)
_STOP = frozenset(
    "the a an and or of to in on for with what which who whom whose when where why how is are was were be been "
    "does do did this that these those it its as at by from about into than then there their they them can could "
    "would should will shall may might must not no yes any all each every document documents say says said".split()
)


def content_words(question: str) -> list[str]:
    """The question's content words (lower case, no stop words, each once, at most 32): what search matches."""
    words = [w.lower() for w in _WORD.findall(question)]
    return [w for w in dict.fromkeys(words) if w not in _STOP][:32]


# -- turns and citations ---------------------------------------------------------
def save_turn(db: Database, session_id: int, turn: TurnRecord) -> int:
    with db.write() as s:
        row = TurnRow.from_record(turn, session_id=session_id)
        row.citations = [CitationRow.from_record(c) for c in turn.citations]
        s.add(row)
        s.execute(update(SessionRow).where(SessionRow.id == session_id).values(updated_at=utcnow()))
        s.flush()
        return row.id


def list_turns(db: Database, session_id: int) -> list[TurnRecord]:
    q = (select(TurnRow, UserRow.name).outerjoin(UserRow, UserRow.id == TurnRow.user_id)
         .where(TurnRow.session_id == session_id).order_by(TurnRow.id))
    with db.read() as s:
        return [t.to_record(asked_by=name or "", citations=[c.to_record() for c in t.citations])
                for t, name in s.execute(q)]


# -- app state -------------------------------------------------------------------
def get_state(db: Database, key: str) -> dict[str, Any]:
    with db.read() as s:
        row = s.get(AppStateRow, key)
        return dict(row.value) if row else {}


def set_state(db: Database, key: str, value: dict[str, Any]) -> None:
    with db.write() as s:
        row = s.get(AppStateRow, key)
        if row is None:
            s.add(AppStateRow(key=key, value=value))
        else:
            row.value = value
