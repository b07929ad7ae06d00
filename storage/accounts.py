"""Accounts: users with argon2id password hashes, personal API tokens (only their sha256 stored), shares.

Nothing secret leaves this module in clear but a new token, once, to the caller that made it; a
password is hashed here and compared here. Functions return records (``core.records``).
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select

from core.errors import InvalidName, NotFound, QuireError
from core.records import SHARE_ROLES, ApiTokenRecord, ShareRecord, UserRecord
from storage.db import Database
from storage.models import ApiTokenRow, SessionRow, ShareRow, TurnRow, UserRow, utcnow
from storage.repo import _drop_orphan_documents, check_name

TOKEN_PREFIX = "qk_"  # a Quire key: easy to spot in a config file or a leak scanner
_hasher = PasswordHasher()  # argon2id with the library's current defaults (RFC 9106 low-memory profile)
# The hash a missing user's password is checked against, so that "no such user" takes as long as "wrong password".
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))
MIN_PASSWORD = 8


def check_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise QuireError(f"The password is too short (at least {MIN_PASSWORD} characters).",
                         hint="Choose a longer one, or a passphrase.")
    return password


def check_user_name(name: str) -> str:
    name = check_name(name)
    if "/" in name or name != name.strip():
        raise InvalidName(f"{name!r} is not a usable user name.", hint="Use letters, digits, . - _ @.")
    return name


# -- users ----------------------------------------------------------------------
def add_user(db: Database, name: str, *, password: str | None = None, admin: bool = False) -> UserRecord:
    name = check_user_name(name)
    hashed = _hasher.hash(check_password(password)) if password is not None else None
    with db.write() as s:
        row = s.scalar(select(UserRow).where(UserRow.name == name))
        if row is not None and row.password_hash:
            raise InvalidName(f"A user named {name!r} exists already.",
                              hint=f"Change the password with `python app.py users passwd {name}`.")
        if row is None:
            row = UserRow(name=name)
            s.add(row)
        row.password_hash, row.is_admin = hashed, admin
        s.flush()
        return row.to_record()


def list_users(db: Database) -> list[UserRecord]:
    with db.read() as s:
        return [row.to_record() for row in s.scalars(select(UserRow).order_by(UserRow.name))]


def get_user(db: Database, name: str) -> UserRecord:
    with db.read() as s:
        row = s.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise NotFound(f"No user named {name!r}.", hint="List users with `python app.py users list`.")
        return row.to_record()


def get_user_by_id(db: Database, user_id: int) -> UserRecord:
    with db.read() as s:
        row = s.get(UserRow, user_id)
        if row is None:
            raise NotFound(f"User {user_id} no longer exists.")
        return row.to_record()


def remove_user(db: Database, name: str) -> None:
    """Remove the user, their sessions, shares and tokens; the turns they asked elsewhere stay, unattributed."""
    with db.write() as s:
        row = s.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise NotFound(f"No user named {name!r}.", hint="List users with `python app.py users list`.")
        for session in s.scalars(select(SessionRow).where(SessionRow.user_id == row.id)):
            s.delete(session)
        s.execute(delete(ShareRow).where(ShareRow.user_id == row.id))
        s.execute(delete(ApiTokenRow).where(ApiTokenRow.user_id == row.id))
        s.query(TurnRow).filter(TurnRow.user_id == row.id).update({TurnRow.user_id: None})
        s.flush()
        s.delete(row)
        s.flush()
        _drop_orphan_documents(s)


def set_password(db: Database, name: str, password: str) -> None:
    hashed = _hasher.hash(check_password(password))
    with db.write() as s:
        row = s.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise NotFound(f"No user named {name!r}.", hint="List users with `python app.py users list`.")
        row.password_hash = hashed


def authenticate(db: Database, name: str, password: str) -> UserRecord | None:
    """The user when ``password`` is theirs, else None (the same work either way: no timing tells names apart)."""
    with db.read() as s:
        row = s.scalar(select(UserRow).where(UserRow.name == (name or "").strip()))
    stored = row.password_hash if row is not None and row.password_hash else _DUMMY_HASH
    try:
        _hasher.verify(stored, password or "")
    except (VerificationError, InvalidHashError):
        return None
    if row is None or not row.password_hash:
        return None
    if _hasher.check_needs_rehash(stored):  # the library's parameters grew: keep the hash current
        with db.write() as s:
            s.get(UserRow, row.id).password_hash = _hasher.hash(password)
    return row.to_record()


def accounts_exist(db: Database) -> bool:
    """Whether any user can log in (has a password): then the web server asks who is there."""
    with db.read() as s:
        return bool(s.scalar(select(func.count()).where(UserRow.password_hash.is_not(None))))


# -- personal API tokens ------------------------------------------------------------
def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db: Database, user_id: int, name: str) -> tuple[ApiTokenRecord, str]:
    """A new token for the user: its record and the token itself, which is stored nowhere (only its hash)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.write() as s:
        row = ApiTokenRow(user_id=user_id, name=(name or "token").strip()[:200], prefix=token[:10],
                          token_hash=_digest(token))
        s.add(row)
        s.flush()
        return row.to_record(), token


