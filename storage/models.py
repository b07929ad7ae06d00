"""SQLAlchemy 2 models, and the one place where rows become records and records rows.

Names: the table ``turns`` is the ORM class ``TurnRow`` and the record ``core.records.TurnRecord``,
and so for every table. A row's ``to_record()`` copies each record field that is a column of
its table, by name (JSON columns copied, ``locator`` as a :class:`Locator`, times as ISO text);
fields that are not columns come in as keywords. ``from_record()`` is the reverse. So a new
column is a field of the record, a column here and an Alembic migration, and nothing else.

The schema itself comes from the migrations (``storage/migrations/versions``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import fields
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.document import Locator
from core.records import (
    ApiTokenRecord,
    CitationRecord,
    DocumentRecord,
    EvalRunRecord,
    MatrixCellRecord,
    SegmentRecord,
    SessionRecord,
    ShareRecord,
    TurnRecord,
    UserRecord,
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _to_field(name: str, value: Any) -> Any:
    if name == "locator":
        return Locator.from_dict(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dict):
        return dict(value)
    return value


def _to_column(name: str, value: Any) -> Any:
    return value.to_dict() if name == "locator" else value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}
    record: ClassVar[type | None] = None  # the core.records dataclass a row of this table is

    def to_record(self, **extra: Any):
        """This row as its record; ``extra`` gives the fields that are not columns (or overrides one)."""
        columns = self.__table__.columns
        values = {f.name: _to_field(f.name, getattr(self, f.name)) for f in fields(self.record)
                  if f.name in columns and f.name not in extra}
        return self.record(**values, **extra)

    @classmethod
    def column_values(cls, obj: Any, **extra: Any) -> dict[str, Any]:
        """The values for a row of this table taken from dataclass ``obj`` (a record, or a parsed
        document or segment) by field name, less an unset id or time, plus ``extra`` (foreign keys)."""
        columns = cls.__table__.columns
        values = {f.name: _to_column(f.name, getattr(obj, f.name)) for f in fields(obj) if f.name in columns}
        for unset in ("id", "created_at"):
            if unset in values and not values[unset]:
                del values[unset]
        return values | extra

    @classmethod
    def from_record(cls, obj: Any, **extra: Any):
        """A new row from ``obj`` (see :meth:`column_values`)."""
        return cls(**cls.column_values(obj, **extra))


class UserRow(Base):
    """An account; migration 0003 adds its password hash (argon2id, never a record field) and the admin flag."""

    __tablename__ = "users"
    record = UserRecord
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    def to_record(self, **extra: Any) -> UserRecord:
        return super().to_record(has_password=bool(self.password_hash), **extra)


class ShareRow(Base):
    """A session shared with another user as reader or editor; migration 0003."""

    __tablename__ = "shares"
    record = ShareRecord
    __table_args__ = (UniqueConstraint("session_id", "user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(10))


class ApiTokenRow(Base):
    """A personal API token, stored as the sha256 of the token (which is random, so a plain hash is enough)."""

    __tablename__ = "api_tokens"
    record = ApiTokenRecord
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class SessionRow(Base):
    """A user's session: documents, chats and settings."""

    __tablename__ = "sessions"
    record = SessionRecord
    __table_args__ = (UniqueConstraint("user_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    links: Mapped[list["SessionDocumentRow"]] = relationship(
        back_populates="session", cascade="all, delete-orphan", order_by="SessionDocumentRow.position"
    )
    turns: Mapped[list["TurnRow"]] = relationship(
        back_populates="session", cascade="all, delete-orphan", order_by="TurnRow.id"
    )


class DocumentRow(Base):
    """A file's content, stored once per sha256 and shared by every session that holds it."""

    __tablename__ = "documents"
    record = DocumentRecord
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(20))
    source_path: Mapped[str] = mapped_column(Text, default="")
    blob_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)  # original file bytes
    pages: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    segments: Mapped[list["SegmentRow"]] = relationship(
        back_populates="document", cascade="all, delete-orphan", order_by="SegmentRow.ordinal"
    )


class SessionDocumentRow(Base):
    __tablename__ = "session_documents"
    __table_args__ = (UniqueConstraint("session_id", "document_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    display_name: Mapped[str] = mapped_column(String(500))
    position: Mapped[int] = mapped_column(Integer, default=0)
    added_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    session: Mapped[SessionRow] = relationship(back_populates="links")
    document: Mapped[DocumentRow] = relationship()


class SegmentRow(Base):
    __tablename__ = "segments"
    record = SegmentRecord
    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))
    text: Mapped[str] = mapped_column(Text)
    locator: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    image_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)

    document: Mapped[DocumentRow] = relationship(back_populates="segments")


class TurnRow(Base):
    """One question and its answer, with what produced it."""

    __tablename__ = "turns"
    record = TurnRecord
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text, default="")
    runtime: Mapped[str] = mapped_column(String(50), default="")
    model: Mapped[str] = mapped_column(String(500), default="")
    strategy: Mapped[str] = mapped_column(String(20), default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    ttft_s: Mapped[float] = mapped_column(Float, default=0.0)
    total_s: Mapped[float] = mapped_column(Float, default=0.0)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    session: Mapped[SessionRow] = relationship(back_populates="turns")
    citations: Mapped[list["CitationRow"]] = relationship(
        back_populates="turn", cascade="all, delete-orphan", order_by="CitationRow.id"
    )


class CitationRow(Base):
    __tablename__ = "citations"
    record = CitationRecord
    id: Mapped[int] = mapped_column(primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    ref: Mapped[str] = mapped_column(String(20))  # the id the model cited, e.g. S12
    segment_id: Mapped[int | None] = mapped_column(
        ForeignKey("segments.id", ondelete="SET NULL"), nullable=True
    )
    document_name: Mapped[str] = mapped_column(String(500), default="")
    locator: Mapped[dict[str, Any]] = mapped_column(default=dict)
    quote: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="unverified")  # verified|unverified|missing
    origin: Mapped[str] = mapped_column(String(20), default="model")  # model|matched

    turn: Mapped[TurnRow] = relationship(back_populates="citations")


class AppStateRow(Base):
    """Key/value app state (e.g. which session the UI last showed)."""

    __tablename__ = "app_state"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)


class EvalRunRow(Base):
    """One evaluation run (``python app.py eval ...``); migration 0002."""

    __tablename__ = "eval_runs"
    record = EvalRunRecord
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    runtime: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(500))
    strategy: Mapped[str] = mapped_column(String(20))
    window: Mapped[int] = mapped_column(Integer)
    corpus_sha: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    results: Mapped[dict[str, Any]] = mapped_column(default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    out_dir: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="running")


class EvalItemRow(Base):
    """One finished item of a run, by its key; its result is JSON."""

    __tablename__ = "eval_items"
    __table_args__ = (UniqueConstraint("run_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(500))
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class MatrixCellRow(Base):
    """One cell of a session's review matrix: a document and a field; migration 0004_matrix."""

    __tablename__ = "matrix_cells"
    record = MatrixCellRecord
    __table_args__ = (UniqueConstraint("session_id", "document_id", "field_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    field_name: Mapped[str] = mapped_column(String(500))
    question: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="not_found")  # verified|quoted|unverified|not_found
    answer: Mapped[str] = mapped_column(Text, default="")
    quote: Mapped[str] = mapped_column(Text, default="")
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="SET NULL"), nullable=True)
    locator: Mapped[dict[str, Any]] = mapped_column(default=dict)
    read_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    mark: Mapped[str] = mapped_column(String(20), default="")  # ""|correct|wrong|edited
    edit: Mapped[str] = mapped_column(Text, default="")
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
