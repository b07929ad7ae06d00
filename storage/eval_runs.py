"""Evaluation runs and their items (tables from migration 0002).

A run is one evaluation of one kind with one strategy; its items are stored as
they finish, so an interrupted run resumes where it stopped (``--resume ID``,
or automatically when an unfinished run has the same parameters). Writes go
through ``Database.write()``, the one write path.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, update

from core.errors import NotFound
from core.records import EvalRunRecord
from storage.db import Database
from storage.models import EvalItemRow, EvalRunRow

# Parameters that do not change what an item measures, so they do not stop a resume.
VOLATILE_PARAMS = ("limit", "out", "resume")


def stable_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that identify a run (JSON round-tripped so tuples and lists compare equal)."""
    return json.loads(json.dumps({k: v for k, v in params.items() if k not in VOLATILE_PARAMS}, sort_keys=True, default=str))


def create_run(db: Database, run: EvalRunRecord) -> int:
    params = stable_params(run.params) | {k: run.params[k] for k in VOLATILE_PARAMS if k in run.params}
    with db.write() as s:
        row = EvalRunRow.from_record(run, params=params)
        s.add(row)
        s.flush()
        return row.id


def get_run(db: Database, run_id: int) -> EvalRunRecord:
    with db.read() as s:
        row = s.get(EvalRunRow, run_id)
        if row is None:
            raise NotFound(f"Evaluation run {run_id} does not exist.", hint="See `python app.py eval list`.")
        return row.to_record()


def find_unfinished(db: Database, run: EvalRunRecord) -> EvalRunRecord | None:
    """The newest unfinished run measuring the same thing as ``run``, to resume it."""
    q = (
        select(EvalRunRow)
        .where(
            EvalRunRow.kind == run.kind, EvalRunRow.status != "done", EvalRunRow.runtime == run.runtime,
            EvalRunRow.model == run.model, EvalRunRow.strategy == run.strategy, EvalRunRow.window == run.window,
            EvalRunRow.corpus_sha == run.corpus_sha,
        )
        .order_by(EvalRunRow.id.desc())
    )
    wanted = stable_params(run.params)
    with db.read() as s:
        for row in s.scalars(q):
            if stable_params(row.params) == wanted:
                return row.to_record()
    return None


def set_out_dir(db: Database, run_id: int, out_dir: str) -> None:
    with db.write() as s:
        s.execute(update(EvalRunRow).where(EvalRunRow.id == run_id).values(out_dir=out_dir))


def save_item(db: Database, run_id: int, key: str, result: dict[str, Any]) -> None:
    """Store one finished item; storing a key twice keeps the first result."""
    with db.write() as s:
        exists = s.scalar(select(EvalItemRow.id).where(EvalItemRow.run_id == run_id, EvalItemRow.key == key))
        if exists is None:
            s.add(EvalItemRow(run_id=run_id, key=key, result=result))


def items(db: Database, run_id: int) -> dict[str, dict[str, Any]]:
    """Finished items of a run, by key, in the order they were stored."""
    q = select(EvalItemRow.key, EvalItemRow.result).where(EvalItemRow.run_id == run_id).order_by(EvalItemRow.id)
    with db.read() as s:
        return {key: dict(result) for key, result in s.execute(q)}


def finish_run(db: Database, run_id: int, *, results: dict, summary: dict, status: str) -> None:
    with db.write() as s:
        s.execute(update(EvalRunRow).where(EvalRunRow.id == run_id).values(results=results, summary=summary, status=status))


def list_runs(db: Database, kind: str | None = None) -> list[EvalRunRecord]:
    """Every run, newest first."""
    q = select(EvalRunRow).order_by(EvalRunRow.id.desc())
    if kind:
        q = q.where(EvalRunRow.kind == kind)
    with db.read() as s:
        return [row.to_record() for row in s.scalars(q)]
