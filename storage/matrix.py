"""A session's review matrix: its cells, one per document and field, stored as each one finishes.

A cell is written whole when it is done (a stopped run leaves no half cell), and written again only
by a rerun that asks something else for its field; the reviewer's mark and edit survive both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from sqlalchemy import select

from core.errors import NotFound, QuireError
from core.records import CELL_MARKS, MatrixCellRecord
from storage.db import Database
from storage.models import MatrixCellRow, SessionDocumentRow

_COMPUTED = ("question", "status", "answer", "quote", "segment_id", "locator", "read_tokens", "total_tokens", "meta")


def save_cell(db: Database, cell: MatrixCellRecord) -> int:
    """Store a finished cell (replacing what was computed before for its document and field); its id."""
    values = MatrixCellRow.column_values(cell)
    with db.write() as s:
        row = s.scalar(select(MatrixCellRow).where(
            MatrixCellRow.session_id == cell.session_id, MatrixCellRow.document_id == cell.document_id,
            MatrixCellRow.field_name == cell.field_name))
        if row is None:
            row = MatrixCellRow(**{k: v for k, v in values.items() if k not in ("mark", "edit")})
            s.add(row)
        else:
            for name in _COMPUTED:
                setattr(row, name, values[name])
        s.flush()
        return row.id


def cells(db: Database, session_id: int, fields: Iterable[str] | None = None) -> list[MatrixCellRecord]:
    """The session's cells for the documents it still holds (of ``fields`` only, when given), in document
    order, then by field name."""
    q = (
        select(MatrixCellRow, SessionDocumentRow.display_name)
        .join(SessionDocumentRow, (SessionDocumentRow.document_id == MatrixCellRow.document_id)
              & (SessionDocumentRow.session_id == MatrixCellRow.session_id))
        .where(MatrixCellRow.session_id == session_id)
        .order_by(SessionDocumentRow.position, MatrixCellRow.id)
    )
    if fields is not None:
        q = q.where(MatrixCellRow.field_name.in_(list(fields)))
    with db.read() as s:
        return [row.to_record(document_name=name) for row, name in s.execute(q)]


def get_cell(db: Database, cell_id: int) -> MatrixCellRecord:
    with db.read() as s:
        row = s.get(MatrixCellRow, cell_id)
        if row is None:
            raise NotFound(f"Matrix cell {cell_id} no longer exists.", hint="Run the matrix again.")
        name = s.scalar(select(SessionDocumentRow.display_name).where(
            SessionDocumentRow.session_id == row.session_id, SessionDocumentRow.document_id == row.document_id))
        return row.to_record(document_name=name or "")


def mark_cell(db: Database, cell_id: int, mark: str, edit: str = "") -> None:
    """Set the reviewer's mark (``correct``, ``wrong``, ``edited`` with the edited answer, or "" to clear)."""
    if mark not in CELL_MARKS:
        raise QuireError(f"Unknown mark {mark!r}.", hint="Mark a cell correct, wrong or edited.")
    if mark == "edited" and not edit.strip():
        raise QuireError("An edited cell needs its new answer.", hint="Type the answer, then save the edit.")
    with db.write() as s:
        row = s.get(MatrixCellRow, cell_id)
        if row is None:
            raise NotFound(f"Matrix cell {cell_id} no longer exists.", hint="Run the matrix again.")
        row.mark = mark
        row.edit = edit.strip() if mark == "edited" else ""


class ReplyLog:
    """The extraction replies of one document whose cells are not stored yet, appended to a file as each comes
    (one JSON line), so that a run stopped inside a long document and started again reads them back instead of
    asking the model again; :meth:`discard` it once the document's cells are stored. A cache: losing it costs
    time, never a cell (the run asks again)."""

    def __init__(self, folder: Path, session_id: int, document_id: int) -> None:
        self.path = Path(folder) / f"{int(session_id)}-{int(document_id)}.jsonl"  # ids only: no name reaches a path
        self._replies: dict[str, str] | None = None

    def get(self, key: str) -> str | None:
        return self._read().get(key)

    def put(self, key: str, reply: str) -> None:
        self._read()[key] = reply
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"key": key, "reply": reply}) + "\n")

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self._replies = {}

    def _read(self) -> dict[str, str]:
        if self._replies is None:
            self._replies = {}
            try:
                lines = self.path.read_text(encoding="utf-8").splitlines()
            except (FileNotFoundError, UnicodeDecodeError):
                lines = []
            for line in lines:
                try:
                    entry = json.loads(line)
                    self._replies[str(entry["key"])] = str(entry["reply"])
                except (ValueError, KeyError, TypeError):  # a line cut short by a kill: that reply is asked again
                    continue
        return self._replies
