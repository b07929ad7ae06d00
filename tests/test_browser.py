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


def code_file(path: Path) -> Path:
    body = "\n".join(f"def step_{i}(x):\n    return x + {i}\n" for i in range(12))
    path.write_text(f"{body}\n\nMETER_LIMIT = 4096  # the meter limit in litres\n")
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
        "code": code_file(d / "meter.py"),
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
    # the page's load events have shown a session (a Create clicked before that would be overwritten by them)
    playwright.expect(page.get_by_label("Session", exact=True)).not_to_have_value("", timeout=60_000)
    page.wait_for_function("() => (document.querySelector('#chat-documents')?.innerText ?? '').trim().length > 0",
                           timeout=60_000)
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


def answered(page, question: str) -> None:
    """Until the answer to ``question`` is complete: no cursor, and its folded meta line closes it."""
    page.wait_for_function(
        "q => { const t = (document.querySelector('#chat')?.innerText ?? ''); const i = t.lastIndexOf(q); "
        "return i >= 0 && t.slice(i).includes('How this was answered') && !t.includes('▍'); }",
        arg=question, timeout=ANSWER_S * 1000)


def watch_partials(page) -> None:
    """From now on, record in the page every distinct chat text that shows the cursor: each partial answer
    the browser drew, however fast the model is (polling from here missed them on a fast CI machine)."""
    page.evaluate(
        "() => { window.quirePartials = new Set(); const note = () => { const c = document.querySelector('#chat');"
        " const t = c ? c.innerText : ''; if (t.includes('\u258d')) window.quirePartials.add(t); };"
        " if (window.quirePartialsWatch) window.quirePartialsWatch.disconnect();"
        " window.quirePartialsWatch = new MutationObserver(note);"
        " window.quirePartialsWatch.observe(document.body, {subtree: true, childList: true, characterData: true}); }")


def partials_seen(page, at_least: int) -> None:
    """Until the page has drawn ``at_least`` distinct partial answers since watch_partials."""
    page.wait_for_function("n => window.quirePartials && window.quirePartials.size >= n", arg=at_least,
                           timeout=ANSWER_S * 1000)


def ask(page, question: str) -> None:
    box = page.get_by_role("textbox", name="Question")
    box.fill(question)
    box.press("Enter")  # Enter asks
    playwright.expect(box).to_have_value("", timeout=30_000)  # taken: the handler cleared the box
    answered(page, question)


def viewer_frame(page, name: str = "chat-viewer-frame", *, not_url: str | None = None):
    """The viewer's iframe (a newly loaded one when ``not_url`` is what it showed before) once its page has
    drawn what it shows (body[data-ready])."""
    page.locator(f"iframe#{name}").wait_for(timeout=30_000)
    for _ in range(240):
        frame = next((f for f in page.frames if f.name == name and "/viewer/" in f.url and f.url != not_url), None)
        if frame is not None:
            try:
                frame.wait_for_selector("body[data-ready]", timeout=60_000)
                return frame
            except playwright.Error:  # replaced meanwhile (the app drew a new iframe)
                pass
        page.wait_for_timeout(250)
    raise AssertionError(f"the viewer {name} never showed a new page")


def frame_url(page, name: str = "chat-viewer-frame") -> str | None:
    return next((f.url for f in page.frames if f.name == name), None)


def mark_in_view(frame) -> dict:
    """The first highlight's box in the viewer, and whether all of its top part is inside the frame's viewport."""
    return frame.evaluate("""() => {
        const m = document.querySelector('.q-hl, .q-code .hll');
        if (!m) return {found: false};
        const r = m.getBoundingClientRect();
        return {found: true, top: r.top, bottom: r.bottom, height: innerHeight, width: r.width,
                inView: r.top >= 0 && Math.min(r.bottom, r.top + 120) <= innerHeight && r.width > 0};
    }""")


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
                           "(document.querySelector('#documents-table')?.innerText ?? '').includes(n))", timeout=30_000)
    assert session.input_value() == "Deal room"


def test_ask_streams_then_stop_ends_one_answer_and_the_next_still_answers(page):
    tab(page, "Chat")
    question = page.get_by_role("textbox", name="Question")
    question.fill("What is the vault access code?")
    page.get_by_role("button", name="Ask").click()
    answered(page, "What is the vault access code?")
    assert "7351" in chat_text(page)

    # a long answer streams (the page draws it part by part, cursor shown), and Stop ends it mid-way
    watch_partials(page)
    question.fill("Summarise every document in detail, one paragraph each.")
    page.get_by_role("button", name="Ask").click()
    partials_seen(page, 2)
    page.get_by_role("button", name="Stop").click()
    page.wait_for_function("() => !(document.querySelector('#chat')?.innerText ?? '▍').includes('▍')", timeout=30_000)
    assert "Stopped" in chat_text(page)  # the answer so far is kept, and marked

    stopped = chat_text(page)
    question.fill("What is the rent?")
    page.get_by_role("button", name="Ask").click()
    page.wait_for_function("() => (document.querySelector('#chat')?.innerText ?? '').includes('What is the rent?')")
    answered(page, "What is the rent?")  # to the end: its folded meta line (strategy, time) closes the message
    assert len(chat_text(page)) > len(stopped)


