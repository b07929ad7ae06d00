"""Real SQLite files: migrations, round trips, one-transaction documents, FTS ranking."""

import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from core.document import Locator, ParsedDocument, Segment
from core.errors import InvalidName, NotFound
from core.records import CitationRecord, TurnRecord
from storage import repo
from storage.db import MIGRATIONS, Database
from storage.models import (
    ApiTokenRow,
    Base,
    CitationRow,
    DocumentRow,
    EvalRunRow,
    MatrixCellRow,
    SegmentRow,
    SessionRow,
    ShareRow,
    TurnRow,
    UserRow,
)


def _doc(name="a.txt", words=("alpha", "beta")):
    segs = [Segment("text", f"{w} paragraph number {i}", Locator(path=name, line_start=i + 1, line_end=i + 1), tokens=4)
            for i, w in enumerate(words)]
    return ParsedDocument(name, "text", segs)


def test_migration_creates_schema_and_wal(db):
    names = set(inspect(db.engine).get_table_names())
    assert {"users", "sessions", "documents", "session_documents", "segments", "turns", "citations"} <= names
    with db.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar()


def test_reopening_applies_nothing_twice(settings):
    Database(settings.db_path).close()
    db = Database(settings.db_path)  # a second open must be a no-op
    assert repo.list_sessions(db) == []


