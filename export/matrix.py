"""The review matrix as a spreadsheet: CSV (one row per cell) and XLSX (a sheet with one row per document and
one column per field, and a sheet of every cell with its quote, place and the reviewer's mark).

Cell text comes from documents and the model, so it is untrusted: a value a spreadsheet would run as a formula
(``=``, ``+``, ``-``, ``@``, a tab or a carriage return first) is written with a leading apostrophe, as OWASP
advises against CSV injection, and control characters are written as their escapes.
"""

from __future__ import annotations

import csv
import io

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill

from core.errors import printable
from core.records import MatrixCellRecord
from export.report import Report

COLUMNS = ("document", "field", "answer", "status", "quote", "page", "location", "mark", "model answer",
           "read tokens", "document tokens", "question")
FILLS = {"verified": "DAFBE1", "quoted": "FFF1E5", "unverified": "FFF8C5", "not_found": "EEEEEE"}
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """A value a spreadsheet shows as text, never runs (numbers stay numbers)."""
    if not isinstance(value, str):
        return value
    text = printable(value, lines=True)
    return "'" + text if text.startswith(_FORMULA) else text


def cell_row(c: MatrixCellRecord) -> list[object]:
    return [c.document_name, c.field_name, c.shown_answer, c.status_words, c.quote,
            c.locator.page if c.segment_id else None, c.locator.label() if c.segment_id else "",
            c.mark, c.answer, c.read_tokens, c.total_tokens, c.question]


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for c in report.matrix:
        writer.writerow([safe_cell(v) for v in cell_row(c)])
    return out.getvalue()


def render_xlsx(report: Report) -> bytes:
    book = Workbook()
    grid = book.active
    grid.title = "Matrix"
    fields = list(dict.fromkeys(c.field_name for c in report.matrix))
    documents = list(dict.fromkeys(c.document_name for c in report.matrix))
    grid.append(["Document", *[safe_cell(f) for f in fields]])
    by_spot = {(c.document_name, c.field_name): c for c in report.matrix}
    for r, doc in enumerate(documents, start=2):
        grid.cell(row=r, column=1, value=safe_cell(doc))
        for k, fld in enumerate(fields, start=2):
            c = by_spot.get((doc, fld))
            if c is None:
                continue
            text = c.shown_answer or c.status_words
            if c.quote:
                text += f'\n"{c.quote}"' + (f" ({c.locator.label()})" if c.segment_id else "")
            cell = grid.cell(row=r, column=k, value=safe_cell(text))
            cell.fill = PatternFill("solid", fgColor=FILLS.get(c.status, "FFFFFF"))
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    for cell in grid[1]:
        cell.font = Font(bold=True)
    grid.column_dimensions["A"].width = 40
    for k in range(2, len(fields) + 2):
        grid.column_dimensions[grid.cell(row=1, column=k).column_letter].width = 50
    grid.freeze_panes = "B2"

    cells = book.create_sheet("Cells")
    cells.append(list(COLUMNS))
    for c in report.matrix:
        cells.append([safe_cell(v) for v in cell_row(c)])
    for cell in cells[1]:
        cell.font = Font(bold=True)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