def test_a_citation_marker_opens_the_viewer_at_its_page_with_the_highlight_in_view(page):
    tab(page, "Chat")
    ask(page, "What is the vault access code?")
    marker = page.locator("#chat a[href^='/viewer/']").last
    marker.wait_for(timeout=30_000)
    ref = marker.inner_text()
    before = frame_url(page)
    marker.click()  # opens beside the chat, not in a new page
    assert len(page.context.pages) == 1
    frame = viewer_frame(page, not_url=before)
    title = frame.locator("#q-title").inner_text()  # "S3 · vault.pdf · p.2 · verified"
    assert title.startswith(ref) and ".pdf" in title, title
    cited_page = int(re.search(r"p\.(\d+)", title).group(1))
    assert frame.locator("canvas").count() >= 1  # PDF.js drew the pages
    box = mark_in_view(frame)
    assert box["found"] and box["inView"], box
    on = frame.evaluate("() => document.querySelector('.q-hl').closest('.q-page').dataset.page")
    assert int(on) == cited_page
    assert frame.locator("#q-page").input_value() == str(cited_page)
    frame.locator("#q-zoom-in").click()
    playwright.expect(frame.locator("#q-zoom")).not_to_have_text("100%")


def test_next_citation_steps_through_the_answer(page):
    frame = viewer_frame(page)
    count = frame.locator("#q-count").inner_text()  # "1 / 4"
    shown, total = (int(n) for n in count.split("/"))
    assert total >= 2, count
    before = frame.url
    frame.locator("#q-next-cite, #q-prev-cite").first.click()
    frame = viewer_frame(page, not_url=before)
    playwright.expect(frame.locator("#q-count")).not_to_have_text(count)
    assert mark_in_view(frame)["found"] or frame.locator(".q-empty").count()


def test_a_file_dropped_on_the_chat_is_added_to_the_session(page, files):
    tab(page, "Chat")
    with page.expect_file_chooser() as chooser:
        page.locator("#chat-upload").get_by_text(re.compile("Drop File Here|Click to Upload", re.I)).first.click()
    chooser.value.set_files([str(files["code"])])
    page.wait_for_function("() => (document.querySelector('#chat-upload-report')?.innerText ?? '').includes('meter.py: added')",
                           timeout=120_000)
    page.wait_for_function("() => (document.querySelector('#chat-documents')?.innerText ?? '').includes('meter.py')",
                           timeout=30_000)
    assert "readable" in page.locator("#chat-documents").inner_text()
    playwright.expect(page.locator("#ask-only").get_by_label("meter.py")).to_be_visible()


def test_a_question_limited_to_one_document_says_so_and_its_code_citation_shows_lines(page):
    tab(page, "Chat")
    page.locator("#ask-only").get_by_label("meter.py").check()
    ask(page, "What is METER_LIMIT?")
    assert "Limited to meter.py" in chat_text(page)
    page.get_by_label("Open citation").click()
    option = page.get_by_role("option").first
    option.wait_for(timeout=30_000)
    assert "meter.py" in option.inner_text(), option.inner_text()  # only that document was read
    before = frame_url(page)
    option.click()
    frame = viewer_frame(page, not_url=before)
    assert frame.locator(".q-code .hll").count() >= 1  # the cited lines marked
    assert frame.locator(".q-code .linenos").count() >= 1
    assert not frame.locator(".q-code pre").first.inner_text().lstrip().startswith("1\t")  # numbered once
    assert mark_in_view(frame)["inView"]
    page.locator("#ask-only").get_by_label("meter.py").uncheck()


def test_esc_stops_an_answer(page):
    tab(page, "Chat")
    question = page.get_by_role("textbox", name="Question")
    stopped_before = chat_text(page).count("Stopped")
    watch_partials(page)
    question.fill("Describe every clause of every agreement in great detail.")
    page.get_by_role("button", name="Ask").click()
    partials_seen(page, 1)
    page.keyboard.press("Escape")
    page.wait_for_function("() => !(document.querySelector('#chat')?.innerText ?? '▍').includes('▍')", timeout=30_000)
    assert chat_text(page).count("Stopped") == stopped_before + 1  # this one, kept and marked


