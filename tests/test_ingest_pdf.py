"""PDF extraction on real corpus files and on PDFs built here with PyMuPDF."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path

import pymupdf
import pytest

from core.errors import CorruptFile, EmptyFile, EncryptedPdf, IngestError, WrongPassword
from ingest.base import Progress
from ingest.pdf import extract_pdf, password_variants
from tests import hostile


def _manifest(corpus: Path, kind: str) -> list[Path]:
    with open(corpus / "MANIFEST.tsv", newline="") as fh:
        return [corpus / row[0] for row in csv.reader(fh, delimiter="\t") if len(row) > 1 and row[1] == kind]


def _text(doc) -> str:
    return "\n".join(s.text for s in doc.segments if s.kind == "text")


def _inside(bbox, rect: pymupdf.Rect, slack: float = 1.0) -> bool:
    x0, y0, x1, y1 = bbox
    return rect.x0 - slack <= x0 <= x1 <= rect.x1 + slack and rect.y0 - slack <= y0 <= y1 <= rect.y1 + slack


def _no_ocr(ctx):
    ctx.settings.ocr = False  # until Settings has an `ocr` field; extract_pdf reads it with getattr
    return ctx


def test_text_blocks_carry_boxes_that_search_for_agrees_with(corpus, ctx, blobs):
    path = corpus / "pdfs/py-pdf-sample-files/004-pdflatex-4-pages/pdflatex-4-pages.pdf"
    events: list[Progress] = []
    ctx.progress = events.append
    doc = extract_pdf(path, ctx)
    assert doc.kind == "pdf" and doc.pages == 4
    assert [e.done for e in events if e.stage == "page"] == [1, 2, 3, 4]
    assert {s.locator.page for s in doc.segments} == {1, 2, 3, 4}
    assert all(s.kind == "text" and s.tokens > 0 for s in doc.segments)  # text pages: renders only in meta
    pdf = pymupdf.open(path)
    for seg in doc.segments:
        assert _inside(seg.locator.bbox, pdf[seg.locator.page - 1].rect)
    worded = [s for s in doc.segments if re.search(r"[A-Za-z]{5,}", s.text)]
    assert len(worded) >= 4
    for seg in worded:
        page = pdf[seg.locator.page - 1]
        word = max(re.findall(r"[A-Za-z]{5,}", seg.text), key=len)
        hits = page.search_for(word)
        assert any(pymupdf.Rect(seg.locator.bbox).intersects(hit) for hit in hits), word
    for info in doc.meta["pages"]:
        assert info["text_layer"] == "native" and info["width"] > 0 and info["height"] > 0
        # text pages keep a thumbnail; their full image is rendered when first viewed
        assert info["image"] is None and blobs.read(info["thumb"]).startswith(b"\xff\xd8\xff")


def test_render_pages_all_stores_every_page_image(corpus, settings, blobs):
    from ingest.base import ExtractContext

    ctx = ExtractContext(settings=settings.replace(render_pages="all"), blobs=blobs)
    doc = extract_pdf(corpus / "pdfs" / "py-pdf-sample-files" / "004-pdflatex-4-pages" / "pdflatex-4-pages.pdf", ctx)
    for info in doc.meta["pages"]:
        image = blobs.read(info["image"])
        assert image.startswith(b"\xff\xd8\xff") and len(image) > len(blobs.read(info["thumb"]))


def test_segments_are_paragraph_sized(corpus, ctx):
    doc = extract_pdf(corpus / "pdfs/pdfjs/tracemonkey.pdf", _no_ocr(ctx))
    sizes = sorted(len(s.text) for s in doc.segments)
    median = sizes[len(sizes) // 2]
    assert 150 < median < 1500 and sizes[-1] <= 2600
    assert len(doc.segments) > 3 * doc.pages  # not one segment per page


def test_two_columns_read_column_by_column(tmp_path, ctx):
    path = tmp_path / "columns.pdf"
    pdf = pymupdf.open()
    page = pdf.new_page()
    page.insert_textbox(pymupdf.Rect(50, 40, 560, 80), "Title spanning both columns of this page " * 3)
    for col, x in (("left", 50), ("right", 320)):
        for n, y in enumerate((100, 300)):
            page.insert_textbox(pymupdf.Rect(x, y, x + 240, y + 150), f"{col}{n} " + "words in a column " * 20)
    pdf.save(path)
    doc = extract_pdf(path, ctx)
    order = [re.match(r"\w+", s.text).group() for s in doc.segments]
    assert order == ["Title", "left0", "left1", "right0", "right1"]


@pytest.mark.parametrize("name", [
    "pdfs/py-pdf-sample-files/005-libreoffice-writer-password/libreoffice-writer-password.pdf",
    "pdfs/pdfjs/issue3371.pdf", "pdfs/pdfjs/issue6010_1.pdf", "pdfs/pdfjs/saslprep-r6.pdf",
    "pdfs/pdfjs/pr6531_1.pdf",
])
def test_encrypted_without_with_and_with_wrong_password(corpus, ctx, name):
    path = corpus / name
    secret = json.loads((corpus / "pdfs/passwords.json").read_text())[name]["user_password"]
    with pytest.raises(EncryptedPdf, match=re.escape(path.name)) as refused:
        extract_pdf(path, ctx)
    assert not isinstance(refused.value, WrongPassword) and "password" in refused.value.hint
    ctx.password = secret + "-wrong"
    with pytest.raises(WrongPassword, match=re.escape(path.name)):
        extract_pdf(path, ctx)
    ctx.password = secret  # as given: the SASLprep one only opens once normalised
    doc = extract_pdf(path, _no_ocr(ctx))
    assert doc.pages >= 1 and len(doc.meta["pages"]) == doc.pages


def test_owner_password_only_opens_without_a_password(corpus, ctx):
    doc = extract_pdf(corpus / "pdfs/pdfjs/empty_protected.pdf", _no_ocr(ctx))
    assert doc.pages == 1


def test_password_variants_include_saslprep():
    variants = password_variants("S\u00aaSL\u00adprep")
    assert variants[0] == "S\u00aaSL\u00adprep" and "SaSLprep" in variants
    assert password_variants("plain") == ["plain"]


def test_malformed_files_are_repaired_or_refused_by_name(corpus, ctx):
    files = _manifest(corpus, "pdf-malformed")
    assert len(files) >= 5
    outcomes = {}
    for path in files:
        try:
            doc = extract_pdf(path, _no_ocr(ctx))
        except CorruptFile as exc:
            assert path.name in str(exc) and "re-export" in exc.hint
            outcomes[path.name] = "refused"
        else:
            assert doc.pages >= 1 and len(doc.meta["pages"]) == doc.pages
            outcomes[path.name] = "repaired"
    assert outcomes["invalid.pdf"] == "refused"
    assert outcomes["helloworld-bad.pdf"] == "repaired"
    # the page tree is lost but the page objects survive: they are hung on a new tree
    assert outcomes["unreadablemetadata.pdf"] == "repaired"


def test_empty_and_non_pdf_files(tmp_path, ctx):
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    with pytest.raises(EmptyFile, match="empty.pdf"):
        extract_pdf(empty, ctx)
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"this is not a PDF at all\n" * 20)
    with pytest.raises(CorruptFile, match="junk.pdf"):
        extract_pdf(junk, ctx)


def test_one_bad_page_costs_one_page(tmp_path, ctx):
    """PyMuPDF raises a TypeError on page 2 (a warning about a broken resource it cannot pass on)."""
    doc = extract_pdf(hostile.bad_resource_page(tmp_path / "bad-resource.pdf"), _no_ocr(ctx))
    assert doc.pages == 2 and {s.locator.page for s in doc.segments} == {1}
    assert "This is page 1" in _text(doc)
    (warning,) = doc.meta["warnings"]
    assert warning.startswith("page 2 could not be read (TypeError: in method 'll_fz_warn'") and "left out" in warning


@pytest.mark.parametrize("how, pages, lost", [("short", 3, 2), ("count", 2, 3), ("missing", 3, 2), ("repeated", 3, 2)])
def test_a_damaged_page_tree_is_reported(tmp_path, ctx, how, pages, lost):
    doc = extract_pdf(hostile.damaged_tree(tmp_path / f"tree-{how}.pdf", how), _no_ocr(ctx))
    assert doc.pages == pages and f"This is page {lost}" not in _text(doc)
    assert any(w.startswith("The file's page tree is damaged") for w in doc.meta["warnings"]), doc.meta


def test_an_intact_file_has_no_warnings(corpus, ctx):
    doc = extract_pdf(corpus / "pdfs/py-pdf-sample-files/004-pdflatex-4-pages/pdflatex-4-pages.pdf", _no_ocr(ctx))
    assert "warnings" not in doc.meta


def test_scanned_page_is_read_by_ocr(corpus, ctx):
    path = corpus / "pdfs/ocrmypdf/linn.pdf"
    doc = extract_pdf(path, ctx)
    assert doc.meta["pages"][0]["text_layer"] == "ocr"
    truth = set(re.findall(r"[a-z]{4,}", (corpus / "pdfs/ocrmypdf/linn.txt").read_text().lower()))
    found = set(re.findall(r"[a-z]{4,}", _text(doc).lower()))
    assert len(truth & found) / len(truth) > 0.8
    assert {"linnsequencer", "sequence", "recorder", "tracks"} <= found
    texts, last = doc.segments[:-1], doc.segments[-1]
    assert last.kind == "image" and last.image_sha == doc.meta["pages"][0]["image"] and last.meta["width"] > 0
    rect = pymupdf.open(path)[0].rect
    assert texts and all(s.meta.get("ocr") and _inside(s.locator.bbox, rect) for s in texts)


def test_scans_turned_sideways_or_upside_down_are_read_upright(corpus, ctx):
    path = corpus / "pdfs/ocrmypdf/cardinal.pdf"  # one scanned page, baked in at 0, 90, 180 and 270 degrees
    doc = extract_pdf(path, ctx)
    pages = {n: [s for s in doc.segments if s.locator.page == n and s.kind == "text"] for n in range(1, 5)}
    assert [{s.meta.get("turned") for s in pages[n]} for n in range(1, 5)] == [{None}, {90}, {180}, {270}]
    upright = [s.text for s in pages[1]]
    assert upright[0].startswith("The LinnSequencer")
    words = [set(re.findall(r"[a-z]{4,}", " ".join(s.text for s in pages[n]).lower())) for n in range(1, 5)]
    for n in (2, 3, 4):
        assert pages[n][0].text.startswith("The LinnSequencer")  # the title first: read in order, not reversed
        assert len(words[0] & words[n - 1]) / len(words[0]) > 0.9
    pdf = pymupdf.open(path)
    for n in range(1, 5):
        title = pages[n][0].locator.bbox
        assert _inside(title, pdf[n - 1].rect)
        assert pymupdf.Rect(title).width > pymupdf.Rect(title).height if n in (1, 3) else \
            pymupdf.Rect(title).height > pymupdf.Rect(title).width  # the box lies where the title is printed


def test_ocr_boxes_turn_back_onto_the_input_image():
    import numpy as np

    from ingest.ocr import OcrPage

    height, width = 5, 8
    image = np.zeros((height, width))
    image[1, 6] = 1  # the pixel at x=6, y=1
    for turn in range(4):
        y, x = np.argwhere(np.rot90(image, turn) == 1)[0]
        assert OcrPage([], turn, (width, height)).unturn((x, y, x + 1, y + 1)) == (6, 1, 7, 2)


def test_scan_without_ocr_keeps_page_images(corpus, ctx, blobs):
    doc = extract_pdf(corpus / "pdfs/py-pdf-sample-files/007-imagemagick-images/imagemagick-images.pdf", _no_ocr(ctx))
    assert doc.pages >= 2
    assert all(p["text_layer"] == "none" for p in doc.meta["pages"])
    images = [s for s in doc.segments if s.kind == "image"]
    assert [s.locator.page for s in images] == list(range(1, doc.pages + 1))
    assert all(blobs.find(s.image_sha) for s in images) and images[0].text == "[page 1 image]"


def test_rotated_pages_have_boxes_inside_the_displayed_page(corpus, ctx):
    for name in ("pdfs/pdfjs/hello_world_rotated.pdf", "pdfs/pdfjs/rotation.pdf",
                 "pdfs/py-pdf-sample-files/015-arabic/habibi-rotated.pdf"):
        path = corpus / name
        doc = extract_pdf(path, _no_ocr(ctx))
        pdf = pymupdf.open(path)
        assert doc.segments
        for seg in doc.segments:
            page = pdf[seg.locator.page - 1]
            assert _inside(seg.locator.bbox, page.rect), (name, seg.locator)
            info = doc.meta["pages"][seg.locator.page - 1]
            assert (info["width"], info["height"]) == (round(page.rect.width, 2), round(page.rect.height, 2))
    first = extract_pdf(corpus / "pdfs/pdfjs/hello_world_rotated.pdf", ctx).segments[0]
    page = pymupdf.open(corpus / "pdfs/pdfjs/hello_world_rotated.pdf")[0]
    assert page.rotation and "Hello" in first.text
    assert pymupdf.Rect(first.locator.bbox).intersects(page.search_for("Hello")[0])


def test_form_values_become_a_segment(tmp_path, ctx):
    path = tmp_path / "form.pdf"
    pdf = pymupdf.open()
    page = pdf.new_page()
    page.insert_text((50, 60), "Application form")
    for n, (field, value) in enumerate((("applicant", "Jane Q. Doe"), ("city", "Ghent"), ("note", ""))):
        widget = pymupdf.Widget()
        widget.field_type, widget.field_name = pymupdf.PDF_WIDGET_TYPE_TEXT, field
        widget.field_value, widget.rect = value, pymupdf.Rect(50, 100 + 40 * n, 300, 125 + 40 * n)
        page.add_widget(widget)
    pdf.save(path)
    doc = extract_pdf(path, ctx)
    form = [s for s in doc.segments if s.meta.get("form")]
    assert len(form) == 1
    assert form[0].text.splitlines() == ["applicant: Jane Q. Doe", "city: Ghent"]
    assert _inside(form[0].locator.bbox, pymupdf.Rect(49, 99, 301, 166))


def test_ruled_table_becomes_markdown_without_duplicated_cells(tmp_path, ctx):
    path = tmp_path / "table.pdf"
    pdf = pymupdf.open()
    page = pdf.new_page()
    page.insert_text((50, 60), "Quarterly figures follow in the table below.")
    rows = [("Region", "Revenue", "Margin"), ("North", "1200", "12%"), ("South", "950", "9%"), ("East", "1810", "15%"),
            ("West|Coast", "7", "1%")]
    x, y, w, h = 50, 100, 150, 24
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            page.draw_rect(pymupdf.Rect(x + c * w, y + r * h, x + (c + 1) * w, y + (r + 1) * h), color=(0, 0, 0))
            page.insert_text((x + c * w + 5, y + r * h + 16), cell)
    pdf.save(path)
    doc = extract_pdf(path, ctx)
    tables = [s for s in doc.segments if s.meta.get("table")]
    assert len(tables) == 1
    assert "|North|1200|12%|" in tables[0].text.replace(" ", "")
    assert tables[0].text.splitlines()[:2] == ["|Region|Revenue|Margin|", "|---|---|---|"]
    assert "|West\\|Coast|7|1%|" in tables[0].text  # a pipe in a cell cannot split it
    assert _inside(tables[0].locator.bbox, pymupdf.Rect(45, 95, 505, 225))
    others = _text(doc).replace(tables[0].text, "")
    assert "Quarterly" in others and "1810" not in others


def test_figures_drawn_through_forms_are_kept(corpus, ctx, tmp_path):
    """test-3820.pdf page 1 draws its pictures inside form XObjects, not from the page's own images."""
    one = pymupdf.open(corpus / "pdfs/pymupdf/test-3820.pdf")
    one.select([0])
    one.save(tmp_path / "page1.pdf")
    doc = extract_pdf(tmp_path / "page1.pdf", _no_ocr(ctx))
    figures = [s for s in doc.segments if s.meta.get("figure")]
    assert figures and all(s.kind == "image" and s.image_sha for s in figures)


