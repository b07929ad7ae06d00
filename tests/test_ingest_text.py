"""Plain text and other text formats, on real corpus files and files built in code."""

from __future__ import annotations

import json
import re
from email.message import EmailMessage
from pathlib import Path

import pytest

from ingest.base import registry
from ingest.text import (PARA_CHARS, decode_bytes, extract_eml, extract_html, extract_json, extract_table,
                         extract_text)
from core.errors import CorruptFile, EmptyFile, UnsupportedFile


def _words(text: str) -> list[str]:
    return text.split()


def _seg_words(doc) -> list[str]:
    return [w for s in doc.segments for w in _words(s.text)]


# -- decoding -------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "latin-1", "cp1252", "utf-8"])
def test_encodings(tmp_path, ctx, encoding):
    text = "Café “quoted” déjà vu — naïve façade.\n\nSecond paragraph, ÆØÅ.\n"
    if encoding == "latin-1":
        text = text.replace("“", '"').replace("”", '"').replace("—", "-")
    path = tmp_path / f"note-{encoding}.txt"
    path.write_bytes(text.encode(encoding))
    doc = extract_text(path, ctx)
    assert _seg_words(doc) == _words(text)
    assert doc.meta["encoding"] == {"latin-1": "cp1252"}.get(encoding, encoding)  # cp1252 reads latin-1 text too


def test_utf16_without_bom(tmp_path, ctx):
    path = tmp_path / "wide.txt"
    path.write_bytes("Plain words in UTF-16, no byte order mark.\n".encode("utf-16-le"))
    doc = extract_text(path, ctx)
    assert doc.meta["encoding"] == "utf-16-le" and doc.segments[0].text.startswith("Plain words")


def test_decode_bytes_refuses_binary():
    assert decode_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00") is None
    assert decode_bytes(bytes(range(1, 32)) * 20) is None
    assert decode_bytes("ok\n".encode("utf-16"))[0] == "ok\n"


