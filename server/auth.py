"""Who is asking: a personal API token, a trusted proxy's header, a signed session cookie, or nobody.

:class:`Gate` is ASGI middleware in front of every route (the UI, its file routes, the REST and
OpenAI endpoints): it works out the user of each request once and leaves it in ``scope["state"]``.
What the user may do is decided by :class:`quire.api.Quire` (``as_user``), never here.

* ``Authorization: Bearer qk_...``: a personal token; unknown or revoked is 401 at once.
* ``--auth-header X-Forwarded-User``: believed only from ``--trusted-proxies``; the user is made on first sight.
* the ``quire_session`` cookie: signed (itsdangerous, with a key kept in the database so that every app
  process on it accepts it), HTTP-only, SameSite=Lax, set by the login form.
* none of these: the local user when no account has a password (single-user mode), else nobody: the
  browser is sent to the login page, an API client gets 401.
"""

from __future__ import annotations

import html
import ipaddress
import json
import secrets
import threading
import time
from collections import defaultdict, deque
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, quote

from itsdangerous import BadSignature, URLSafeTimedSerializer

from core.errors import QuireError
from core.records import UserRecord
from core.settings import Settings
from quire.api import Quire

COOKIE = "quire_session"
COOKIE_MAX_AGE_S = 14 * 24 * 3600
SECRET_KEY = "server"  # app state key of the cookie signing key
OPEN_PATHS = ("/login", "/logout", "/setup", "/favicon.ico")  # answered without a user
MIN_PASSWORD = 8
API_PREFIXES = ("/api/", "/v1/", "/gradio_api/")  # programs: 401 JSON, never a redirect to a form (nor a page
# request that does not ask for HTML)


def loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listening(settings: Settings, quire: Quire) -> None:
    """Refuse to serve every interface (or any but loopback) to whoever reaches the port."""
    if loopback(settings.host) or settings.auth_header or settings.allow_anonymous or quire.accounts_exist():
        return
    raise QuireError(
        f"Refusing to listen on {settings.host} without accounts: anyone who reaches the port would be in.",
        hint="Create a user first (`python app.py users add NAME --admin`), or use --auth-header behind a "
             "single sign-on proxy, or pass --allow-anonymous if that is what you mean.",
    )


