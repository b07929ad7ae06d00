"""Exported reports and highlighted source PDFs, from a real database, real blobs and real PDFs."""

from __future__ import annotations

import hashlib

import pymupdf
import pytest

import export
from core.document import Locator, ParsedDocument, Segment
from core.errors import QuireError
from core.records import CitationRecord, TurnRecord
from storage import repo

SENTENCE = "The licensee shall pay royalties within thirty days of each quarter."
QUESTION = "When are royalties due?"


def _pdf_bytes() -> bytes:
    doc = pymupdf.open()
    texts = [
        "Page one is an introduction to the agreement between the parties.",
        f"Section 4. Payment.\n{SENTENCE}\nLate payments accrue interest at two percent.",
        "Page three holds the signatures of both parties.",
    ]
    for text in texts:
        page = doc.new_page()
        page.insert_textbox(pymupdf.Rect(72, 72, 520, 400), text, fontsize=11)
    return doc.tobytes()


def _store_pdf(db, blobs, session_id: int, data: bytes, name: str, cited: dict[int, str]) -> dict[int, int]:
    """Store a PDF with one segment per page; ``cited`` maps a page to the text whose box that segment carries.

    Returns page -> segment id.
    """
    pdf = pymupdf.open(stream=data, filetype="pdf")
    segments = []
    for page in pdf:
        number = page.number + 1
        rects = page.search_for(cited[number]) if number in cited else []
        bbox = tuple(pymupdf.Rect(rects[0]).include_rect(rects[-1])) if rects else tuple(page.rect)
        segments.append(Segment("text", page.get_text(), Locator(page=number, bbox=bbox), tokens=20))
    parsed = ParsedDocument(name, "pdf", segments, pages=pdf.page_count)
    blob = blobs.put(data, suffix=".pdf")
    doc_id = repo.store_document(db, session_id, parsed, sha256=hashlib.sha256(data).hexdigest(), blob_sha=blob)
    return {s.locator.page: s.id for s in repo.session_segments(db, session_id) if s.document_id == doc_id}


def _turn(question: str, answer: str, citations: list[CitationRecord]) -> TurnRecord:
    return TurnRecord(
        question=question, answer=answer, runtime="llamacpp", model="SmolLM2-135M", strategy="full", prompt_tokens=120,
        completion_tokens=18, cached_tokens=64, ttft_s=0.25, total_s=1.5, citations=citations,
    )


@pytest.fixture
def session(db, blobs):
    """A session with a 3-page PDF and one turn citing the known sentence on page 2 (and page 3 without a quote)."""
    info = repo.create_session(db, "Royalty review")
    seg = _store_pdf(db, blobs, info.id, _pdf_bytes(), "licence.pdf", {2: SENTENCE, 3: "Page three"})
    page2 = repo.get_segments(db, [seg[2]])[seg[2]]
    page3 = repo.get_segments(db, [seg[3]])[seg[3]]
    cites = [
        CitationRecord(ref="S2", segment_id=seg[2], document_name="licence.pdf", locator=page2.locator,
                       quote=SENTENCE, status="verified"),
        CitationRecord(ref="S3", segment_id=seg[3], document_name="licence.pdf", locator=page3.locator, quote="",
                       status="unverified"),
    ]
    repo.save_turn(db, info.id, _turn(QUESTION, "Within thirty days [S2]; signed later [S3].", cites))
    return info


def test_report_resolves_passages(q, db, session):
    report = export.build_report(q, session)
    assert report.session == "Royalty review"
    assert report.runtimes == ["llamacpp / SmolLM2-135M"]
    [turn] = report.turns
    s2, s3 = turn.citations
    assert (s2.passage, s2.location, s2.document_name, s2.status) == (SENTENCE, "page 2", "licence.pdf", "verified")
    assert s3.passage.startswith("Page three holds the signatures")  # no quote: the segment's text
    assert [c.ref for _, c in turn.answer_parts() if c] == ["S2", "S3"]


def test_markdown_names_page_and_quotes_passage(q, db, session):
    md = export.render_markdown(export.build_report(q, session))
    assert f"## Q1. {QUESTION}" in md
    assert "licence.pdf, page 2 - verified" in md
    assert f"> {SENTENCE}" in md
    assert "[\\[S2\\]](#q1-S2)" in md and '<a id="q1-S2"></a>' in md