def test_rules_around_no_text_are_not_a_table(corpus, ctx):
    """test_2904.pdf draws a ruled box on page 6 that the finder takes for a 2 x 4 table of nothing."""
    doc = extract_pdf(corpus / "pdfs/pymupdf/test_2904.pdf", _no_ocr(ctx))
    tables = [s for s in doc.segments if s.meta.get("table")]
    assert not [t for t in tables if t.locator.page == 6]
    assert all(re.search(r"\w", t.text.split("\n", 2)[-1]) for t in tables)  # every table kept has text in its cells


def test_table_without_outer_borders_is_found(corpus, ctx):
    """A two-column table ruled only between rows and down the middle (its outline is implied)."""
    doc = extract_pdf(corpus / "pdfs/pymupdf/cms-etc-filled.pdf", _no_ocr(ctx))
    tables = [s for s in doc.segments if s.meta.get("table") and s.locator.page == 7]
    assert tables and "|Alabama|Palmetto GBA, LLC<br>" in tables[0].text
    assert tables[0].text.splitlines()[1].count("|") == 3  # two columns


def test_unruled_table_is_found_only_in_layout_mode(corpus, ctx):
    """A financial table ruled only under its header: the layout model finds it when asked."""
    path = corpus / "pdfs/pymupdf/test_3725.pdf"
    assert not [s for s in extract_pdf(path, _no_ocr(ctx)).segments if s.meta.get("table")]
    ctx.settings.pdf_tables = "layout"
    tables = [s for s in extract_pdf(path, ctx).segments if s.meta.get("table")]
    assert len(tables) == 1
    rows = [r for r in tables[0].text.splitlines() if "Commercial real estate" in r]
    assert rows and {"12", "0.92"} <= {c.strip("* ") for c in rows[0].split("|")} and "112" in rows[0]
    assert _inside(tables[0].locator.bbox, pymupdf.open(path)[0].rect)
    ctx.settings.pdf_tables = "off"
    assert not [s for s in extract_pdf(corpus / "pdfs/pymupdf/cms-etc-filled.pdf", ctx).segments if s.meta.get("table")]


