"""Evaluation runs in the database (tables from migration 0002), via SQLAlchemy Core.

A run is one evaluation of one kind with one strategy; its items are stored as
they finish, so an interrupted run resumes where it stopped (``--resume ID``,
or automatically when an unfinished run has the same parameters). Writes go
through ``Database.write()``, the one write path.

For the UI: :func:`list_runs` returns plain dicts, newest first, each with a
``plot`` path (the heatmap or bar chart PNG, when it exists).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Integer, MetaData, String, Table, Text, insert, select, update

from core.errors import NotFound
from storage.db import Database
from storage.models import utcnow

metadata = MetaData()

eval_runs = Table(
    "eval_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("runtime", String(50), nullable=False),
    Column("model", String(500), nullable=False),
    Column("strategy", String(20), nullable=False),
    Column("window", Integer, nullable=False),
    Column("corpus_sha", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("results", JSON, nullable=False),
    Column("summary", JSON, nullable=False),
    Column("out_dir", Text, nullable=False),
    Column("status", String(20), nullable=False),
)

eval_items = Table(
    "eval_items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, ForeignKey("eval_runs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(500), nullable=False),
    Column("result", JSON, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

# Parameters that do not change what an item measures, so they do not stop a resume.
VOLATILE_PARAMS = ("limit", "out", "resume")


@dataclass
class EvalRun:
    id: int
    kind: str
    runtime: str
    model: str
    strategy: str
    window: int
    corpus_sha: str
    params: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    out_dir: str = ""
    status: str = "running"
    created_at: str = ""

    @classmethod
    def from_row(cls, row) -> "EvalRun":
        m = row._mapping
        return cls(
            id=m["id"], kind=m["kind"], runtime=m["runtime"], model=m["model"], strategy=m["strategy"],
            window=m["window"], corpus_sha=m["corpus_sha"], params=dict(m["params"] or {}),
            results=dict(m["results"] or {}), summary=dict(m["summary"] or {}), out_dir=m["out_dir"],
            status=m["status"], created_at=m["created_at"].isoformat(timespec="seconds") if m["created_at"] else "",
        )

    @property
    def plot(self) -> str | None:
        """The run's main plot (heatmap or bar chart), if it was written."""
        for name in self.summary.get("plots", []):
            path = Path(self.out_dir) / name
            if path.is_file():
                return str(path)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "created_at": self.created_at, "runtime": self.runtime,
            "model": self.model, "strategy": self.strategy, "window": self.window, "corpus_sha": self.corpus_sha,
            "params": self.params, "summary": self.summary, "out_dir": self.out_dir, "status": self.status,
            "plot": self.plot,
        }


def stable_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that identify a run (JSON round-tripped so tuples and lists compare equal)."""
    return json.loads(json.dumps({k: v for k, v in params.items() if k not in VOLATILE_PARAMS}, sort_keys=True, default=str))


def create_run(db: Database, run: EvalRun) -> int:
    values = {
        "kind": run.kind, "created_at": utcnow(), "runtime": run.runtime, "model": run.model,
        "strategy": run.strategy, "window": run.window, "corpus_sha": run.corpus_sha,
        "params": stable_params(run.params) | {k: run.params[k] for k in VOLATILE_PARAMS if k in run.params},
        "results": run.results, "summary": run.summary, "out_dir": run.out_dir, "status": run.status,
    }
    with db.write() as s:
        return s.execute(insert(eval_runs).values(**values)).inserted_primary_key[0]


def get_run(db: Database, run_id: int) -> EvalRun:
    with db.read() as s:
        row = s.execute(select(eval_runs).where(eval_runs.c.id == run_id)).first()
    if row is None:
        raise NotFound(f"Evaluation run {run_id} does not exist.", hint="See `python app.py eval list`.")
    return EvalRun.from_row(row)


def find_unfinished(db: Database, run: EvalRun) -> EvalRun | None:
    """The newest unfinished run measuring the same thing as ``run``, to resume it."""
    q = (
        select(eval_runs)
        .where(
            eval_runs.c.kind == run.kind, eval_runs.c.status != "done", eval_runs.c.runtime == run.runtime,
            eval_runs.c.model == run.model, eval_runs.c.strategy == run.strategy, eval_runs.c.window == run.window,
            eval_runs.c.corpus_sha == run.corpus_sha,
        )
        .order_by(eval_runs.c.id.desc())
    )
    wanted = stable_params(run.params)
    with db.read() as s:
        for row in s.execute(q):
            found = EvalRun.from_row(row)
            if stable_params(found.params) == wanted:
                return found
    return None


def set_out_dir(db: Database, run_id: int, out_dir: str) -> None:
    with db.write() as s:
        s.execute(update(eval_runs).where(eval_runs.c.id == run_id).values(out_dir=out_dir))


def save_item(db: Database, run_id: int, key: str, result: dict[str, Any]) -> None:
    """Store one finished item; storing a key twice keeps the first result."""
    with db.write() as s:
        exists = s.execute(
            select(eval_items.c.id).where(eval_items.c.run_id == run_id, eval_items.c.key == key)
        ).first()
        if exists is None:
            s.execute(insert(eval_items).values(run_id=run_id, key=key, result=result, created_at=utcnow()))


def items(db: Database, run_id: int) -> dict[str, dict[str, Any]]:
    """Finished items of a run, by key, in the order they were stored."""
    q = select(eval_items.c.key, eval_items.c.result).where(eval_items.c.run_id == run_id).order_by(eval_items.c.id)
    with db.read() as s:
        return {key: dict(result) for key, result in s.execute(q)}


def finish_run(db: Database, run_id: int, *, results: dict, summary: dict, status: str) -> None:
    with db.write() as s:
        s.execute(
            update(eval_runs).where(eval_runs.c.id == run_id).values(results=results, summary=summary, status=status)
        )


def list_runs(db: Database, kind: str | None = None) -> list[dict[str, Any]]:
    """Every run, newest first, as plain dicts with a ``plot`` path (or None) for the UI."""
    q = select(eval_runs).order_by(eval_runs.c.id.desc())
    if kind:
        q = q.where(eval_runs.c.kind == kind)
    with db.read() as s:
        return [EvalRun.from_row(row).to_dict() for row in s.execute(q)]