def test_html_escapes_hostile_text_and_links_markers(q, db, blobs):
    info = repo.create_session(db, "hostile")
    evil = "<script>alert('x')</script>"
    seg = _store_pdf(db, blobs, info.id, _pdf_bytes(), f"{evil}.pdf", {2: SENTENCE})
    locator = repo.get_segments(db, [seg[2]])[seg[2]].locator
    cite = CitationRecord(ref="S1", segment_id=seg[2], document_name=f"{evil}.pdf", locator=locator,
                          quote=f"{evil} {SENTENCE}", status="missing")
    repo.save_turn(db, info.id, _turn(f"Is {evil} safe?", f"No {evil} [S1]", [cite]))
    page = export.render_html(export.build_report(q, info))
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert '<a class="ref" href="#q1-S1">[S1]</a>' in page and '<li id="q1-S1">' in page
    assert '<span class="badge missing">missing: no passage has this id</span>' in page
    assert "<style>" in page and "<link" not in page  # self-contained


def test_pdf_report_opens_and_holds_the_question(q, db, session, tmp_path):
    out = export.render_pdf(export.build_report(q, session), tmp_path / "report.pdf")
    with pymupdf.open(out) as doc:
        text = "".join(page.get_text() for page in doc)
        links = [link for page in doc for link in page.get_links()]
    assert QUESTION in text and SENTENCE in " ".join(text.split())
    assert links, "the [S2] marker links to its passage"


def test_pdf_report_flows_long_non_latin_text_across_pages(q, db, tmp_path):
    info = repo.create_session(db, "long")
    answer = "Договор действует пять лет. 本合同有效期为五年。 " * 200
    repo.save_turn(db, info.id, _turn("Сколько лет? 多少年?", answer, []))
    out = export.render_pdf(export.build_report(q, info), tmp_path / "long.pdf")
    with pymupdf.open(out) as doc:
        assert doc.page_count > 2
        last = doc[-1].get_text()
        assert "Договор" in doc[0].get_text() and "本合同" in doc[1].get_text()
        assert f"{doc.page_count} / {doc.page_count}" in last


def _highlights(page: pymupdf.Page) -> list[pymupdf.Annot]:
    return [a for a in page.annots() if a.type[1] == "Highlight"]


def test_highlighted_copy_marks_only_the_cited_page(q, db, blobs, session, tmp_path):
    [path] = export.highlight_sources(q, session, tmp_path / "sources")
    assert path == (tmp_path / "sources" / "licence-annotated.pdf").resolve()
    with pymupdf.open(path) as doc:
        first, second, third = doc  # pages kept alive while their annotations are read
        assert _highlights(first) == []
        [mark] = _highlights(second)
        assert SENTENCE in " ".join(second.get_textbox(mark.rect).split())
        assert mark.rect.height < 30  # the sentence's line, found by search, not a whole-page box
        assert "Q1 [S2] (verified): When are royalties due?" in mark.info["content"]
        assert len(_highlights(third)) == 1  # page 3 cited without a quote: its box


def test_hostile_document_name_stays_inside_out_dir(q, db, blobs, tmp_path):
    info = repo.create_session(db, "evil")
    seg = _store_pdf(db, blobs, info.id, _pdf_bytes(), "../../evil.pdf", {2: SENTENCE})
    locator = repo.get_segments(db, [seg[2]])[seg[2]].locator
    cite = CitationRecord(ref="S1", segment_id=seg[2], document_name="../../evil.pdf", locator=locator,
                          quote=SENTENCE, status="verified")
    repo.save_turn(db, info.id, _turn(QUESTION, "Thirty days [S1].", [cite]))
    out_dir = tmp_path / "deep" / "out"
    [path] = export.highlight_sources(q, info, out_dir)
    assert path.parent == out_dir.resolve() and path.name == "evil-annotated.pdf"
    assert not (tmp_path / "evil-annotated.pdf").exists()


@pytest.mark.parametrize("name, stem", [
    ("..", "document"), ("a/b\\..\\c.PDF", "c"), ("ü" * 300 + ".pdf", "ü" * 80), (".hidden.pdf", "hidden"),
])
def test_safe_stem(name, stem):
    from export.files import safe_stem

    assert safe_stem(name) == stem


@pytest.mark.parametrize("fmt", ["md", "html", "pdf"])
def test_export_session_writes_report_and_sources(q, db, blobs, session, tmp_path, fmt):
    out = tmp_path / f"royalties.{fmt}"
    paths = export.export_session(q, session, fmt, out)
    assert paths[0] == out and out.stat().st_size > 0
    assert paths[1:] == [(tmp_path / "royalties_sources" / "licence-annotated.pdf").resolve()]
    assert not list(tmp_path.glob(".tmp-*"))  # atomic writes leave no temporaries
    if fmt != "pdf":
        assert SENTENCE in out.read_text(encoding="utf-8")


