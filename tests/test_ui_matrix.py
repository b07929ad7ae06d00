"""The Matrix tab's handlers in-process, on cells stored as the matrix stores them (no model needed)."""

from __future__ import annotations

import gradio as gr
import pytest

from core.records import MatrixCellRecord
from quire.api import Quire
from storage import matrix
from tests.test_ui import PDF_CLAUSE, seed_pdf, segment_of
from ui.matrix import MatrixTab

HOSTILE_NAME = "<img src=x onerror=alert(1)>.pdf"


def test_matrix_tab_lists_opens_and_marks_cells(settings):
    with Quire(settings) as q:
        doc_id, bbox = seed_pdf(q, "deals", name=HOSTILE_NAME)
        seg = segment_of(q, "deals", HOSTILE_NAME)
        info = q.session("deals")
        base = dict(session_id=info.id, document_id=doc_id, read_tokens=12, total_tokens=12)
        found = matrix.save_cell(q._database(), MatrixCellRecord(
            **base, field_name="Warranty Duration", question="How long is the warranty?", status="verified",
            answer="thirty-six months", quote=PDF_CLAUSE, segment_id=seg.id, locator=seg.locator, meta={"ref": "S1"}))
        matrix.save_cell(q._database(), MatrixCellRecord(**base, field_name="Governing Law", question="Which law?"))
        tab = MatrixTab(q)

        message, table, cells = tab.load("deals")
        assert table["headers"] == ["Document", "Warranty Duration", "Governing Law"]
        [row] = table["value"]
        assert "thirty-six months" in row[1] and "[verified: the quote is in the passage it cites]" in row[1]
        assert "not found (read 12 of 12 tokens, 100% of the document)" in row[2]
        assert [c[0] for c in cells] == [found, found + 1]

        title, frame, mark, edit = tab.open_cell("deals", found)
        assert "&lt;img" in title and "<img" not in title  # the document's name is shown, never run
        assert f'src="/viewer/?session=deals&amp;cell={found}"' in frame and "<iframe" in frame
        assert (mark, edit) == ("", "thirty-six months")
        title, frame, *_ = tab.open_cell("deals", found + 1)
        assert "nothing was found" in title and "<iframe" not in frame

        tab.save_mark("deals", found, "edited", "36 months")
        assert q.matrix_cell(found).shown_answer == "36 months"
        with pytest.raises(gr.Error):
            tab.save_mark("deals", found, "edited", "")
