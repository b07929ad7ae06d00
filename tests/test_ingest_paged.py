"""Embedded figures in PDFs, and formats MuPDF lays out into pages (SVG, CBZ, EPUB; XPS goes the same way)."""

import io
import zipfile

import pymupdf
from PIL import Image, ImageDraw

from ingest.pdf import extract_paged, extract_pdf


def chart_png() -> bytes:
    im = Image.new("RGB", (400, 260), "white")
    d = ImageDraw.Draw(im)
    for i, h in enumerate((60, 120, 90, 200)):
        d.rectangle((40 + i * 80, 240 - h, 90 + i * 80, 240), fill=(30, 90, 200))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_embedded_chart_becomes_an_image_segment_in_reading_order(tmp_path, ctx):
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 80), "Revenue grew in every quarter, as the chart below shows.")
    page.insert_image(pymupdf.Rect(72, 100, 372, 295), stream=chart_png())
    page.insert_text((72, 330), "The fourth quarter was the strongest of the year.")
    page.insert_image(pymupdf.Rect(500, 700, 510, 710), stream=chart_png())  # a speck: not a figure
    path = tmp_path / "report.pdf"
    doc.save(path)
    parsed = extract_pdf(path, ctx)
    kinds = [(s.kind, s.text[:20]) for s in parsed.segments]
    figures = [s for s in parsed.segments if s.kind == "image"]
    assert len(figures) == 1, kinds
    fig = figures[0]
    assert fig.meta["figure"] and fig.locator.page == 1 and ctx.blobs.find(fig.image_sha)
    x0, y0, x1, y1 = fig.locator.bbox
    assert abs(x0 - 72) < 2 and abs(y0 - 100) < 2 and abs(x1 - 372) < 2
    order = [s.kind for s in parsed.segments]
    assert order.index("image") == 1 and order[0] == order[2] == "text"


def test_svg_is_laid_out_and_read(tmp_path, ctx):
    path = tmp_path / "diagram.svg"
    path.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="200">'
        '<text x="20" y="50" font-size="20">Pump station capacity 450 litres</text></svg>'
    )
    parsed = extract_paged(path, ctx)
    assert parsed.kind == "svg" and parsed.pages == 1
    assert any("capacity 450" in s.text for s in parsed.segments)
    assert all(s.locator.page == 1 for s in parsed.segments)


def test_cbz_comic_pages_become_page_images(tmp_path, settings, blobs):
    from ingest.base import ExtractContext

    path = tmp_path / "scans.cbz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("001.png", chart_png())
        z.writestr("002.png", chart_png())
    ctx = ExtractContext(settings=settings.replace(ocr=False), blobs=blobs)
    parsed = extract_paged(path, ctx)
    assert parsed.pages == 2 and len(parsed.meta["pages"]) == 2


def test_epub_is_laid_out_and_read(tmp_path, ctx):
    epub = tmp_path / "book.epub"
    with zipfile.ZipFile(epub, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/container.xml",
                   '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                   '<rootfiles><rootfile full-path="content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>')
        z.writestr("content.opf",
                   '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="2.0" unique-identifier="id">'
                   '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>T</dc:title><dc:identifier id="id">x</dc:identifier></metadata>'
                   '<manifest><item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/></manifest>'
                   '<spine><itemref idref="c1"/></spine></package>')
        z.writestr("c1.xhtml", '<html xmlns="http://www.w3.org/1999/xhtml"><body><h1>Terms</h1>'
                               '<p>Clause 7: the licence ends on 31 March 2031.</p></body></html>')
    parsed = extract_paged(epub, ctx)
    assert parsed.kind == "epub" and parsed.pages >= 1
    assert any("31 March 2031" in s.text for s in parsed.segments)
