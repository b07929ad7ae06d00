"""Opening the database: SQLite (WAL) or PostgreSQL by SQLAlchemy URL, migrations applied on open, one writer."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x51554952  # "QUIR": the PostgreSQL advisory lock two processes starting at once take in turn


class Database:
    """A SQLite file or a PostgreSQL database. Reads use any session; every write goes through :meth:`write`.

    Gradio runs handlers on several threads, so this process's writes are serialised by one lock
    (as datasette does with its single writer); SQLite runs in WAL mode so readers never wait for a
    writer. Several app processes on one PostgreSQL database rely on its transactions: each write is
    one transaction, and the migrations run under an advisory lock.
    """

    def __init__(self, target: Path | str) -> None:
        url = str(target)
        if "://" not in url:  # a path: a SQLite file
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path}"
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()  # sqlite | postgresql
        if self.dialect == "sqlite":
            self.path = Path(self.url.database or "")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(self.url, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(self.engine, "connect", _pragmas)
        else:
            self.path = None
            self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=8, max_overflow=8)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.RLock()
        self.migrate()

    def migrate(self) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self._write_lock, self.engine.begin() as conn:
            if self.dialect == "postgresql":  # two processes starting at once must not both create the tables
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed whole, or rolled back whole."""
        with self._write_lock, self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()


def _pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
