"""The document viewer's routes (server/viewer.py) behind the real Gate, in process: what each user may open,
what the page says and marks, and what it refuses (another user's document, a path, a script)."""

from __future__ import annotations

import json
import re

import pymupdf
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from quire.api import Quire
from server import viewer
from server.auth import Gate
from tests.fake_runtime import EchoRuntime
from tests.test_accounts import PASSWORD

FACT = "The pallet count for order 7781 is nineteen."  # what the echo runtime quotes, as S1
HOSTILE = '<script>alert("doc")</script><img src=x onerror="alert(1)">'


def _pdf(path) -> None:
    doc = pymupdf.open()
    doc.new_page().insert_textbox(pymupdf.Rect(72, 72, 540, 300), "Shipping terms. The goods leave on Monday. "
                                  + FACT + " Payment is due in thirty days.", fontsize=11)
    doc.new_page().insert_text((72, 90), "Second page.")
    doc.save(path)


@pytest.fixture
def served(settings, tmp_path):
    """alice owns "pdfs" (a PDF, one answer) and "code" (a Python file, one answer); bob has neither."""
    settings.workers = 1
    with Quire(settings, runtime=EchoRuntime(settings)) as root:
        tokens = {}
        for name in ("alice", "bob"):
            root.add_user(name, password=PASSWORD)
            tokens[name] = root.as_user(name).create_token("test")[1]
        alice = root.as_user("alice")
        pdf = tmp_path / "shipping.pdf"
        _pdf(pdf)
        code = tmp_path / "count.py"
        code.write_text("# " + HOSTILE + "\n" + "\n".join(f"x{i} = {i}" for i in range(30))
                        + f"\nNOTE = {FACT!r}\n")
        assert alice.ingest("pdfs", [pdf])[0].ok and alice.ingest("code", [code])[0].ok
        turns = {s: alice.answer(s, "What is the pallet count?", strategy="full").turn for s in ("pdfs", "code")}
        app = FastAPI()
        app.mount("/viewer", viewer.build(root))
        client = TestClient(Gate(app, quire=root, settings=settings))
        yield client, tokens, turns, {s: alice.documents(s)[0].id for s in ("pdfs", "code")}


def _get(client, token, path, **kw):
    return client.get(path, headers={"authorization": f"Bearer {token}"}, **kw)