def list_tokens(db: Database, user_id: int | None = None) -> list[ApiTokenRecord]:
    q = select(ApiTokenRow).order_by(ApiTokenRow.id)
    q = q.where(ApiTokenRow.user_id == user_id) if user_id is not None else q
    with db.read() as s:
        return [row.to_record() for row in s.scalars(q)]


def revoke_token(db: Database, token_id: int, *, user_id: int | None = None) -> ApiTokenRecord:
    """Revoke a token (``user_id``: only one of theirs); it stops working with the next request."""
    with db.write() as s:
        row = s.get(ApiTokenRow, token_id)
        if row is None or (user_id is not None and row.user_id != user_id):
            raise NotFound(f"No token {token_id}.", hint="List tokens with `python app.py tokens list`.")
        row.revoked_at = row.revoked_at or utcnow()
        return row.to_record()


def user_for_token(db: Database, token: str) -> UserRecord | None:
    """The user a token acts for, when it is one of ours and not revoked."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    with db.read() as s:
        found = s.execute(select(ApiTokenRow, UserRow).join(UserRow, UserRow.id == ApiTokenRow.user_id)
                          .where(ApiTokenRow.token_hash == _digest(token))).first()
        if found is None or found[0].revoked_at is not None:
            return None
        return found[1].to_record()


# -- shares -----------------------------------------------------------------------------
def share(db: Database, session_id: int, user_id: int, role: str) -> ShareRecord:
    if role not in SHARE_ROLES:
        raise QuireError(f"Unknown role {role!r}.", hint=f"Share as one of: {', '.join(SHARE_ROLES)}.")
    with db.write() as s:
        if s.scalar(select(SessionRow.user_id).where(SessionRow.id == session_id)) == user_id:
            raise QuireError("The owner of a session cannot be given a share of it.", hint="Share it with someone else.")
        row = s.scalar(select(ShareRow).where(ShareRow.session_id == session_id, ShareRow.user_id == user_id))
        if row is None:
            row = ShareRow(session_id=session_id, user_id=user_id, role=role)
            s.add(row)
        row.role = role
        s.flush()
        return row.to_record(user_name=s.scalar(select(UserRow.name).where(UserRow.id == user_id)) or "")


def unshare(db: Database, session_id: int, user_id: int) -> None:
    with db.write() as s:
        s.execute(delete(ShareRow).where(ShareRow.session_id == session_id, ShareRow.user_id == user_id))


def shares(db: Database, session_id: int) -> list[ShareRecord]:
    q = (select(ShareRow, UserRow.name).join(UserRow, UserRow.id == ShareRow.user_id)
         .where(ShareRow.session_id == session_id).order_by(UserRow.name))
    with db.read() as s:
        return [row.to_record(user_name=name) for row, name in s.execute(q)]