def test_empty_and_binary_text_files(tmp_path, ctx):
    for name, data in (("empty.txt", b""), ("blank.md", b"  \n\t\n\r\n")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(EmptyFile, match=name):
            extract_text(tmp_path / name, ctx)
    (tmp_path / "fake.txt").write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(UnsupportedFile, match="fake.txt"):
        extract_text(tmp_path / "fake.txt", ctx)


# -- prose ----------------------------------------------------------------------
def test_essay_paragraph_anchors(corpus, ctx):
    path = corpus / "haystack" / "paul_graham_essays" / "addiction.txt"
    doc = extract_text(path, ctx)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert doc.kind == "text" and len(doc.segments) > 1
    assert all(len(s.text) <= PARA_CHARS for s in doc.segments)
    for seg in doc.segments:
        loc = seg.locator
        assert loc.path == "addiction.txt" and 1 <= loc.line_start <= loc.line_end
        source = "\n".join(lines[loc.line_start - 1:loc.line_end])
        assert _words(seg.text) == _words(source)  # the anchor points at exactly this text
        assert seg.tokens > 0
    assert _seg_words(doc) == _words(path.read_text(encoding="utf-8"))


def test_contract_long_lines_are_cut(corpus, ctx):
    path = next((corpus / "contracts" / "cuad" / "txt").glob("ABILITYINC*.txt"))
    doc = extract_text(path, ctx)
    assert all(len(s.text) <= PARA_CHARS for s in doc.segments)
    assert _seg_words(doc) == _words(path.read_text(encoding="utf-8"))
    starts = [s.locator.line_start for s in doc.segments]
    assert starts == sorted(starts)


def test_markdown_and_rst(corpus, ctx):
    for path in (corpus / "README.md", corpus / "pdfs" / "ocrmypdf" / "README.rst"):
        doc = extract_text(path, ctx)
        assert _seg_words(doc) == _words(path.read_text(encoding="utf-8"))
    assert registry.find(Path("x.md")) is extract_text and registry.find(Path("x.rst")) is extract_text


# -- tables ---------------------------------------------------------------------
def test_csv_becomes_markdown_tables(corpus, ctx):
    path = corpus / "contracts" / "cuad" / "category_descriptions.csv"
    doc = extract_table(path, ctx)
    header = doc.segments[0].text.split("\n")[0]
    assert header.startswith("| ") and doc.meta["columns"] >= 2
    for seg in doc.segments:
        rows = seg.text.split("\n")
        assert rows[0] == header and re.fullmatch(r"\|( --- \|)+", rows[1])
        assert all(r.startswith("| ") and r.endswith(" |") for r in rows[2:])
    assert sum(len(s.text.split("\n")) - 2 for s in doc.segments) == doc.meta["rows"]
    first = doc.segments[0]
    assert first.locator.line_start == 2 and first.meta["rows"][0] == 1


def test_tsv_and_quoted_cells(tmp_path, ctx, corpus):
    doc = extract_table(corpus / "MANIFEST.tsv", ctx)
    assert doc.segments[0].text.startswith("| path | kind | source_repo |")
    path = tmp_path / "quoted.csv"
    path.write_text('name,note\nalpha,"two\nlines | with pipe"\nbeta,plain\n')
    doc = extract_table(path, ctx)
    assert "two lines \\| with pipe" in doc.segments[0].text
    seg = doc.segments[0]
    assert (seg.locator.line_start, seg.locator.line_end) == (2, 4)


# -- JSON -----------------------------------------------------------------------
def test_json_pretty_printed_when_minified(corpus, ctx, tmp_path):
    path = corpus / "contracts" / "cuad" / "cuad_qa_subset.json"
    doc = extract_json(path, ctx)
    body_lines = [row for s in doc.segments for row in s.text.split("\n")[1:]]
    assert len(body_lines) > 100
    small = tmp_path / "small.json"
    small.write_text('{\n  "a": 1,\n  "b": [1, 2]\n}\n')
    doc = extract_json(small, ctx)
    assert doc.meta["reformatted"] is False
    assert doc.segments[0].locator.label() == "small.json:1-4"
    assert doc.segments[0].text.split("\n")[2] == '2\t  "a": 1,'


def test_jsonl_records_keep_their_line(tmp_path, ctx):
    path = tmp_path / "records.jsonl"
    records = [{"id": i, "text": "word " * (3000 if i == 2 else 5)} for i in range(1, 5)]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    doc = extract_json(path, ctx)
    assert all(s.locator.line_start == s.locator.line_end == 2 for s in doc.segments
               if '"id": 2' in s.text)
    assert any(s.locator.line_start <= 4 == s.locator.line_end for s in doc.segments)
    assert max(len(s.text) for s in doc.segments) < 6000


# -- HTML and e-mail ------------------------------------------------------------
HTML = """<!doctype html>
<html><head><title>Quarterly note</title>
<style>p { color: red }</style>
<script>document.write("<p>hidden script text</p>")</script></head>
<body>
<h1>Results &amp; outlook</h1>
<p>Revenue grew in every region during the quarter. The board thanks the staff for their work, and
notes that costs stayed flat while the order book grew by a fifth compared to the same quarter last year,
which is the best result since the company was founded.</p>
<ul><li>North: up 12%</li><li>South: up 7%</li></ul>
</body></html>
"""


def test_html_text_without_scripts(tmp_path, ctx):
    path = tmp_path / "note.html"
    path.write_text(HTML)
    doc = extract_html(path, ctx)
    text = "\n".join(s.text for s in doc.segments)
    assert "hidden script" not in text and "color: red" not in text
    assert "# Results & outlook" in text and "- North: up 12%" in text
    revenue = next(s for s in doc.segments if "Revenue grew" in s.text)
    lines = HTML.split("\n")
    assert "Quarterly note" in lines[revenue.locator.line_start - 1] or "Results" in lines[revenue.locator.line_start - 1]
    assert "best result" in "\n".join(lines[revenue.locator.line_start - 1:revenue.locator.line_end])
    assert registry.find(Path("a.htm")) is extract_html


def test_eml_with_attachments(tmp_path, ctx):
    msg = EmailMessage()
    msg["From"] = "Ana <ana@example.org>"
    msg["To"] = "bo@example.org"
    msg["Subject"] = "Contract draft"
    msg.set_content("Hello Bo,\n\nPlease review the attached draft before Friday.\n\nAna\n")
    msg.add_attachment("Clause 1. The term is two years.\n", filename="draft.txt")
    msg.add_attachment(b"\x89PNG\r\n\x1a\n" + bytes(64), maintype="image", subtype="png", filename="logo.png")
    path = tmp_path / "mail.eml"
    path.write_bytes(bytes(msg))
    doc = extract_eml(path, ctx)
    head = doc.segments[0].text
    assert "Subject: Contract draft" in head and "From: Ana <ana@example.org>" in head
    assert "draft.txt (text/plain)" in head and "logo.png (image/png)" in head
    assert any("review the attached draft" in s.text for s in doc.segments)
    attached = [s for s in doc.segments if s.locator.path == "mail.eml/draft.txt"]
    assert attached and "term is two years" in attached[0].text
    assert not any("PNG" in s.text for s in doc.segments[1:])


# -- Office -----------------------------------------------------------------------
def test_docx_reading_order_with_tables(tmp_path, ctx):
    import docx
    from ingest.office import extract_docx

    document = docx.Document()
    document.add_heading("Master Services Agreement", 1)
    document.add_paragraph("The supplier shall deliver the services described in Schedule A. " * 8)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Fee", "Due"
    table.cell(1, 0).text, table.cell(1, 1).text = "EUR 1,000", "monthly"
    document.add_paragraph("Either party may terminate with 30 days notice. " * 8)
    path = tmp_path / "msa.docx"
    document.save(path)
    doc = extract_docx(path, ctx)
    text = "\n".join(s.text for s in doc.segments)
    assert text.index("# Master Services Agreement") < text.index("| Fee | Due |") < text.index("terminate")
    assert "| EUR 1,000 | monthly |" in text
    assert doc.segments[0].locator.line_start == 1 and doc.meta["unit"] == "paragraph"
    broken = tmp_path / "broken.docx"
    broken.write_bytes(b"PK\x03\x04 not a real docx")
    with pytest.raises(CorruptFile, match="broken.docx"):
        extract_docx(broken, ctx)


def test_pptx_slides_and_notes(tmp_path, ctx):
    import pptx
    from ingest.office import extract_pptx

    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Roadmap"
    slide.placeholders[1].text = "Ship the importer in May"
    slide.notes_slide.notes_text_frame.text = "Mention the budget"
    deck.slides.add_slide(deck.slide_layouts[6])  # blank slide: no segment
    deck.slides.add_slide(deck.slide_layouts[5]).shapes.title.text = "Questions"
    path = tmp_path / "deck.pptx"
    deck.save(path)
    doc = extract_pptx(path, ctx)
    assert doc.pages == 3
    assert [s.locator.page for s in doc.segments] == [1, 3]
    assert "Ship the importer in May" in doc.segments[0].text and "Notes: Mention the budget" in doc.segments[0].text
    assert doc.segments[1].text == "Slide 3\nQuestions"


def test_wide_csv_becomes_records(corpus, ctx):
    path = corpus / "contracts" / "cuad" / "master_clauses_subset.csv"
    doc = extract_table(path, ctx)
    assert doc.meta["columns"] > 12 and doc.segments[0].meta["format"] == "records"
    first = doc.segments[0].text
    assert first.startswith("Row 1:\n- ")
    header = next(iter(__import__("csv").reader(path.open(encoding="utf-8"))))
    assert f"- {header[0]}: " in first
    assert sum(s.text.count("\nRow ") + s.text.startswith("Row ") for s in doc.segments) == doc.meta["rows"]
