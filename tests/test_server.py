"""The team server as a real process hit over HTTP (httpx, the official openai client, gradio_client): user B gets
nothing of user A's session on any surface, a reader cannot change it, a revoked token stops at once, login."""

from __future__ import annotations

import json

import httpx
import openai
import pymupdf
import pytest

from core.settings import Settings
from quire.api import Quire
from tests.conftest import CORPUS
from tests.servers import start_app, stop_app
from tests.test_accounts import PASSWORD, seed

FACT = "The pallet count for order 7781 is nineteen."


def _pdf(path) -> None:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 90), "Supply Agreement. The warranty period is thirty-six months.")
    doc.save(path)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """alice owns "deals" (a note and a PDF page image), shared with carol as reader; bob has no share."""
    home = tmp_path_factory.mktemp("team-home")
    tokens = {}
    with Quire(Settings(home=home, workers=1)) as root:
        for name in ("alice", "bob", "carol"):
            root.add_user(name, password=PASSWORD)
            tokens[name] = root.as_user(name).create_token("test")[1]
        alice = root.as_user("alice")
        seed(alice, "deals", "Shipping note\n\n" + FACT + "\n")
        pdf = home / "agreement.pdf"
        _pdf(pdf)
        assert alice.ingest("deals", [pdf])[0].ok
        alice.share("deals", "carol", "reader")
        documents = {d.name: d.id for d in alice.documents("deals")}
    proc, url = start_app(home, "--max-file-mb", "1")
    yield url, home, tokens, documents
    stop_app(proc)


def _client(url: str, token: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=120)


def _events(response: httpx.Response) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