class LoginThrottle:
    """Failed logins slow down the next try, per account and per address: after 3 failures within 15 minutes
    each try waits 2, 4, 8 ... (at most 60) seconds after the last failure; a success clears the account's."""

    FREE, WINDOW_S, MAX_WAIT_S = 3, 900.0, 60.0

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures[key]
        while failures and now - failures[0] > self.WINDOW_S:
            failures.popleft()
        return failures

    def wait_s(self, name: str, address: str) -> float:
        """Seconds before a login for ``name`` from ``address`` is tried at all (0: now)."""
        now = time.monotonic()
        with self._lock:
            waits = []
            for key in (f"user:{name.lower()}", f"addr:{address}"):
                failures = self._recent(key, now)
                if len(failures) >= self.FREE:
                    delay = min(self.MAX_WAIT_S, 2.0 ** (len(failures) - self.FREE + 1))
                    waits.append(failures[-1] + delay - now)
            return max([0.0, *waits])

    def failed(self, name: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in (f"user:{name.lower()}", f"addr:{address}"):
                self._recent(key, now).append(now)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{name.lower()}", None)


class Sessions:
    """Signed session cookies: the user's id and name, and when it was signed."""

    def __init__(self, quire: Quire) -> None:
        self.quire = quire
        self._serializer: URLSafeTimedSerializer | None = None

    def _signer(self) -> URLSafeTimedSerializer:
        if self._serializer is None:
            state = self.quire.state(SECRET_KEY)
            if not state.get("cookie_key"):  # the first process to need it makes it; the database keeps it
                state = {**state, "cookie_key": secrets.token_urlsafe(32)}
                self.quire.set_state(SECRET_KEY, state)
                state = self.quire.state(SECRET_KEY)
            self._serializer = URLSafeTimedSerializer(state["cookie_key"], salt="quire-session")
        return self._serializer

    def issue(self, user: UserRecord) -> str:
        return self._signer().dumps({"uid": user.id, "name": user.name})

    def read(self, value: str) -> dict | None:
        try:
            return self._signer().loads(value, max_age=COOKIE_MAX_AGE_S)
        except BadSignature:
            return None

    @staticmethod
    def header(value: str, *, max_age: int = COOKIE_MAX_AGE_S) -> bytes:
        return (f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}").encode()


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


def _client(scope) -> str:
    client = scope.get("client")
    return client[0] if client else ""


class Gate:
    """ASGI middleware: the user of every request (``scope["state"]["quire_user"]``), or none and then a
    401 for programs and the login page for browsers. Login, logout and their form are answered here."""

    def __init__(self, app, quire: Quire, settings: Settings) -> None:
        self.app, self.quire, self.settings = app, quire, settings
        self.sessions = Sessions(quire)
        self.throttle = LoginThrottle()
        self.proxies = [ipaddress.ip_network(p.strip(), strict=False)
                        for p in settings.trusted_proxies.split(",") if p.strip()]

    # -- who is it ---------------------------------------------------------------
    def _from_proxy(self, scope) -> bool:
        try:
            address = ipaddress.ip_address(_client(scope))
        except ValueError:
            return False
        return any(address in net for net in self.proxies)

    def user(self, scope) -> tuple[UserRecord | None, str]:
        """The user and how they were told ("token", "header", "cookie", "local"); (None, why) when nobody."""
        headers = _headers(scope)
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            user = self.quire.user_for_token(auth[7:].strip())
            return (user, "token") if user else (None, "The API token is unknown or revoked.")
        if self.settings.auth_header and self._from_proxy(scope):
            name = headers.get(self.settings.auth_header.lower(), "").strip()
            if name:
                return self.quire.user_named(name, create=True), "header"
        cookie = SimpleCookie(headers.get("cookie", ""))
        if COOKIE in cookie:
            data = self.sessions.read(cookie[COOKIE].value)
            if data:
                try:
                    user = self.quire.user_named(data["name"])
                except QuireError:
                    user = None
                if user is not None and user.id == data.get("uid"):
                    return user, "cookie"
        if not self.quire.accounts_exist() and not self.settings.auth_header:
            return self.quire.whoami(), "local"  # single-user mode: the check in serve() allowed it
        return None, "Log in first."

    # -- ASGI ------------------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if scope["type"] == "http" and path in ("/login", "/logout", "/setup"):
            handler = {"/login": self._login, "/logout": self._logout, "/setup": self._setup}[path]
            return await handler(scope, receive, send)
        user, why = self.user(scope)
        if user is None and path not in OPEN_PATHS:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            wants_page = "text/html" in _headers(scope).get("accept", "")
            if path.startswith(API_PREFIXES) or scope.get("method") != "GET" or not wants_page:
                return await send_json(send, 401, {"error": {"message": why, "hint": "Send Authorization: Bearer "
                                                         "TOKEN (`python app.py tokens create NAME`), or log in."}})
            target = path + ("?" + scope["query_string"].decode() if scope.get("query_string") else "")
            return await _redirect(send, "/login?next=" + quote(target, safe=""))
        scope.setdefault("state", {})["quire_user"] = user
        await self.app(scope, receive, send)

    async def _login(self, scope, receive, send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode())
        target = _safe_next((query.get("next") or ["/"])[0])
        if scope.get("method") != "POST":
            return await _html(send, 200, login_page(target))
        form = await _form(receive)
        if form is None:
            return await _html(send, 413, login_page(target, "That form is too large."))
        name, password = (form.get("name") or [""])[0].strip(), (form.get("password") or [""])[0]
        target = _safe_next((form.get("next") or [target])[0])
        address = _client(scope)
        wait = self.throttle.wait_s(name, address)
        if wait > 0:
            return await _html(send, 429, login_page(target, f"Too many failed logins: wait {wait:.0f} s and try "
                                                              "again."), [(b"retry-after", str(int(wait) + 1).encode())])
        user = self.quire.authenticate(name, password)
        if user is None:
            self.throttle.failed(name, address)
            return await _html(send, 401, login_page(target, "Wrong user name or password."))
        self.throttle.succeeded(name)
        await _redirect(send, target, [(b"set-cookie", Sessions.header(self.sessions.issue(user)))])

    async def _setup(self, scope, receive, send) -> None:
        """The first admin, made on the first visit: only while no account exists, and only when the server
        listens on loopback and the form comes from this machine, from this page (a page elsewhere could post
        to 127.0.0.1 too: its Origin gives it away)."""
        if self.quire.accounts_exist():
            return await _redirect(send, "/login")
        if not (loopback(self.settings.host) and loopback(_client(scope))) or self.settings.auth_header:
            return await send_json(send, 404, {"error": {"message": "Not found.", "hint": "Create users with "
                                                     "`python app.py users add NAME --admin`."}})
        if scope.get("method") != "POST":
            return await _html(send, 200, setup_page())
        headers = _headers(scope)
        origin, host = headers.get("origin", ""), headers.get("host", "")
        if (origin and origin not in (f"http://{host}", f"https://{host}")) or \
                headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return await _html(send, 403, setup_page("This form can only be sent from Quire's own page."))
        form = await _form(receive)
        if form is None:
            return await _html(send, 413, setup_page("That form is too large."))
        name, password = (form.get("name") or [""])[0].strip(), (form.get("password") or [""])[0]
        if password != (form.get("again") or [""])[0]:
            return await _html(send, 400, setup_page("The two passwords differ."))
        if len(password) < MIN_PASSWORD:
            return await _html(send, 400, setup_page(f"Use a password of {MIN_PASSWORD} characters or more."))
        try:
            user = self.quire.add_user(name, password=password, admin=True)
        except QuireError as exc:
            return await _html(send, 400, setup_page(exc.user_message()))
        await _redirect(send, "/", [(b"set-cookie", Sessions.header(self.sessions.issue(user)))])

    async def _logout(self, scope, receive, send) -> None:
        await _redirect(send, "/login", [(b"set-cookie", Sessions.header("", max_age=0))])


async def _form(receive, limit: int = 16384) -> dict[str, list[str]] | None:
    """A posted form's fields; None when it is larger than ``limit`` bytes."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return parse_qs(body.decode("utf-8", "replace"))


def _safe_next(target: str) -> str:
    """Only a path on this server (``//evil.example`` and ``https://...`` are not)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


_PAGE_HEAD = """<!doctype html><html><head><meta charset="utf-8"><title>Quire: {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:22em;margin:12vh auto;padding:0 1em}}
input{{display:block;width:100%;margin:.3em 0 1em;padding:.5em;box-sizing:border-box}}
button{{padding:.5em 1.5em}}.error{{color:#b91c1c}}</style></head>
<body><h1>Quire</h1>"""


def setup_page(error: str = "") -> str:
    message = f'<p class="error">{html.escape(error)}</p>' if error else ""
    return _PAGE_HEAD.format(title="first admin") + f"""{message}<p>No account exists yet. Make the first one: it is
an admin, and from then on everyone logs in.</p><form method="post" action="/setup">
<label>User name<input name="name" autocomplete="username" required autofocus></label>
<label>Password<input name="password" type="password" autocomplete="new-password" required minlength="{MIN_PASSWORD}"></label>
<label>Password again<input name="again" type="password" autocomplete="new-password" required></label>
<button type="submit">Create the admin</button></form></body></html>"""


def login_page(target: str, error: str = "") -> str:
    message = f'<p class="error">{html.escape(error)}</p>' if error else ""
    return _PAGE_HEAD.format(title="log in") + f"""{message}<form method="post" action="/login">
<input type="hidden" name="next" value="{html.escape(target)}">
<label>User name<input name="name" autocomplete="username" required autofocus></label>
<label>Password<input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Log in</button></form></body></html>"""


async def send_body(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """A whole HTTP response from ASGI middleware."""
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def send_json(send, status: int, data: dict) -> None:
    await send_body(send, status, json.dumps(data).encode(), [(b"content-type", b"application/json")])


async def _html(send, status: int, page: str, headers: list | None = None) -> None:
    await send_body(send, status, page.encode(), [(b"content-type", b"text/html; charset=utf-8"),
                                              (b"cache-control", b"no-store"), *(headers or [])])


async def _redirect(send, target: str, headers: list | None = None) -> None:
    await send_body(send, 303, b"", [(b"location", target.encode("latin-1", "replace")), *(headers or [])])
