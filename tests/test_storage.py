"""Real SQLite files: migrations, round trips, one-transaction documents, FTS ranking."""

import subprocess
import sys

import pytest
from sqlalchemy import inspect, text

from core.document import Locator, ParsedDocument, Segment
from core.errors import InvalidName, NotFound
from storage import repo
from storage.db import Database


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
    cit = repo.CitationRecord("S1", None, "a.txt", Locator(path="a.txt", line_start=1, line_end=1), "alpha", "verified")
    turn = repo.TurnRecord(0, "q?", "answer [S1]", "llamacpp", "m", "full", 10, 2, 5, 0.1, 0.2, {"share_seen": 1.0}, [cit])
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