def _data(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="q-data">(.*?)</script>', page, re.S).group(1))


def test_a_pdf_citation_opens_at_its_page_with_the_quoted_lines_and_a_strict_csp(served):
    client, tokens, turns, docs = served
    page = _get(client, tokens["alice"], f"/viewer/?session=pdfs&turn={turns['pdfs'].id}&cite=0")
    assert page.status_code == 200, page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'self'" in csp
    data = _data(page.text)
    assert data["kind"] == "pdf" and data["page"] == 1 and data["quoted"]
    assert data["file"] == f"/viewer/file/{docs['pdfs']}"
    box = data["boxes"][0]
    assert box["page"] == 1 and box["quote"] and 72 <= box["box"][0] < box["box"][2] <= 540
    assert " on=" not in page.text.lower() and "<script>" not in page.text  # no inline handler, no inline script
    original = _get(client, tokens["alice"], data["file"])
    assert original.status_code == 200 and original.content.startswith(b"%PDF")
    assert original.headers["content-type"] == "application/pdf"


def test_another_user_gets_404_for_the_page_and_the_file(served):
    client, tokens, turns, docs = served
    for path in (f"/viewer/?session=alice/pdfs&turn={turns['pdfs'].id}", f"/viewer/?session=pdfs&turn={turns['pdfs'].id}",
                 f"/viewer/file/{docs['pdfs']}"):
        answer = _get(client, tokens["bob"], path)
        assert answer.status_code == 404, path
        assert "Shipping" not in answer.text and "%PDF" not in answer.text
    assert client.get(f"/viewer/file/{docs['pdfs']}").status_code == 401  # nobody: not even a page


def test_paths_are_refused(served):
    client, tokens, *_ = served
    for path in ("/viewer/static/..%2F..%2Fapp.py", "/viewer/static/%2e%2e/viewer.py", "/viewer/static/../app.py",
                 "/viewer/static/pdfjs%2FLICENSE", "/viewer/file/..%2F..%2Fquire.db", "/viewer/image/%2Fetc%2Fpasswd"):
        answer = _get(client, tokens["alice"], path)
        assert answer.status_code in (404, 422), path
        assert "import " not in answer.text and "root:" not in answer.text
    assert _get(client, tokens["alice"], "/viewer/static/viewer.js").status_code == 200
    assert _get(client, tokens["alice"], "/viewer/static/pdf.worker.min.mjs").status_code == 200


def test_a_code_citation_shows_numbered_highlighted_lines_once_and_escaped(served):
    client, tokens, turns, _ = served
    page = _get(client, tokens["alice"], f"/viewer/?session=code&turn={turns['code'].id}&cite=0")
    assert page.status_code == 200
    assert _data(page.text)["kind"] == "text"
    assert 'class="hll"' in page.text  # the cited lines
    assert "<script>alert" not in page.text and "<img" not in page.text  # shown as text, never as markup
    assert "&lt;script&gt;" in page.text or "&lt;</span><span" in page.text
    assert "1\tx0" not in page.text  # the stored line-number prefixes are gone: Pygments numbers them once
    assert "linenos" in page.text


def test_a_damaged_link_is_not_found(served):
    client, tokens, turns, _ = served
    for query in ("session=pdfs&turn=999999", f"session=pdfs&turn={turns['pdfs'].id}&cite=50",
                  "session=pdfs&turn=abc", "session=nope&turn=1"):
        assert _get(client, tokens["alice"], "/viewer/?" + query).status_code == 404, query


def test_a_question_limited_to_one_document_reads_only_it_and_says_so(settings):
    from tests.test_accounts import seed

    with Quire(settings, runtime=EchoRuntime(settings)) as q:
        first = seed(q, "two", "Shipping note\n\n" + FACT + "\n", name="note.txt")
        second = seed(q, "two", "Lease\n\nThe rent is 900 euros a month.\n", name="lease.txt")
        everything = q.answer("two", "What is the rent?", strategy="full").turn
        limited = q.answer("two", "What is the rent?", strategy="full", documents=[second]).turn
        with pytest.raises(Exception, match="None of the chosen documents"):
            q.answer("two", "What is the rent?", documents=[first + second + 100])
    assert everything.meta["segments_total"] == 2 and "documents" not in everything.meta
    assert limited.meta["segments_total"] == 1 and limited.meta["documents"] == ["lease.txt"]
    assert {e["document"] for e in limited.evidence} <= {"lease.txt"}


def test_a_matrix_cell_opens_at_its_quote_for_its_owner_only(served, settings):
    from core.records import MatrixCellRecord
    from storage import matrix

    client, tokens, turns, docs = served
    with Quire(settings) as q:
        alice = q.as_user("alice")
        info = alice.session("pdfs")
        segment = alice.segments(info)[0]
        cell = matrix.save_cell(q._database(), MatrixCellRecord(
            session_id=info.id, document_id=docs["pdfs"], field_name="Pallets", question="How many pallets?",
            status="verified", answer="nineteen", quote=FACT, segment_id=segment.id, locator=segment.locator))
    page = _get(client, tokens["alice"], f"/viewer/?session=pdfs&cell={cell}")
    assert page.status_code == 200, page.text
    data = _data(page.text)
    assert data["kind"] == "pdf" and data["quoted"] and data["boxes"][0]["page"] == 1
    assert "Pallets" in page.text and page.headers["content-security-policy"] == viewer.CSP
    assert _get(client, tokens["bob"], f"/viewer/?session=alice/pdfs&cell={cell}").status_code == 404


def test_a_quote_running_on_to_the_next_page_is_marked_on_both(tmp_path):
    from ingest.pdf import find_quote

    doc = pymupdf.open()
    doc.new_page().insert_text((72, 760), "Shipping terms apply. The pallet count for")
    doc.new_page().insert_text((72, 80), "order 7781 is nineteen. Payment follows.")
    path = tmp_path / "split.pdf"
    doc.save(path)
    boxes = find_quote(path, 1, "the pallet count for order 7781 is nineteen")
    assert [page for page, _ in boxes] == [1, 2]
    (_, first), (_, second) = boxes
    assert first[1] > 700 and second[1] < 100  # the foot of page 1, the head of page 2
    assert find_quote(path, 1, "pallet count") == []  # too short to mark one place
    assert find_quote(path, 2, "the pallet count for order 7781") == []  # it starts on page 1, not on page 2
