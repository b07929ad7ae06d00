"""Who a request is (server.auth.Gate) for real ASGI requests over a real database: a trusted proxy's header,
tokens, single-user mode; and the failed-login slowdown's arithmetic."""

from __future__ import annotations

import pytest

from core.errors import QuireError
from quire.api import Quire
from server.auth import Gate, LoginThrottle, check_listening
from tests.test_accounts import PASSWORD


def _scope(client: str, **headers: str) -> dict:
    return {"type": "http", "path": "/api/v1/me", "client": (client, 40000),
            "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}


def test_the_header_counts_only_from_a_trusted_proxy(settings):
    s = settings.replace(auth_header="X-Forwarded-User", trusted_proxies="10.0.0.5,10.1.0.0/16")
    with Quire(s) as q:
        gate = Gate(None, q, s)
        user, how = gate.user(_scope("10.0.0.5", x_forwarded_user="sso.alice"))
        assert (user.name, how) == ("sso.alice", "header") and not user.has_password  # made on first sight
        assert gate.user(_scope("10.1.7.7", x_forwarded_user="sso.alice"))[0].id == user.id
        assert gate.user(_scope("192.168.1.9", x_forwarded_user="eve"))[0] is None  # anyone else: no one
        assert gate.user(_scope("10.0.0.5"))[0] is None  # the proxy sent no name: no one (header mode has no local)
        assert [u.name for u in q.users()] == ["sso.alice"]


def test_single_user_mode_is_the_local_user_until_an_account_exists(settings):
    with Quire(settings) as q:
        gate = Gate(None, q, settings)
        user, how = gate.user(_scope("127.0.0.1"))
        assert (user.name, how) == ("local", "local")
        q.add_user("alice", password=PASSWORD)
        assert gate.user(_scope("127.0.0.1")) == (None, "Log in first.")
        token = q.as_user("alice").create_token()[1]
        assert gate.user(_scope("127.0.0.1", authorization=f"Bearer {token}"))[0].name == "alice"


def test_listening_beyond_loopback_needs_accounts_a_header_or_allow_anonymous(settings):
    with Quire(settings) as q:
        check_listening(settings, q)  # loopback: fine
        with pytest.raises(QuireError) as refused:
            check_listening(settings.replace(host="0.0.0.0"), q)
        assert "python app.py users add NAME --admin" in refused.value.user_message()
        check_listening(settings.replace(host="0.0.0.0", allow_anonymous=True), q)
        check_listening(settings.replace(host="0.0.0.0", auth_header="X-Forwarded-User"), q)
        q.add_user("alice", password=PASSWORD)
        check_listening(settings.replace(host="0.0.0.0"), q)


def test_failed_logins_wait_longer_each_time_per_account_and_address():
    throttle = LoginThrottle()
    for _ in range(3):
        assert throttle.wait_s("alice", "1.2.3.4") == 0
        throttle.failed("alice", "1.2.3.4")
    assert 1.5 < throttle.wait_s("alice", "5.6.7.8") <= 2  # the account, from anywhere
    assert 1.5 < throttle.wait_s("bob", "1.2.3.4") <= 2  # the address, for any account
    assert throttle.wait_s("bob", "5.6.7.8") == 0
    throttle.failed("alice", "1.2.3.4")
    assert 3.5 < throttle.wait_s("alice", "1.2.3.4") <= 4  # doubled
    throttle.succeeded("alice")
    assert throttle.wait_s("alice", "5.6.7.8") == 0


def test_the_first_admin_is_made_on_the_first_visit_from_this_machine_only(tmp_path):
    """A real server with no account yet: /setup makes the first admin (refusing a form posted from another
    site), logs them in, and then closes for good: from then on everyone logs in."""
    import httpx

    from tests.servers import start_app, stop_app

    proc, url = start_app(tmp_path)
    try:
        with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as http:
            assert http.get("/api/v1/me").status_code == 200  # single-user mode: the local user
            page = http.get("/setup")
            assert page.status_code == 200 and 'action="/setup"' in page.text
            form = {"name": "ada", "password": "correct horse", "again": "correct horse"}
            forged = http.post("/setup", data=form, headers={"Origin": "http://evil.example"})
            assert forged.status_code == 403
            assert http.post("/setup", data={**form, "again": "other"}).status_code == 400
            assert http.post("/setup", data={**form, "password": "short", "again": "short"}).status_code == 400
            made = http.post("/setup", data=form, headers={"Origin": url})
            assert made.status_code in (302, 303) and "quire_session" in made.headers.get("set-cookie", "")
            me = http.get("/api/v1/me", cookies={"quire_session": made.cookies["quire_session"]})
            assert me.status_code == 200 and me.json() == {"name": "ada", "admin": True}
        with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as stranger:
            assert stranger.get("/setup").headers["location"] == "/login"  # closed once an account exists
            assert stranger.post("/setup", data={**form, "name": "eve"}).status_code in (302, 303)
            assert stranger.get("/api/v1/me").status_code == 401
    finally:
        stop_app(proc)
