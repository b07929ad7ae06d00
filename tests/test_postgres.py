"""Quire on a real PostgreSQL server (the suite's own cluster): the same door, and two app processes on one
database and one blob directory serving questions and uploads at once without losing a turn or a document."""

from __future__ import annotations

import json
import threading

import httpx
import pymupdf
import pytest

from core.settings import Settings
from quire.api import Quire
from tests.servers import start_app, start_llama_server, stop_app
from tests.test_accounts import PASSWORD

NOTE = "Shipping note\n\nThe pallet count for order 7781 is nineteen.\n"


def test_quire_on_postgresql_ingests_asks_searches_and_reopens(pg_url, tmp_path, cpu_runtime):
    note = tmp_path / "shipping.txt"
    note.write_text(NOTE)
    settings = Settings(home=tmp_path / "home", database_url=pg_url, workers=1, blob_dir=tmp_path / "blobs")
    with Quire(settings, runtime=cpu_runtime) as q:
        q.add_user("alice", password=PASSWORD)
        alice = q.as_user("alice")
        assert alice.ingest("deals", [note])[0].ok
        answer = alice.answer("deals", "How many pallets are in order 7781?")
        assert answer.turn.id and answer.turn.prompt_tokens > 0
        assert alice.search("deals", "pallet count")
    assert not (tmp_path / "home" / "quire.db").exists()  # nothing went to SQLite
    with Quire(settings) as q:  # reopened: the migrations find nothing to do, the data is there
        alice = q.as_user("alice")
        [turn] = alice.turns("deals")
        assert turn.asked_by == "alice" and turn.question.startswith("How many pallets")
        assert [d.name for d in alice.documents("deals")] == ["shipping.txt"]


def _pdf(text: str) -> bytes:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 90), text)
    return doc.tobytes()


def _ask(url: str, token: str, question: str) -> dict:
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=600) as c:
        with c.stream("POST", "/api/v1/sessions/deals/ask", json={"question": question}) as response:
            assert response.status_code == 200, response.read()
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    return events[-1]


def _upload(url: str, token: str, name: str, data: bytes) -> dict:
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=600) as c:
        return c.post("/api/v1/sessions/deals/documents", files={"files": (name, data)}).json()


def test_two_app_processes_on_one_database_lose_nothing(pg_url, tmp_path):
    home_a, home_b, blobs = tmp_path / "a", tmp_path / "b", tmp_path / "blobs"
    for home in (home_a, home_b):
        home.mkdir()
    llama, endpoint = start_llama_server(tmp_path)
    shared = ["--database-url", pg_url, "--blob-dir", str(blobs), "--endpoint", endpoint + "/v1", "--workers", "1"]
    with Quire(Settings(home=home_a, database_url=pg_url, blob_dir=blobs, workers=1)) as q:
        q.add_user("alice", password=PASSWORD)
        token = q.as_user("alice").create_token("test")[1]
        q.as_user("alice").ingest("deals", [_write(tmp_path / "shipping.txt", NOTE)])
    servers = []
    try:
        servers = [start_app(home_a, *shared), start_app(home_b, *shared)]
        (_, url_a), (_, url_b) = servers
        outcomes: dict[str, object] = {}
        jobs = [(f"ask-{i}", _ask, (url, token, f"How many pallets are in order 7781? ({i})"))
                for i, url in enumerate([url_a, url_b, url_a, url_b])]
        jobs += [(f"upload-{i}", _upload, (url, token, f"memo-{i}.pdf", _pdf(f"Memo {i}: the dock is number {i}.")))
                 for i, url in enumerate([url_a, url_b, url_a, url_b])]
        same = _pdf("The same file, sent through both processes at once.")
        jobs += [(f"same-{i}", _upload, (url, token, "same.pdf", same)) for i, url in enumerate([url_a, url_b])]

        def run(key, fn, args):
            try:
                outcomes[key] = fn(*args)
            except Exception as exc:  # kept to be reported by the assertion below
                outcomes[key] = exc

        threads = [threading.Thread(target=run, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(900)
        failed = {k: v for k, v in outcomes.items() if isinstance(v, Exception)}
        assert not failed and len(outcomes) == len(jobs), failed
        # each ends with its stored turn, answered whole (no answer cut short by another's)
        assert all(outcomes[f"ask-{i}"]["id"] and outcomes[f"ask-{i}"]["completion_tokens"] for i in range(4))
        assert all(outcomes[f"upload-{i}"]["results"][0]["ok"] for i in range(4))
        assert all(outcomes[f"same-{i}"]["results"][0]["ok"] for i in range(2))
        for url in (url_a, url_b):  # both processes see every turn and every document
            with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=60) as c:
                turns = c.get("/api/v1/sessions/deals/turns").json()
                assert sorted(t["question"] for t in turns) == sorted(args[2] for k, _, args in jobs if
                                                                     k.startswith("ask"))
                names = sorted(d["name"] for d in c.get("/api/v1/sessions/deals/documents").json()["documents"])
                assert names == sorted(["shipping.txt", "same.pdf", *[f"memo-{i}.pdf" for i in range(4)]])
        memo = outcomes["upload-0"]["results"][0]["document_id"]  # uploaded through A, its page served by B
        with httpx.Client(base_url=url_b, headers={"authorization": f"Bearer {token}"}, timeout=60) as c:
            page = c.get(f"/api/v1/sessions/deals/documents/{memo}/pages/1")
            assert page.status_code == 200 and page.headers["content-type"] == "image/png"
    finally:
        for proc, _ in servers:
            stop_app(proc)
        stop_app(llama)


def _write(path, text):
    path.write_text(text)
    return path