def test_nobody_gets_in_without_logging_in(team):
    url, *_ = team
    with _client(url, None) as c:
        page = c.get("/", follow_redirects=False, headers={"accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        for path in ("/api/v1/sessions", "/v1/models", "/gradio_api/info", "/config"):
            answer = c.get(path)
            assert answer.status_code == 401, path
            assert "Traceback" not in answer.text
        assert c.get("/api/v1/sessions", headers={"authorization": "Bearer qk_not-a-token"}).status_code == 401


def test_user_b_is_refused_on_every_rest_route_of_user_as_session(team):
    url, _, tokens, documents = team
    pdf = documents["agreement.pdf"]
    with _client(url, tokens["alice"]) as alice, _client(url, tokens["bob"]) as bob:
        assert [s["name"] for s in alice.get("/api/v1/sessions").json()] == ["deals"]
        assert alice.get(f"/api/v1/sessions/deals/documents/{pdf}/pages/1").headers["content-type"] == "image/png"
        assert bob.get("/api/v1/sessions").json() == []
        for name in ("deals", "alice~deals", "nosuch"):  # ~: OWNER~NAME names another user's session in a URL
            for method, path in (("GET", ""), ("GET", "/documents"), ("GET", "/turns"), ("GET", "/export?format=md"),
                                 ("GET", f"/documents/{pdf}/pages/1"), ("DELETE", f"/documents/{pdf}"),
                                 ("GET", "/shares"), ("GET", "/warm"), ("POST", "/warm"), ("DELETE", "")):
                answer = bob.request(method, f"/api/v1/sessions/{name}{path}")
                assert answer.status_code == 404, (method, name, path)  # not 403: it does not confirm it exists
                assert set(answer.json()["error"]) >= {"message", "hint"}
            asked = bob.post(f"/api/v1/sessions/{name}/ask", json={"question": "How many pallets?"})
            assert asked.status_code == 404
        upload = bob.post("/api/v1/sessions/alice~deals/documents", files={"files": ("x.txt", b"x")})
        assert upload.status_code == 404
        assert bob.patch("/api/v1/sessions/alice~deals", json={"name": "mine"}).status_code == 404
        assert [d["id"] for d in alice.get("/api/v1/sessions/deals/documents").json()["documents"]] == list(
            documents.values())  # all still there


def test_a_session_is_warmed_in_the_background_on_request(team):
    import time

    url, _, tokens, _ = team
    with _client(url, tokens["carol"]) as carol:  # a reader may prepare what she can read
        started = carol.post("/api/v1/sessions/alice~deals/warm")
        assert started.status_code == 202 and started.json()["state"] in ("queued", "warming", "done")
        deadline = time.monotonic() + 240
        while (status := carol.get("/api/v1/sessions/alice~deals/warm").json())["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, status
            time.sleep(1)
        assert status["state"] == "done" and status["done"] == status["total"] >= 1, status


def test_user_b_is_refused_by_the_openai_endpoint_and_the_ui(team):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, _, tokens, _ = team
    bob = openai.OpenAI(base_url=url + "/v1", api_key=tokens["bob"])
    assert [m.id for m in bob.models.list()] == []
    for model in ("quire/deals", "quire/alice/deals"):
        with pytest.raises(openai.NotFoundError):
            bob.chat.completions.create(model=model, messages=[{"role": "user", "content": "How many pallets?"}])
    ui = Client(url + "/", headers={"authorization": f"Bearer {tokens['bob']}"}, verbose=False)
    for name in ("deals", "alice/deals"):
        for api, args in (("/documents", ()), ("/export", ("md",)), ("/history", ())):
            try:
                out = ui.predict(name, *args, api_name=api)
            except AppError as exc:
                assert "No session named" in str(exc)
            else:  # a handler that shows an empty view for a session it cannot find
                assert "shipping" not in json.dumps(out) and "agreement" not in json.dumps(out), (api, out)
        with pytest.raises(AppError, match="No session named"):
            ui.predict(name, "How many pallets?", api_name="/ask")
    alice_ui = Client(url + "/", headers={"authorization": f"Bearer {tokens['alice']}"}, verbose=False,
                      download_files=False)
    exported = alice_ui.predict("deals", "md", api_name="/export")[0][0]["path"]  # the path on the server
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {tokens['bob']}"}) as c:
        assert c.get(f"/gradio_api/file={exported}").status_code == 404  # alice's report, by its path
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {tokens['alice']}"}) as c:
        assert c.get(f"/gradio_api/file={exported}").status_code == 200


def test_a_reader_asks_over_sse_and_openai_but_cannot_upload_or_delete(team):
    url, _, tokens, documents = team
    with _client(url, tokens["carol"]) as carol:
        [shared] = carol.get("/api/v1/sessions").json()
        assert (shared["name"], shared["owner"], shared["role"]) == ("deals", "alice", "reader")
        upload = carol.post("/api/v1/sessions/deals/documents", files={"files": ("more.txt", b"More text.\n")})
        assert upload.status_code == 403 and upload.json()["error"]["message"]
        assert carol.delete(f"/api/v1/sessions/deals/documents/{documents['shipping.txt']}").status_code == 403
        assert carol.delete("/api/v1/sessions/deals").status_code == 403
        assert carol.patch("/api/v1/sessions/deals", json={"name": "x"}).status_code == 403
        with carol.stream("POST", "/api/v1/sessions/deals/ask",
                          json={"question": "How many pallets are in order 7781?"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = _events(response)
        kinds = [k for k, _ in events]
        assert "delta" in kinds and kinds[-1] == "turn", kinds
        turn = events[-1][1]
        assert turn["asked_by"] == "carol" and turn["id"] and {"citations", "warning", "meta"} <= set(turn)
        assert all({"ref", "status", "status_words"} <= set(c) for c in turn["citations"])
        assert turn["question"] in [t["question"] for t in carol.get("/api/v1/sessions/deals/turns").json()]
        report = carol.get("/api/v1/sessions/deals/export", params={"format": "html"})
        assert report.status_code == 200 and "How many pallets" in report.text
    client = openai.OpenAI(base_url=url + "/v1", api_key=tokens["carol"])
    assert [m.id for m in client.models.list()] == ["quire/alice/deals"]
    done = client.chat.completions.create(model="quire/deals", messages=[{"role": "user", "content":
                                                                          "How many pallets are in order 7781?"}])
    extra = done.model_extra["quire"]
    assert done.choices[0].message.content and extra["turn_id"] and "citations" in extra
    assert all(f"[{c['ref']}]" in done.choices[0].message.content for c in extra["citations"])
    chunks = list(client.chat.completions.create(model="quire/alice/deals", stream=True, messages=[
        {"role": "user", "content": "What is the warranty period?"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "citations" in chunks[-1].model_extra["quire"]


def test_a_revoked_token_stops_at_once(team):
    url, _, tokens, _ = team
    with _client(url, tokens["alice"]) as alice:
        made = alice.post("/api/v1/tokens", json={"name": "script"}).json()
        with _client(url, made["token"]) as script:
            assert script.get("/api/v1/me").json()["name"] == "alice"
            assert made["token"] not in json.dumps(alice.get("/api/v1/tokens").json())
            assert alice.delete(f"/api/v1/tokens/{made['id']}").status_code == 204
            assert script.get("/api/v1/me").status_code == 401
            assert script.get("/v1/models").status_code == 401


def test_login_sets_a_signed_http_only_cookie_and_failures_slow_down(team):
    url, *_ = team
    with httpx.Client(base_url=url, timeout=30) as browser:
        for _ in range(3):
            assert browser.post("/login", data={"name": "bob", "password": "wrong password"}).status_code == 401
        slowed = browser.post("/login", data={"name": "bob", "password": PASSWORD})
        assert slowed.status_code == 429 and int(slowed.headers["retry-after"]) >= 1  # even the right password
        ok = browser.post("/login", data={"name": "alice", "password": PASSWORD, "next": "//evil.example/"},
                          headers={"x-forwarded-for": "10.0.0.9"}, follow_redirects=False)
        assert ok.status_code == 429  # per address too: the same address failed three times
    with httpx.Client(base_url=url, timeout=30) as browser:
        browser.cookies.clear()
    # a fresh address is not possible on loopback: the account's own count is checked with a fresh account
    with httpx.Client(base_url=url, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.2")) as browser:
        ok = browser.post("/login", data={"name": "carol", "password": PASSWORD, "next": "//evil.example/"},
                          follow_redirects=False)
        assert ok.status_code == 303 and ok.headers["location"] == "/"  # never off the site
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and PASSWORD not in cookie
        assert browser.get("/api/v1/me").json()["name"] == "carol"
        assert browser.get("/").status_code == 200
        browser.cookies.set("quire_session", browser.cookies["quire_session"][:-2] + "xx")  # tampered
        assert browser.get("/api/v1/me").status_code == 401
        browser.cookies.clear()
        again = browser.post("/login", data={"name": "carol", "password": PASSWORD}, follow_redirects=False)
        browser.cookies.update(again.cookies)
        assert browser.get("/logout", follow_redirects=False).headers["set-cookie"].startswith("quire_session=;")


def test_listening_beyond_loopback_without_accounts_is_refused(tmp_path):
    import subprocess
    import sys

    from tests.servers import ROOT

    home = tmp_path / "home"
    run = subprocess.run([sys.executable, "app.py", "--host", "0.0.0.0", "--port", "1"], cwd=ROOT, text=True,
                         capture_output=True, timeout=120, env={"QUIRE_HOME": str(home), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 2
    assert "users add NAME --admin" in run.stderr and "--allow-anonymous" in run.stderr


def test_an_upload_streams_its_progress_and_takes_passwords(team):
    url, _, tokens, _ = team
    name = "pdfs/py-pdf-sample-files/005-libreoffice-writer-password/libreoffice-writer-password.pdf"
    secret = json.loads((CORPUS / "pdfs/passwords.json").read_text())[name]["user_password"]
    data = (CORPUS / name).read_bytes()
    with _client(url, tokens["alice"]) as alice:
        locked = alice.post("/api/v1/sessions/uploads/documents", files={"files": ("locked.pdf", data)})
        assert locked.status_code == 422 and "password" in locked.json()["results"][0]["message"].lower()
        with alice.stream("POST", "/api/v1/sessions/uploads/documents", headers={"accept": "text/event-stream"},
                          files=[("files", ("locked.pdf", data)), ("files", ("note.txt", b"A note.\n"))],
                          data={"passwords": json.dumps({"locked.pdf": secret})}) as response:
            events = _events(response)
        kinds = [k for k, _ in events]
        assert "progress" in kinds and kinds[-1] == "done", kinds
        assert [r["status"] for r in events[-1][1]["results"]] == ["added", "added"]
        listed = alice.get("/api/v1/sessions/uploads/documents").json()
        assert sorted(d["name"] for d in listed["documents"]) == ["locked.pdf", "note.txt"]  # in the order read
        assert all(d["tokens"] > 0 for d in listed["documents"]) and listed["window"] == 2048


def test_an_oversized_upload_is_refused_before_it_is_read(team):
    url, _, tokens, _ = team
    with _client(url, tokens["alice"]) as alice:
        refused = alice.post("/api/v1/sessions/uploads/documents", files={"files": ("big.txt", b"x" * (2 << 20))})
        assert refused.status_code == 413 and "MiB" in refused.json()["error"]["message"]
        assert "big.txt" not in json.dumps(alice.get("/api/v1/sessions/uploads/documents").json())