def test_unknown_format_is_a_user_error(q, db, blobs, session, tmp_path):
    with pytest.raises(QuireError) as err:
        export.export_session(q, session, "docx", tmp_path / "r.docx")
    assert "md, html, pdf" in err.value.hint
    assert not (tmp_path / "r.docx").exists()


def test_highlight_on_a_real_contract(q, db, blobs, corpus, tmp_path):
    path = sorted((corpus / "contracts" / "cuad" / "pdf").glob("*"))[0]
    data = path.read_bytes()
    with pymupdf.open(stream=data, filetype="pdf") as pdf:
        page_no = min(2, pdf.page_count)
        blocks = [b for b in pdf[page_no - 1].get_text("blocks") if len(b[4].split()) >= 20]
    block = blocks[0]
    quote = " ".join(block[4].split()[:16])
    info = repo.create_session(db, "cuad")
    seg = _store_pdf(db, blobs, info.id, data, path.name, {})
    locator = Locator(page=page_no, bbox=tuple(block[:4]))
    cite = CitationRecord(ref="S1", segment_id=seg[page_no], document_name=path.name, locator=locator, quote=quote,
                          status="verified")
    repo.save_turn(db, info.id, _turn("What does the contract say?", "It says this [S1].", [cite]))
    [out] = export.highlight_sources(q, info, tmp_path)
    with pymupdf.open(out) as doc:
        pages = list(doc)  # pages kept alive while their annotations are read
        marks = [(p.number + 1, a) for p in pages for a in _highlights(p)]
        assert [n for n, _ in marks] == [page_no]
        mark = marks[0][1]
        assert pymupdf.Rect(block[:4]).intersects(mark.rect)
        assert mark.rect.height < pymupdf.Rect(block[:4]).height + 1  # the quote, not more than its block
        covered = " ".join(pages[page_no - 1].get_textbox(mark.rect).split())
        assert " ".join(quote.split()[:6]) in covered


def test_code_citations_get_a_line_label_and_no_annotated_copy(q, db, blobs, tmp_path):
    info = repo.create_session(db, "code")
    code = "def pay(amount):\n    return amount * 2\n"
    seg = Segment("text", code, Locator(path="src/pay.py", line_start=12, line_end=30))
    repo.store_document(db, info.id, ParsedDocument("pay.py", "code", [seg]), sha256="c" * 64)
    [record] = repo.session_segments(db, info.id)
    cite = CitationRecord(ref="S1", segment_id=record.id, document_name="pay.py", locator=record.locator, quote="",
                          status="verified")
    repo.save_turn(db, info.id, _turn("What does pay do?", "It doubles [S1].", [cite]))
    out = tmp_path / "code.md"
    assert export.export_session(q, info, "md", out) == [out]
    text = out.read_text(encoding="utf-8")
    assert "pay.py, src/pay.py:12-30 - verified" in text
    assert "> def pay(amount): return amount \\* 2" in text  # segment text, trimmed to one line


def test_control_characters_in_names_are_escaped_in_every_format(q, db, blobs, tmp_path):
    info = repo.create_session(db, "names")
    name = "minutes\r\x1b[2Kerror: disk full\u202etxt.pdf"
    seg = _store_pdf(db, blobs, info.id, _pdf_bytes(), name, {2: SENTENCE})
    locator = repo.get_segments(db, [seg[2]])[seg[2]].locator
    cite = CitationRecord(ref="S1", segment_id=seg[2], document_name=name, locator=locator,
                          quote=f"\x1b[31m{SENTENCE}", status="verified")
    repo.save_turn(db, info.id, _turn(QUESTION, "Within thirty days [S1].", [cite]))
    report = export.build_report(q, info)
    markdown, page = export.render_markdown(report), export.render_html(report)
    for text in (markdown, page):
        assert not any(c in text for c in "\r\x1b\u202e")
    assert "minutes\\\\r\\\\x1b\\[2Kerror: disk full\\\\u202etxt.pdf" in markdown  # shown as one backslash each
    assert "minutes\\r\\x1b[2Kerror: disk full\\u202etxt.pdf" in page
    pdf = pymupdf.open(export.render_pdf(report, tmp_path / "r.pdf"))
    shown = "".join(page.get_text() for page in pdf)
    assert "\x1b" not in shown and "\\x1b" in shown
