"""Hostile and damaged PDFs rebuilt in code, as the probe of issue 14 met them."""

from __future__ import annotations

import zlib
from pathlib import Path

import pymupdf


def pages_pdf(n: int, words: str = "with some words on it") -> pymupdf.Document:
    doc = pymupdf.open()
    for i in range(n):
        doc.new_page().insert_text((72, 72), f"This is page {i + 1} {words}.")
    return doc


def bad_resource_page(path: Path) -> Path:
    """Two pages; the second lists an image under a name that is no UTF-8 and is no image dict, so
    PyMuPDF's warning about it fails with ``TypeError: in method 'll_fz_warn'`` on that page."""
    doc = pages_pdf(2)
    resources = int(doc.xref_get_key(doc[1].xref, "Resources")[1].split()[0])
    doc.xref_set_key(resources, "XObject", "<</Im#ff 5>>")
    doc.save(path)
    return path


def bomb_page(path: Path, mib: int = 96) -> Path:
    """One page whose content stream inflates from ~100 KB to ``mib`` MiB of nothing."""
    squeeze = zlib.compressobj(9)
    block = b" " * (1 << 20)
    data = b"".join(squeeze.compress(block) for _ in range(mib)) + squeeze.flush()
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "x")
    xref = page.get_contents()[0]
    doc.update_stream(xref, data, new=True, compress=False)
    doc.xref_set_key(xref, "Filter", "/FlateDecode")
    doc.save(path)
    return path


def damaged_tree(path: Path, how: str) -> Path:
    """Three pages whose page tree loses the second: ``short`` (one kid fewer than /Count), ``count``
    (/Count one short), ``missing`` (a kid that is no page), ``repeated`` (the first page listed again)."""
    doc = pages_pdf(3)
    tree = int(doc.xref_get_key(doc.pdf_catalog(), "Pages")[1].split()[0])
    kids = [doc[i].xref for i in range(3)]
    if how == "short":
        kids = [kids[0], kids[2]]
    elif how == "count":
        doc.xref_set_key(tree, "Count", "2")
    elif how == "missing":
        kids[1] = 9999
    elif how == "repeated":
        kids[1] = kids[0]
    doc.xref_set_key(tree, "Kids", "[" + " ".join(f"{k} 0 R" for k in kids) + "]")
    doc.save(path)
    return path


def text_bomb(path: Path, chars: int = 8_000_000) -> Path:
    """A page of millions of tiny characters: a file of ~17 KB whose text takes ~1.2 GB to read."""
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "A page with a great many tiny characters.")
    line = b"(" + b"Ab1 " * 250 + b") Tj\n"
    body = b"BT /helv 0.1 Tf 72 100 Td 0.01 TL\n" + b"T* ".join([line] * (chars // 1000)) + b"ET\n"
    xref = page.get_contents()[0]
    doc.update_stream(xref, doc.xref_stream(xref) + b"\n" + body)
    doc.save(path, deflate=True)
    return path
