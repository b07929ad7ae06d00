"""The review matrix exported: CSV, XLSX, the report's section and highlighted PDFs, from a real contract."""

from __future__ import annotations

import csv
import io

import pymupdf
from openpyxl import load_workbook

from core.records import MatrixCellRecord
from export import export_session
from storage import matrix

CONTRACT = "PRECIGEN,INC_01_22_2020-EX-99.1-JOINT FILING AGREEMENT.PDF"
HOSTILE = '=HYPERLINK("http://evil.example","x") <script>alert(1)</script>'


def stored_cells(q, corpus) -> tuple[list[MatrixCellRecord], str]:
    """Two cells on a real contract, stored as the matrix stores them: one verified with a quote cut from a
    passage, one whose (hostile) answer was not found in the source."""
    q.ingest("deals", [corpus / "contracts" / "cuad" / "pdf" / CONTRACT])
    info = q.session("deals")
    [doc] = q.documents(info)
    seg = next(s for s in q.segments(info) if s.kind == "text" and len(s.text.split()) > 12)
    quote = " ".join(seg.text.split()[:10])
    quote = seg.text[seg.text.index(quote.split()[0]):][: len(quote)] if quote in seg.text else seg.text.split("\n")[0]
    base = dict(session_id=info.id, document_id=doc.id, read_tokens=400, total_tokens=400)
    verified = MatrixCellRecord(**base, field_name="Parties", question="Who signed?", status="verified",
                                answer="Ares Trading SA", quote=quote, segment_id=seg.id, locator=seg.locator)
    absent = MatrixCellRecord(**base, field_name="Governing Law", question="Which law?", status="unverified",
                              answer=HOSTILE)
    ids = [matrix.save_cell(q._database(), c) for c in (verified, absent)]
    q.mark_cell(ids[0], "correct")
    q.mark_cell(ids[1], "edited", "Not stated")
    return q.matrix_cells(info), doc.name


def test_csv_and_xlsx_hold_every_cell_and_run_no_formula(q, corpus, tmp_path):
    cells, name = stored_cells(q, corpus)
    [out_csv] = [p for p in export_session(q, "deals", "csv", tmp_path / "m.csv") if p.suffix == ".csv"]
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [(r["document"], r["field"], r["mark"]) for r in rows] == [(name, "Parties", "correct"),
                                                                      (name, "Governing Law", "edited")]
    assert rows[0]["quote"] == cells[0].quote and rows[0]["page"] == str(cells[0].locator.page)
    assert rows[0]["status"].startswith("verified") and rows[1]["answer"] == "Not stated"
    assert rows[1]["model answer"] == "'" + HOSTILE  # shown as text, never run as a formula

    paths = export_session(q, "deals", "xlsx", tmp_path / "m.xlsx")
    book = load_workbook(paths[0])
    grid, flat = book["Matrix"], book["Cells"]
    assert [c.value for c in grid[1]] == ["Document", "Parties", "Governing Law"]
    assert grid["A2"].value == name and "Ares Trading SA" in grid["B2"].value and cells[0].quote in grid["B2"].value
    assert grid["C2"].value == "Not stated"
    assert flat.max_row == 3 and flat["I3"].value == "'" + HOSTILE
    # the verified cell's quote is highlighted in the copy of the source, labelled with its field
    [annotated] = [p for p in paths if p.suffix == ".pdf"]
    with pymupdf.open(annotated) as pdf:
        found = [(page.number + 1, a.info["subject"], page.get_textbox(a.rect)) for page in pdf for a in page.annots()]
    [(page, subject, covered)] = found
    assert page == cells[0].locator.page and subject.startswith("Parties (matrix, verified")
    assert cells[0].quote.split()[0] in covered


def test_report_has_the_matrix_escaped(q, corpus, tmp_path):
    cells, name = stored_cells(q, corpus)
    [html] = [p for p in export_session(q, "deals", "html", tmp_path / "r.html") if p.suffix == ".html"]
    text = html.read_text()
    assert "Review matrix" in text and "1 of 2 cells verified" in text
    assert "<script>" not in text and "&lt;script&gt;" not in text  # the edit is shown, not the hostile answer
    assert "reviewer: correct" in text and "Not stated" in text
    md = export_session(q, "deals", "md", tmp_path / "r.md")[0].read_text()
    assert "## Review matrix" in md and "**Parties**: Ares Trading SA" in md
    q.mark_cell(cells[1].id, "")  # the mark cleared: the model's hostile answer is shown, as text
    text = export_session(q, "deals", "html", tmp_path / "r2.html")[0].read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