def test_session_round_trip_in_a_new_process(db, settings):
    s = repo.create_session(db, "Contracts 2024")
    repo.store_document(db, s.id, _doc(), sha256="a" * 64)
    cit = CitationRecord(ref="S1", segment_id=None, document_name="a.txt",
                         locator=Locator(path="a.txt", line_start=1, line_end=1), quote="alpha", status="verified")
    turn = TurnRecord(question="q?", answer="answer [S1]", runtime="llamacpp", model="m", strategy="full",
                      prompt_tokens=10, completion_tokens=2, cached_tokens=5, ttft_s=0.1, total_s=0.2,
                      meta={"share_seen": 1.0}, citations=[cit])
    repo.save_turn(db, s.id, turn)
    code = (
        "from storage.db import Database; from storage import repo; import sys;"
        f"db=Database(r'{settings.db_path}'); s=repo.get_session(db,'Contracts 2024');"
        "t=repo.list_turns(db,s.id)[0]; d=repo.session_documents(db,s.id)[0];"
        "print(d.name, d.segments, t.answer, t.citations[0].locator.label(), t.citations[0].status, t.cached_tokens)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["a.txt", "2", "answer", "[S1]", "a.txt:1", "verified", "5"]


def test_same_document_twice_is_stored_once(db):
    s1 = repo.create_session(db, "one")
    s2 = repo.create_session(db, "two")
    a = repo.store_document(db, s1.id, _doc(), sha256="b" * 64)
    b = repo.store_document(db, s1.id, _doc(), sha256="b" * 64)
    c = repo.store_document(db, s2.id, _doc(), sha256="b" * 64)
    assert a == b == c
    assert len(repo.session_documents(db, s1.id)) == 1
    with db.read() as s:
        assert s.execute(text("SELECT count(*) FROM segments")).scalar() == 2


def test_a_failed_write_leaves_no_half_document(db):
    s = repo.create_session(db, "x")
    bad = _doc()
    bad.segments[1].meta = {"not json": object()}  # fails while the segments are written
    with pytest.raises(Exception):
        repo.store_document(db, s.id, bad, sha256="c" * 64)
    with db.read() as ses:
        assert ses.execute(text("SELECT count(*) FROM documents")).scalar() == 0
        assert ses.execute(text("SELECT count(*) FROM segments")).scalar() == 0
    assert repo.session_documents(db, s.id) == []


def test_fts_ranks_matching_segments(db):
    s = repo.create_session(db, "x")
    repo.store_document(db, s.id, _doc(words=("alpha", "beta", "gamma")), sha256="d" * 64)
    hits = repo.search_segments(db, s.id, "Where is GAMMA mentioned?")
    segs = repo.get_segments(db, [h[0] for h in hits])
    assert [segs[h[0]].text.split()[0] for h in hits] == ["gamma"]
    assert repo.search_segments(db, s.id, 'NEAR("x" AND) *') == []  # FTS syntax never leaks through


def test_delete_session_drops_orphans_only(db):
    s1, s2 = repo.create_session(db, "one"), repo.create_session(db, "two")
    repo.store_document(db, s1.id, _doc(), sha256="e" * 64)
    repo.store_document(db, s2.id, _doc(), sha256="e" * 64)
    repo.store_document(db, s1.id, _doc("b.txt"), sha256="f" * 64)
    repo.delete_session(db, s1.id)
    with db.read() as ses:
        assert ses.execute(text("SELECT count(*) FROM documents")).scalar() == 1
    assert [d.name for d in repo.session_documents(db, s2.id)] == ["a.txt"]


def test_names_are_checked(db):
    with pytest.raises(InvalidName):
        repo.create_session(db, "../etc")
    s = repo.create_session(db, "ok")
    repo.create_session(db, "taken")
    with pytest.raises(InvalidName):
        repo.rename_session(db, s.id, "taken")
    repo.rename_session(db, s.id, "renamed")
    assert repo.get_session(db, "renamed").id == s.id
    with pytest.raises(NotFound):
        repo.get_session(db, "ok")


# -- one schema: records, ORM rows and migrations agree ---------------------------------------------------
def test_models_match_the_migrated_schema(db):
    """The ORM classes describe exactly the tables the migrations make (no column in one and not the other)."""
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    fts = ("segments_fts",)  # the full-text index and its shadow tables: made by SQL in 0001, no ORM class
    columns = [d for d in diffs if d[0] in ("add_column", "remove_column", "add_table", "remove_table")
               and not (d[0] == "remove_table" and d[1].name.startswith(fts))]
    assert columns == []


@pytest.mark.parametrize("row", [SessionRow, DocumentRow, SegmentRow, TurnRow, CitationRow, EvalRunRow, UserRow,
                                 ShareRow, ApiTokenRow, MatrixCellRow])
def test_every_record_field_is_a_column_or_said_not_to_be(row):
    """A record field named like no column of its table must be one of the few taken from elsewhere."""
    derived = {"documents", "tokens", "turns", "segments", "document_name", "citations", "owner", "role", "asked_by",
               "has_password", "user_name"}
    missing = {f.name for f in fields(row.record)} - set(row.__table__.columns.keys())
    assert missing <= derived, f"{row.record.__name__} has fields that are no column of {row.__tablename__}: {missing}"


def test_records_round_trip_through_their_rows(db):
    session = repo.create_session(db, "round trip", settings={"strategy": "focus"})
    assert repo.get_session(db, "round trip") == session and session.settings == {"strategy": "focus"}
    parsed = ParsedDocument("a.pdf", "pdf", [
        Segment("text", "alpha", Locator(page=2, bbox=(1.0, 2.0, 3.0, 4.0)), tokens=3, meta={"k": 1}),
        Segment("image", "", Locator(page=3), tokens=0, image_sha="f" * 64),
    ], pages=3, meta={"pages": [{"page": 1}]})
    doc_id = repo.store_document(db, session.id, parsed, sha256="9" * 64, source_path="/x/a.pdf", blob_sha="8" * 64)
    [doc] = repo.session_documents(db, session.id)
    assert doc == repo.get_document(db, doc_id)
    assert (doc.name, doc.kind, doc.pages, doc.tokens, doc.segments, doc.source_path, doc.blob_sha, doc.meta) == (
        "a.pdf", "pdf", 3, 3, 2, "/x/a.pdf", "8" * 64, {"pages": [{"page": 1}]})
    first, second = repo.session_segments(db, session.id)
    for stored, original, ordinal in ((first, parsed.segments[0], 0), (second, parsed.segments[1], 1)):
        assert (stored.kind, stored.text, stored.locator, stored.tokens, stored.image_sha, stored.meta) == (
            original.kind, original.text, original.locator, original.tokens, original.image_sha, original.meta)
        assert (stored.document_id, stored.document_name, stored.ordinal) == (doc_id, "a.pdf", ordinal)
    citation = CitationRecord(ref="S1", segment_id=first.id, document_name="a.pdf", locator=first.locator,
                              quote="alpha", status="verified", origin="matched")
    turn = TurnRecord(question="q", answer="a [S1]", runtime="r", model="m", strategy="focus", prompt_tokens=9,
                      completion_tokens=2, cached_tokens=1, ttft_s=0.5, total_s=1.5, meta={"notes": ["n"]},
                      citations=[citation])
    turn_id = repo.save_turn(db, session.id, turn)
    [back] = repo.list_turns(db, session.id)
    assert back.created_at and back == replace(turn, id=turn_id, created_at=back.created_at)


# -- migrations upgrade a database made by the previous version ---------------------------------------------
def _alembic(path: Path) -> tuple[Config, ScriptDirectory]:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg, ScriptDirectory.from_config(cfg)


def test_a_database_of_the_previous_migration_upgrades_with_its_data(tmp_path):
    """Made at the revision before head, with data in it; opening it with this code upgrades it and keeps the data."""
    path = tmp_path / "old.db"
    cfg, scripts = _alembic(path)
    head = scripts.get_revision(scripts.get_current_head())
    previous = head.down_revision
    assert previous, "only one migration: nothing to upgrade from"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, previous)
        conn.execute(text("INSERT INTO users (id, name, created_at) VALUES (1, 'local', '2026-01-01 00:00:00')"))
        conn.execute(text("INSERT INTO sessions (id, user_id, name, settings, created_at, updated_at) "
                          "VALUES (1, 1, 'kept', '{\"strategy\": \"sweep\"}', :t, :t)"), {"t": "2026-01-01 00:00:00"})
        conn.execute(text("INSERT INTO documents (id, sha256, name, kind, source_path, blob_sha, pages, tokens, meta, "
                          "created_at) VALUES (1, :sha, 'a.txt', 'text', '', NULL, 0, 4, '{}', '2026-01-01 00:00:00')"),
                     {"sha": "a" * 64})
        conn.execute(text("INSERT INTO session_documents (session_id, document_id, display_name, position, added_at) "
                          "VALUES (1, 1, 'a.txt', 1, '2026-01-01 00:00:00')"))
        conn.execute(text("INSERT INTO segments (document_id, ordinal, kind, text, locator, tokens, image_sha, meta) "
                          "VALUES (1, 0, 'text', 'the old passage', '{\"path\": \"a.txt\"}', 4, NULL, '{}')"))
    engine.dispose()
    db = Database(path)  # applies the migrations after ``previous``
    try:
        with db.read() as s:
            assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == head.revision
        [session] = repo.list_sessions(db)
        assert (session.name, session.settings, session.documents, session.tokens) == ("kept", {"strategy": "sweep"},
                                                                                       1, 4)
        [segment] = repo.session_segments(db, session.id)
        assert segment.text == "the old passage" and segment.locator == Locator(path="a.txt")
        assert repo.search_segments(db, session.id, "old passage")  # the full-text index still holds it
    finally:
        db.close()