def test_cancel_stops_between_pages(corpus, ctx):
    ctx.cancelled = lambda: True
    with pytest.raises(IngestError, match="cancelled"):
        extract_pdf(corpus / "pdfs/py-pdf-sample-files/004-pdflatex-4-pages/pdflatex-4-pages.pdf", ctx)


def test_nonlatin_text_survives(corpus, ctx):
    doc = extract_pdf(corpus / "pdfs/pymupdf/chinese-tables.pdf", _no_ocr(ctx))
    assert re.search(r"[\u4e00-\u9fff]{4}", _text(doc))
    arabic = extract_pdf(corpus / "pdfs/py-pdf-sample-files/015-arabic/habibi.pdf", _no_ocr(ctx))
    assert re.search(r"[\u0600-\u06ff]{3}", _text(arabic))


def test_long_book_pages_per_second(corpus, ctx, capsys):
    path = corpus / "pdfs/pdfjs/freeculture.pdf"
    start = time.perf_counter()
    doc = extract_pdf(path, _no_ocr(ctx))
    seconds = time.perf_counter() - start
    assert doc.pages == 352 and len(doc.meta["pages"]) == 352
    assert {s.locator.page for s in doc.segments} >= set(range(20, 340))
    assert "Free Culture" in _text(doc) or "FREE CULTURE" in _text(doc)
    with capsys.disabled():
        print(f"\nfreeculture.pdf: {doc.pages / seconds:.1f} pages/s ({seconds:.1f} s)")