def test_the_matrix_on_two_documents_and_two_fields_opens_a_cell_in_the_viewer(page):
    tab(page, "Matrix")
    page.get_by_label("Fields (one per line)").fill("Vault access code\nMonthly rent")
    for name in ("vault.pdf", "lease.pdf"):
        page.locator("#matrix-documents").get_by_label(name).check()
    page.locator("#matrix-run").click()
    page.wait_for_function("() => /Done\\.|Stopped/.test((document.querySelector('#matrix-progress')?.innerText ?? ''))",
                           timeout=ANSWER_S * 4 * 1000)
    progress = page.locator("#matrix-progress").inner_text()
    assert "4 of 4 cells" in progress, progress
    title = page.locator("#matrix-cell-title")
    opened = 0
    for name in ("vault.pdf", "lease.pdf"):
        for k in range(2):  # the document's two cells, one per field
            before = frame_url(page, "matrix-viewer-frame")
            page.locator("#matrix-cells [role=gridcell][data-col='1']", has_text=name).nth(k).click()
            page.wait_for_function("n => (document.querySelector('#matrix-cell-title')?.innerText ?? '').includes(n)",
                                   arg=name, timeout=30_000)
            page.wait_for_timeout(500)
            if "No passage to open" in title.inner_text():
                continue  # the model found nothing it could point at (SmolLM2 often answers "[id]")
            frame = viewer_frame(page, "matrix-viewer-frame", not_url=before)
            assert name in frame.locator("#q-title").inner_text()
            assert mark_in_view(frame)["found"]
            opened += 1
    print(f"matrix cells opened in the viewer: {opened} of 4")  # 0 is the model's doing, not the viewer's


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
    page.wait_for_function("() => (document.querySelector('#chat')?.innerText ?? '').includes('7351')", timeout=60_000)
    assert "Stopped" in chat_text(page)  # the stopped answer was stored with its mark
    tab(page, "Documents")
    page.wait_for_function("() => (document.querySelector('#documents-table')?.innerText ?? '').includes('vault.pdf')",
                           timeout=30_000)


def test_document_markup_runs_in_no_view(page, visit):
    _, dialogs = visit
    tab(page, "Chat")
    ask(page, "What do the review notes say?")
    for name in ("Documents", "Export", "Matrix", "Chat"):
        tab(page, name)
        page.wait_for_timeout(500)
    page.get_by_label("Open citation").click()
    options = page.get_by_role("option")
    options.first.wait_for(timeout=30_000)
    notes = options.filter(has_text="notes.txt")
    before = frame_url(page)
    (notes.first if notes.count() else options.first).click()
    frame = viewer_frame(page, not_url=before)
    assert frame.evaluate("() => document.querySelectorAll('img[onerror], script:not([src]):not([type])').length") == 0
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


SCREENS = ("Chat", "Documents", "Matrix", "Export", "Evaluations", "Settings")


def test_screenshots_of_every_screen(page, server):
    """Each screen at 1280x800 (light and dark), and the chat at a tablet's width, for people to look at."""
    shots = ARTIFACTS / "screens"
    shots.mkdir(parents=True, exist_ok=True)
    page.reload()  # without the toasts of the tests before
    playwright.expect(page.get_by_label("Session", exact=True)).to_have_value("Deal room", timeout=60_000)
    page.wait_for_function("() => (document.querySelector('#chat')?.innerText ?? '').includes('7351')", timeout=60_000)
    for name in SCREENS:
        tab(page, name)
        page.wait_for_timeout(700)
        page.screenshot(path=str(shots / f"{name.lower()}-1280x800.png"))
    tab(page, "Chat")
    page.get_by_label("Open citation").click()
    page.get_by_role("option").first.click()
    viewer_frame(page)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shots / "chat-viewer-1280x800.png"))
    dark = page.context.new_page()
    dark.set_viewport_size(VIEWPORT)
    dark.goto(server[0] + "?__theme=dark")
    dark.get_by_label("Session").first.wait_for(timeout=60_000)
    dark.wait_for_function("() => (document.querySelector('#chat')?.innerText ?? '').includes('7351')", timeout=60_000)
    dark.screenshot(path=str(shots / "chat-dark-1280x800.png"))
    dark.set_viewport_size({"width": 768, "height": 1024})
    dark.wait_for_timeout(500)
    width = dark.evaluate("() => document.documentElement.scrollWidth")
    dark.screenshot(path=str(shots / "chat-dark-768x1024.png"))
    dark.close()
    assert width <= 768 + 2, f"the page is {width} px wide at a 768 px tablet width"
    wanted = {f"{n.lower()}-1280x800.png" for n in SCREENS} | {"chat-viewer-1280x800.png", "chat-dark-1280x800.png",
                                                                 "chat-dark-768x1024.png"}
    assert wanted <= {p.name for p in shots.glob("*.png")}
