"""Accounts and access through the one door (real SQLite, the real CPU model): who sees, reads, changes what."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text

from core.document import Locator, ParsedDocument, Segment
from core.errors import AccessDenied, NotFound, QuireError
from quire.api import Quire
from quire.cli import main
from storage.db import Database

NOTE = "Shipping note\n\nThe pallet count for order 7781 is nineteen.\n"
PASSWORD = "correct horse battery"


def seed(q: Quire, session: str, text_: str = NOTE, name: str = "shipping.txt") -> int:
    info = q.session(session)
    segment = Segment("text", text_, Locator(path=name, line_start=1, line_end=3), tokens=len(text_) // 4)
    return q.add_parsed(info, ParsedDocument(name, "text", [segment]), sha256=hashlib.sha256(text_.encode()).hexdigest())


@pytest.fixture
def team(settings):
    """alice owns "deals" (shared with carol as reader, dave as editor); bob has nothing of hers; eve is admin."""
    with Quire(settings) as root:
        for name in ("alice", "bob", "carol", "dave"):
            root.add_user(name, password=PASSWORD)
        root.add_user("eve", password=PASSWORD, admin=True)
        alice = root.as_user("alice")
        doc = seed(alice, "deals")
        alice.share("deals", "carol", "reader")
        alice.share("deals", "dave", "editor")
        yield root, doc


def test_passwords_are_stored_as_argon2_hashes_and_checked(team, settings):
    root, _ = team
    assert root.authenticate("alice", PASSWORD).name == "alice"
    assert root.authenticate("alice", "wrong password") is None
    assert root.authenticate("nobody", PASSWORD) is None
    db = Database(settings.db_url)
    with db.read() as s:
        stored = s.execute(text("SELECT password_hash FROM users WHERE name = 'alice'")).scalar()
    db.close()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    with pytest.raises(QuireError, match="too short"):
        root.add_user("frank", password="short")


def test_another_users_session_is_not_found_even_by_owner_and_name(team):
    root, doc = team
    bob = root.as_user("bob")
    assert [s.name for s in bob.sessions()] == []
    for name in ("deals", "alice/deals"):
        for call in (lambda: bob.documents(name), lambda: bob.turns(name), lambda: bob.segments(name),
                     lambda: bob.search(name, "pallet"), lambda: bob.session(name, create=False),
                     lambda: bob.delete_session(name), lambda: bob.rename_session(name, "x")):
            with pytest.raises(NotFound, match="No session named"):  # the words of a session that does not exist
                call()
    with pytest.raises(NotFound):
        bob.ingest("alice/deals", [])  # (a plain name would make bob's own session)
    with pytest.raises(NotFound):
        bob.document(doc)
    segment_ids = [s.id for s in root.as_user("alice").segments("deals")]
    assert bob.segments_by_id(segment_ids) == {}  # a citation's passage of another user's session
    with pytest.raises(NotFound):
        list(bob.ask("alice/deals", "How many pallets?"))
    bob.session("deals")  # bob's own session of that name is another one
    assert [s.documents for s in bob.sessions()] == [0]


def test_a_reader_asks_and_reads_but_cannot_change_anything(team, settings, cpu_runtime, tmp_path):
    root, doc = team
    with Quire(settings.replace(workers=1), runtime=cpu_runtime) as q:
        carol = q.as_user("carol")
        [shared] = carol.sessions()
        assert (shared.name, shared.owner, shared.role) == ("deals", "alice", "reader")
        answer = carol.answer("deals", "How many pallets are in order 7781?")
        assert answer.turn.user_id == carol.whoami().id
        [turn] = q.as_user("alice").turns("deals")
        assert turn.asked_by == "carol"  # each turn records who asked
        assert carol.documents("deals")[0].id == doc and carol.segments_by_id(
            [s.id for s in carol.segments("deals")])
        path = tmp_path / "more.txt"
        path.write_text("More text.\n")
        for call in (lambda: carol.ingest("deals", [path]), lambda: carol.remove_document("deals", doc),
                     lambda: carol.rename_session("deals", "mine"), lambda: carol.delete_session("deals"),
                     lambda: carol.share("deals", "bob", "reader"), lambda: carol.set_session_settings("deals", x=1)):
            with pytest.raises(AccessDenied):
                call()
        dave = q.as_user("dave")  # an editor changes documents and the name, but neither deletes nor shares
        assert dave.ingest("deals", [path])[0].ok
        assert dave.rename_session("deals", "deals 2026").name == "deals 2026"
        with pytest.raises(AccessDenied):
            dave.delete_session("deals 2026")
        with pytest.raises(AccessDenied):
            dave.share("deals 2026", "bob", "editor")


def test_admins_see_every_session_and_manage_users(team):
    root, _ = team
    eve, bob = root.as_user("eve"), root.as_user("bob")
    assert [(s.owner, s.name, s.role) for s in eve.sessions()] == [("alice", "deals", "admin")]
    assert eve.documents("alice/deals")
    with pytest.raises(AccessDenied):
        bob.add_user("mallory", password=PASSWORD)
    with pytest.raises(AccessDenied):
        bob.users()
    eve.remove_user("dave")
    assert "dave" not in [u.name for u in eve.users()]


def test_tokens_are_stored_hashed_and_stop_when_revoked(team, settings):
    root, _ = team
    alice = root.as_user("alice")
    record, token = alice.create_token("laptop")
    assert token.startswith("qk_") and root.user_for_token(token).name == "alice"
    db = Database(settings.db_url)
    with db.read() as s:
        stored = s.execute(text("SELECT token_hash FROM api_tokens")).scalar()
    db.close()
    assert token not in stored and stored == hashlib.sha256(token.encode()).hexdigest()
    with pytest.raises(NotFound):
        root.as_user("bob").revoke_token(record.id)  # not his
    alice.revoke_token(record.id)
    assert root.user_for_token(token) is None
    assert root.user_for_token("qk_" + "x" * 43) is None


def test_the_cli_manages_users_tokens_and_shares(quire_home, tmp_path, capsys):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    assert main(["users", "add", "alice", "--admin", "--password-file", str(pw)]) == 0
    assert main(["users", "add", "bob", "--password-file", str(pw)]) == 0
    assert main(["users", "add", "bob", "--password-file", str(pw)]) == 2  # exists already
    capsys.readouterr()
    assert main(["users", "list"]) == 0
    listing = capsys.readouterr().out
    assert "alice\tadmin, password" in listing and "bob\tpassword" in listing and PASSWORD not in listing
    assert main(["tokens", "create", "bob", "--label", "ci"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]  # printed once, as the last line
    with Quire() as q:
        assert q.user_for_token(token).name == "bob"
        seed(q.as_user("alice"), "deals")
    assert main(["share", "alice/deals", "bob", "--role", "editor"]) == 0
    with Quire() as q:
        assert [(s.name, s.role) for s in q.as_user("bob").sessions()] == [("deals", "editor")]
    assert main(["tokens", "list"]) == 0
    assert token not in capsys.readouterr().out  # the list never shows a token
    assert main(["tokens", "revoke", "1"]) == 0
    assert main(["users", "passwd", "bob", "--password-file", str(pw)]) == 0
    assert main(["users", "remove", "bob"]) == 0
    with Quire() as q:
        assert q.user_for_token(token) is None and [u.name for u in q.users()] == ["alice", "local"]
