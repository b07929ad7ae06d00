"""The web UI as a user drives it: Playwright clicking in Debian's Chromium, against one real server
process with the real CPU model, shared by the tests of this module (they run in order, as one visit).

Each test saves a screenshot when it fails (``tests/.artifacts/browser``, or $QUIRE_ARTIFACTS)."""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import pymupdf
import pytest

from tests.servers import start_app, stop_app

playwright = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is in requirements-test.txt")

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("QUIRE_ARTIFACTS") or Path(__file__).parent / ".artifacts" / "browser")
VIEWPORT = {"width": 1280, "height": 800}
ANSWER_S = 240  # the longest a real answer may take on a loaded two-core machine
FACT = "The vault access code is 7351."
HOSTILE = '<script>alert("doc")</script> <img src=x onerror="alert(1)"> Review notes.'

pytestmark = pytest.mark.browser


def contract_pdf(path: Path, title: str, fact: str) -> Path:
    doc = pymupdf.open()
    for n in range(2):
        page = doc.new_page()
        text = f"{title}, page {n + 1}. The parties agree to the terms below. " * 3
        if n == 1:
            text += fact
        page.insert_textbox(pymupdf.Rect(72, 72, 540, 720), text, fontsize=11)
    doc.save(path)
    return path


def repo_zip(path: Path) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tool/main.py", "def main():\n    return 'ok'\n")
        z.writestr("tool/README.md", "# Tool\n\nA small tool.\n")
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("uploads")
    hostile = d / "notes.txt"
    hostile.write_text(HOSTILE + "\n")
    return {
        "a": contract_pdf(d / "vault.pdf", "Vault services agreement", FACT),
        "b": contract_pdf(d / "lease.pdf", "Office lease agreement", "The rent is 900 euros a month."),
        "zip": repo_zip(d / "tool.zip"),
        "hostile": hostile,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("browser-flows")
    proc, url = start_app(home)
    yield url + "/", home
    stop_app(proc)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("Chromium is not at /usr/bin/chromium: `apt-get install chromium` (bootstrap.py test does it as root)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def visit(browser, server):
    """One browser tab for the whole module, and every dialog it would have opened."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.events = []  # the UI events the page sent (fn_index, trigger id), for a failure's report
    page.on("request", lambda r: page.events.append(r.post_data[:120]) if "queue/join" in r.url else None)
    page.goto(server[0])
    page.get_by_label("Session").first.wait_for(timeout=60_000)
    yield page, dialogs
    context.close()


@pytest.fixture
def page(visit, request):
    page, _ = visit
    yield page
    if getattr(request.node, "failed_call", False):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        (ARTIFACTS / f"{request.node.name}.events.txt").write_text("\n".join(page.events))


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def chat_text(page) -> str:
    return page.locator("#chat").inner_text()


def test_create_a_session_and_upload_two_pdfs_and_a_zip(page, files):
    page.get_by_label("New session").fill("Deal room")
    page.get_by_role("button", name="Create").click()
    session = page.get_by_label("Session", exact=True)
    playwright.expect(session).to_have_value("Deal room", timeout=30_000)
    playwright.expect(page.get_by_label("New session")).to_have_value("")
    tab(page, "Documents")
    with page.expect_file_chooser() as chooser:
        page.locator("#documents-upload").get_by_text(re.compile("Drop File Here|Click to Upload", re.I)).first.click()
    chooser.value.set_files([str(files["a"]), str(files["b"]), str(files["zip"]), str(files["hostile"])])
    page.wait_for_function(  # all four uploaded and listed in the box
        "() => ['vault.pdf', 'lease.pdf', 'tool.zip', 'notes.txt'].every(n => "
        "document.querySelector(`#documents-upload td[aria-label='${n}']`))", timeout=60_000)
    page.get_by_role("button", name="Add to session").click()
    report, table = page.locator("#ingest-report"), page.locator("#documents-table")
    progress_on_table = False
    for _ in range(720):
        progress_on_table |= "%" in table.inner_text()  # the progress bar belongs to the report alone
        if "notes.txt: added" in report.inner_text():
            break
        page.wait_for_timeout(250)
    assert "vault.pdf: added" in report.inner_text() and "tool.zip: added" in report.inner_text()
    assert not progress_on_table
    page.wait_for_function("() => ['vault.pdf', 'lease.pdf', 'tool.zip', 'notes.txt'].every(n => "
                           "document.querySelector('#documents-table').innerText.includes(n))", timeout=30_000)
    assert session.input_value() == "Deal room"


def test_ask_streams_then_stop_ends_one_answer_and_the_next_still_answers(page):
    tab(page, "Chat")
    question = page.get_by_role("textbox", name="Question")
    question.fill("What is the vault access code?")
    page.get_by_role("button", name="Ask").click()
    seen: list[str] = []
    for _ in range(ANSWER_S * 4):
        text = chat_text(page)
        if not seen or text != seen[-1]:
            seen.append(text)
        if "7351" in text and "▍" not in text:
            break
        page.wait_for_timeout(250)
    assert "7351" in seen[-1], seen[-1]
    assert len({s for s in seen if "▍" in s}) >= 2, "the answer did not stream"  # partial answers, cursor shown

    question.fill("Summarise every document in detail, one paragraph each.")
    page.get_by_role("button", name="Ask").click()
    page.wait_for_function("() => document.querySelector('#chat').innerText.includes('▍')", timeout=ANSWER_S * 1000)
    page.get_by_role("button", name="Stop").click()
    page.wait_for_function("() => !document.querySelector('#chat').innerText.includes('▍')", timeout=30_000)
    assert "Stopped" in chat_text(page)  # the answer so far is kept, and marked

    stopped = chat_text(page)
    question.fill("What is the rent?")
    page.get_by_role("button", name="Ask").click()
    page.wait_for_function("() => document.querySelector('#chat').innerText.includes('What is the rent?')")
    page.wait_for_function(  # answered to the end: its meta line (strategy, time) closes the message
        "() => { const t = document.querySelector('#chat').innerText; "
        "return t.slice(t.lastIndexOf('What is the rent?')).includes('total ') && !t.includes('▍'); }",
        timeout=ANSWER_S * 1000)
    assert len(chat_text(page)) > len(stopped)


def test_a_citation_opens_its_page_with_the_highlight_in_view(page):
    tab(page, "Chat")
    page.get_by_label("Open citation").click()
    option = page.get_by_role("option").first
    option.wait_for(timeout=30_000)
    label = option.inner_text()  # "S1 · vault.pdf · p.1"
    ref, document, place = (part.strip() for part in label.split("·")[:3])
    option.click()
    title = page.locator("#viewer-title")
    page.wait_for_function("n => document.querySelector('#viewer-title').innerText.includes(n)", arg=document,
                           timeout=30_000)
    assert ref in title.inner_text() and place in title.inner_text(), title.inner_text()
    image = page.locator("#viewer-page img").first
    image.wait_for(timeout=30_000)
    image.scroll_into_view_if_needed()
    box, view = image.bounding_box(), page.viewport_size
    assert box and box["width"] > 100 and box["height"] > 100
    assert 0 <= box["y"] and box["y"] + min(box["height"], 200) <= view["height"]  # the page is in view


def test_export_html_downloads_and_opens(page, browser):
    tab(page, "Export")
    page.get_by_role("radio", name="html").check()
    page.get_by_role("button", name="Export report").click()
    row = page.locator("#export-files tr").filter(has=page.locator("td[aria-label$='.html']")).first
    row.wait_for(timeout=60_000)
    link = row.locator("a").first
    with page.expect_download(timeout=60_000) as download:
        link.click()
    path = Path(download.value.path())
    html = path.read_text(encoding="utf-8")
    assert "vault access code" in html.lower() and "<script>alert" not in html
    viewer = browser.new_page()
    viewer.goto(path.as_uri())
    assert "Deal room" in viewer.inner_text("body")
    viewer.close()


def test_after_a_reload_everything_is_still_there(page):
    page.reload()
    playwright.expect(page.get_by_label("Session", exact=True)).to_have_value("Deal room", timeout=60_000)
    page.wait_for_function("() => document.querySelector('#chat').innerText.includes('7351')", timeout=30_000)
    assert "Stopped" in chat_text(page)  # the stopped answer was stored with its mark
    tab(page, "Documents")
    page.wait_for_function("() => document.querySelector('#documents-table').innerText.includes('vault.pdf')",
                           timeout=30_000)


def test_document_markup_runs_in_no_view(page, visit):
    _, dialogs = visit
    tab(page, "Chat")
    page.get_by_role("textbox", name="Question").fill("What do the review notes say?")
    page.get_by_role("button", name="Ask").click()
    page.wait_for_function("() => !document.querySelector('#chat').innerText.includes('▍') && "
                           "document.querySelector('#chat').innerText.toLowerCase().includes('review notes')",
                           timeout=ANSWER_S * 1000)
    for name in ("Documents", "Export", "Chat"):
        tab(page, name)
        page.wait_for_timeout(500)
    assert dialogs == []
    assert page.evaluate("() => document.querySelectorAll('img[onerror]').length") == 0


def test_a_rejected_session_name_says_why_without_rendering_it(page, visit):
    _, dialogs = visit
    page.get_by_label("New session").fill("<b>bold</b>" + "x" * 300)
    page.get_by_role("button", name="Create").click()
    toast = page.locator(".toast-body, [data-testid='toast-body']").first
    toast.wait_for(timeout=30_000)
    assert page.locator(".toast-body b, [data-testid='toast-body'] b").count() == 0
    assert page.get_by_label("Session", exact=True).input_value() == "Deal room"
    assert dialogs == []
