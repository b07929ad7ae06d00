"""One search, two implementations: the same cases on SQLite (FTS5, bm25) and PostgreSQL (tsvector + GIN,
ts_rank), which must rank alike."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from core.document import Locator, ParsedDocument, Segment
from storage import repo
from storage.db import Database

PASSAGES = [
    "The supplier shall deliver the turbine blades to the Tromso warehouse every Tuesday.",
    "Payment is due within thirty days of the invoice date.",
    "This agreement renews automatically for successive one-year terms unless terminated.",
    "Either party may terminate the agreement with ninety days written notice; termination fees apply.",
    "The warranty period is thirty-six months from delivery of the blades.",
    "Confidential information excludes what is public. Confidential obligations survive termination.",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'q.db'}"
    db = Database(url)
    yield db
    db.close()


def _store(db: Database, session: str, passages: list[str], name: str = "contract.txt") -> list[int]:
    info = repo.create_session(db, session)
    segments = [Segment("text", p, Locator(path=name, line_start=i + 1, line_end=i + 1), tokens=len(p) // 4)
                for i, p in enumerate(passages)]
    repo.store_document(db, info.id, ParsedDocument(name, "text", segments), sha256=(session * 64)[:64])
    return [s.id for s in repo.session_segments(db, info.id)]


def _ranked(db: Database, session: str, query: str) -> list[int]:
    info = repo.get_session(db, session)
    return [sid for sid, _ in repo.search_segments(db, info.id, query)]


def test_the_migrations_make_the_full_text_index(database):
    with database.read() as s:
        if database.dialect == "postgresql":
            index = s.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_segments_tsv'")).scalar()
            assert "gin" in index.lower()
        else:
            assert s.execute(text("SELECT name FROM sqlite_master WHERE name = 'segments_fts'")).scalar()


@pytest.mark.parametrize("query, best", [
    ("When is payment due?", 1),  # one matching passage
    ("Does it renew automatically?", 2),  # stemmed: renew ~ renews
    ("terminated termination", 3),  # a stem matched by two forms beats one form
    ("warranty blades delivery", 4),  # three words in one passage beat one or two elsewhere
    ("confidential", 5),  # the word twice
])
def test_the_best_passage_is_the_same_on_both(database, query, best):
    ids = _store(database, "s", PASSAGES)
    ranked = _ranked(database, "s", query)
    assert ranked and ranked[0] == ids[best]


def test_both_match_the_same_passages_and_only_the_sessions_own(database):
    ids = _store(database, "s", PASSAGES)
    other = _store(database, "other", ["Payment terms of another session's contract: due at once."], "other.txt")
    # stemmed: "terminate" finds terminated, terminate and termination
    assert set(_ranked(database, "s", "payment terminate warranty")) == {ids[1], ids[2], ids[3], ids[4], ids[5]}
    assert _ranked(database, "other", "payment") == other
    assert _ranked(database, "s", "the of and what") == []  # only stop words: nothing to match
    assert _ranked(database, "s", 'pay" OR ment) AND (NEAR x:y * ^') == []  # no query syntax gets through
    assert _ranked(database, "s", "") == []


def test_removed_documents_leave_the_index(database):
    _store(database, "s", PASSAGES)
    info = repo.get_session(database, "s")
    [doc] = repo.session_documents(database, info.id)
    repo.remove_document(database, info.id, doc.id)
    assert _ranked(database, "s", "payment") == []


def test_the_two_rank_the_same_passages_in_the_same_order(pg_url, tmp_path):
    queries = ["When is payment due?", "terminate the agreement", "warranty blades delivery Tuesday",
               "confidential termination", "agreement"]
    orders = []
    for url in (f"sqlite:///{tmp_path / 'q.db'}", pg_url):
        db = Database(url)
        try:
            ids = _store(db, "s", PASSAGES)
            orders.append([[ids.index(sid) for sid in _ranked(db, "s", query)] for query in queries])
        finally:
            db.close()
    assert orders[0] == orders[1]
