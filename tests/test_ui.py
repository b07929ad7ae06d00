"""The web UI: pure helpers in-process, then the real app in a subprocess driven over HTTP by gradio_client."""

from __future__ import annotations

import hashlib
import html
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import pymupdf
import pytest
from PIL import Image

from core.document import Locator, ParsedDocument, Segment
from core.errors import NotFound
from core.records import CitationRecord, TurnRecord
from core.settings import Settings
from quire.api import Quire
from storage import repo
from storage.blobs import BlobStore
from storage.db import Database
from storage.models import DocumentRow
from tests.servers import start_app, stop_app
from ui import render
from ui.errors import user_errors
from ui.export import bundle, slug
from ui.settings_panel import settings_rows

ROOT = Path(__file__).resolve().parent.parent
FACT = "The access code for the north gate is PELICAN-42."
MEMO = (
    "Harbor Logistics Memo\n\n"
    "The warehouse in Tromso stores spare turbine blades for the northern wind farms.\n"
    f"{FACT}\n"
    "Deliveries arrive every Tuesday before noon. The night guard is named Ingrid Solberg.\n"
)
PDF_CLAUSE = "The warranty period is thirty-six months from delivery."


# -- test data, stored the way the ingest pipeline stores it ----------------------------------------
def seed_text(q: Quire, session: str, name: str = "memo.txt", text: str = MEMO) -> int:
    info = q.session(session)
    lines = text.count("\n")
    segment = Segment("text", text, Locator(path=name, line_start=1, line_end=lines), tokens=len(text) // 4)
    parsed = ParsedDocument(name, "text", [segment])
    return q.add_parsed(info, parsed, sha256=hashlib.sha256(text.encode()).hexdigest())


def seed_pdf(q: Quire, session: str, name: str = "contract.pdf", zoom: float = 1.5) -> tuple[int, tuple]:
    """A one-page PDF with a stored page image, as the PDF extractor leaves it. Returns (doc id, clause bbox)."""
    pdf = pymupdf.open()
    page = pdf.new_page(width=595, height=842)
    page.insert_text((72, 90), "Supply Agreement", fontsize=18)
    page.insert_text((72, 300), PDF_CLAUSE, fontsize=12)
    bbox = tuple(page.search_for(PDF_CLAUSE)[0])
    pdf_bytes = pdf.tobytes()
    png = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom)).tobytes("png")
    blobs = BlobStore(q.settings.blob_dir)
    image_sha = blobs.put(png, ".png")
    blob_sha = blobs.put(pdf_bytes, ".pdf")
    meta = {"pages": [{"page": 1, "image": image_sha, "thumb": image_sha, "width": 595, "height": 842,
                       "text_layer": "native"}]}
    segments = [Segment("text", PDF_CLAUSE, Locator(page=1, bbox=bbox), tokens=12)]
    parsed = ParsedDocument(name, "pdf", segments, pages=1, meta=meta)
    with _database(q) as db:
        doc_id = repo.store_document(db, q.session(session).id, parsed, sha256=hashlib.sha256(pdf_bytes).hexdigest(),
                                     blob_sha=blob_sha)
    return doc_id, bbox


@contextmanager
def _database(q: Quire):
    """The app's database opened beside ``q``, to store what the API has no call for (a kept original)."""
    db = Database(q.settings.db_path)
    try:
        yield db
    finally:
        db.close()


def segment_of(q: Quire, session: str, document_name: str):
    return next(s for s in q.segments(session) if s.document_name == document_name)


# -- pure helpers -------------------------------------------------------------------------------------
def test_md_escape_leaves_no_markup_links_or_html():
    hostile = "<img src=x onerror=alert(1)> [click](http://evil) **bold** $x^2$\n# title\n- item\n1. one"
    out = render.md_escape(hostile)
    assert "<img" not in out and "&lt;img" in out
    assert "\\[click\\]" in out and "\\*\\*bold\\*\\*" in out and "\\$x\\^2\\$" in out
    assert "\\# title" in out and "\\- item" in out and "1\\. one" in out
    assert render.md_escape("PELICAN-42. fine") == "PELICAN-42. fine"  # ordinary prose is untouched


def test_gauge_escapes_and_reports_fit_or_narrowing():
    from quire.api import Budget

    fits = render.gauge_html(Budget(2048, 64, [("<b>a</b>.txt", 500)]))
    assert "Fits" in fits and "500 of 1,984 tokens" in fits and "<b>" not in fits
    big = render.gauge_html(Budget(2048, 64, [("a", 5000)]))
    assert "quire-gauge-narrowed" in big and "width:100.0%" in big and "most relevant" in big
    assert "No documents" in render.gauge_html(Budget(2048, 64, []))


def test_document_rows_summarise_text_layer(settings):
    with Quire(settings) as q:
        seed_pdf(q, "s")
        seed_text(q, "s")
        rows = render.document_rows(q.documents("s"))
    assert rows[0] == ["contract.pdf", "pdf", 1, 1, 12, "native", ""]
    assert rows[1][:2] == ["memo.txt", "text"] and rows[1][5] == "" and rows[1][6] == ""
    mixed = {"pages": [{"text_layer": "native"}, {"text_layer": "ocr"}, {"text_layer": "native"}]}
    assert render.text_layer(mixed) == "native 2, ocr 1"


def test_control_characters_in_names_are_escaped_in_the_ui(settings):
    from ingest.jobs import IngestResult

    name = "minutes\r\x1b[2Kerror: disk full\u202etxt.pdf"
    with Quire(settings) as q:
        seed_text(q, "s", name=name)
        rows = render.document_rows(q.documents("s"))
    plain = [rows[0][0], render.citation_rows([CitationRecord(
        ref="S1", segment_id=1, document_name=name, locator=Locator(path=name, line_start=1), quote="q",
        status="verified")])[0][1]]
    markdown = [render.ingest_report([IngestResult(name, "added", 1, 10, 1, 1)]), render.md_escape(name)]
    for text in plain + markdown:
        assert not any(c in text for c in "\r\x1b\u202e"), repr(text)
    for text in plain:  # a table cell shows text as it is
        assert "\\r\\x1b[2K" in text and "\\u202etxt" in text
    for text in markdown:  # Markdown shows an escaped backslash as one
        assert "\\\\r\\\\x1b\\[2K" in text and "\\\\u202etxt" in text


def test_answer_markdown_escapes_document_text_and_shows_meta():
    turn = TurnRecord(
        id=1, question="q", answer="See <script>x</script> [S1]", runtime="llamacpp", model="m", strategy="focus",
        prompt_tokens=1200, completion_tokens=20, cached_tokens=1000, ttft_s=0.5, total_s=2.25,
        meta={"share_seen": 0.25, "segments_used": 3, "segments_total": 12, "notes": ["narrowed *to* fit"]},
        citations=[CitationRecord(ref="S1", segment_id=5, document_name="a_b.pdf", locator=Locator(page=3),
                                  quote="quote <i>x</i>", status="verified")],
    )
    md = render.answer_markdown(turn)
    assert "<script>" not in md and "<i>" not in md and "a\\_b.pdf" in md and "p.3" in md
    assert "✓ verified" in md
    assert "focus · saw 3/12 passages (25% of the corpus) · 1,200 prompt tokens (1,000 cached)" in md
    assert "first token 0.50 s · total 2.25 s" in md and "narrowed *to* fit" in md
    assert md.index("<details") > md.index("Sources")  # the meta line folded away under the answer


def test_answer_markers_open_the_viewer_and_code_fences_stay_code():
    turn = TurnRecord(
        id=7, question="q", answer="The fee is due [S1] and [S1, S2] <b>now</b>.\n```python\nprint('<x>')\n```",
        meta={"documents": ["a.pdf"]},
        citations=[CitationRecord(ref="S1", segment_id=5, document_name="a.pdf", locator=Locator(page=3)),
                   CitationRecord(ref="S2", segment_id=6, document_name="b.pdf", locator=Locator(page=1))])
    md = render.answer_markdown(turn, "Deal room (2)")
    assert '[S1](/viewer/?session=Deal+room+%282%29&turn=7&cite=0 "Open S1 in the viewer")' in md
    assert "[S2](/viewer/?session=Deal+room+%282%29&turn=7&cite=1" in md
    assert "&lt;b&gt;now&lt;/b&gt;" in md and "```python\nprint('<x>')\n```" in md  # code is a code block
    assert md.startswith("_Limited to a.pdf_")
    assert "<details" in md and "How this was answered" in md
    assert "/viewer/" not in render.answer_markdown(turn)  # no session: no links


def test_user_errors_turns_quire_errors_into_gr_errors():
    @user_errors
    def plain():
        raise NotFound("No session named 'x'.", hint="List sessions.")

    @user_errors
    def stream():
        yield 1
        raise NotFound("gone")

    with pytest.raises(gr.Error, match="No session named 'x'. List sessions."):
        plain()
    gen = stream()
    assert next(gen) == 1
    with pytest.raises(gr.Error, match="gone"):
        next(gen)


def test_settings_rows_hide_the_api_key(tmp_path):
    rows = settings_rows(Settings(home=tmp_path, api_key="sk-secret", port=7999))
    flat = {flag: value for flag, value, _ in rows}
    assert flat["--api-key"] == "••••••••" and "sk-secret" not in str(rows)
    assert flat["--port"] == "7999" and all(help_text for *_, help_text in rows)


def test_export_names_and_bundle(tmp_path):
    assert slug("Q3 contracts (draft)") == "Q3-contracts-draft"
    assert slug("../..") == "session"
    a, b = tmp_path / "r.md", tmp_path / "c.pdf"
    a.write_text("report")
    b.write_bytes(b"%PDF-1.7")
    with zipfile.ZipFile(bundle([a, b], tmp_path / "all.zip")) as zf:
        assert sorted(zf.namelist()) == ["c.pdf", "r.md"]


def test_build_app_names_the_api_endpoints(settings):
    from ui.app import build_app

    with Quire(settings) as q:
        app = build_app(q)
        names = {d.api_name for d in app.fns.values() if d.api_visibility == "public"}
    assert {"ask", "ingest", "create_session", "rename_session", "delete_session", "remove_document",
            "export", "sessions", "history", "documents"} <= names
    assert not settings.db_path.exists()  # building the app touches no database


# -- the real app over HTTP -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-home")
    with Quire(Settings(home=home)) as q:
        seed_text(q, "demo")
        seed_pdf(q, "demo")
        q.session("other")
    proc, url = start_app(home)
    yield url + "/", home
    stop_app(proc)


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)


def test_the_server_answers_only_to_the_names_it_serves(server):
    """DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 must not reach the UI."""
    url, _ = server
    port = url.rstrip("/").rsplit(":", 1)[1]

    def status(host: str, path: str = "") -> int:
        request = urllib.request.Request(url + path, headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    for name in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
        assert status(name) == 200, name
    for name in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}"):
        assert status(name) == 400, name
        assert status(name, "gradio_api/info") == 400, name


def test_allowed_hosts_add_names_and_star_allows_any(tmp_path):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from server.app import HostAllowList, allowed_hosts, host_name

    assert host_name("[::1]:7860") == "::1" and host_name("Quire.LAN.:80") == "quire.lan" and host_name("::1") == "::1"
    names = allowed_hosts(Settings(home=tmp_path, host="0.0.0.0", allowed_hosts="quire.lan, 192.168.1.20"))
    assert names == {"localhost", "127.0.0.1", "::1", "quire.lan", "192.168.1.20"}
    assert "box.local" in allowed_hosts(Settings(home=tmp_path, host="box.local"))
    inner = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
    client = TestClient(HostAllowList(inner, names))
    assert client.get("/", headers={"Host": "quire.lan:7860"}).text == "ok"
    assert client.get("/", headers={"Host": "other.lan"}).status_code == 400
    anyone = TestClient(HostAllowList(inner, {"*"}))
    assert anyone.get("/", headers={"Host": "other.lan"}).text == "ok"


def _message_text(message) -> str:
    content = message["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def test_ask_streams_then_persists_the_turn(server, client):
    url, home = server
    question = "What is the access code for the north gate?"
    job = client.submit("demo", question, api_name="/ask")
    updates = [update for update in job]
    assert job.status().success, job.exception()
    final = job.outputs()[-1]
    chat, citations = final[0], final[2]
    answer = _message_text(chat[-1])
    assert "PELICAN" in answer and "Sources" in answer and "prompt tokens" in answer
    assert job.outputs()[0][1] == ""  # the question box is cleared at once
    partial = [u for u in job.outputs()[:-1] if u[0] and u[0][-1]["role"] == "assistant"
               and _message_text(u[0][-1]) != answer]
    assert len(updates) >= 2 and partial, "the answer should stream before its final update"
    assert citations["headers"] == render.CITATION_HEADERS and citations["data"]
    with Quire(Settings(home=home)) as q:
        turns = q.turns("demo")
    assert turns[-1].question == question and "PELICAN" in turns[-1].answer
    history = client.predict("demo", api_name="/history")[0]
    assert _message_text(history[-2]) == html.escape(question) and "PELICAN" in _message_text(history[-1])


def test_ask_errors_reach_the_client_as_messages(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="question"):
        client.predict("demo", "   ", api_name="/ask")
    with pytest.raises(AppError, match="No session named"):
        client.predict("no such session", "hello?", api_name="/ask")


def test_sessions_create_rename_delete(server, client):
    created = client.predict("Q3 review", api_name="/create_session")[0]
    assert created["value"] == "Q3 review"
    renamed = client.predict("Q3 review", "Q3 final", api_name="/rename_session")[0]
    assert renamed["value"] == "Q3 final" and ["Q3 final", "Q3 final"] in renamed["choices"]
    client.predict("Q3 final", api_name="/delete_session")
    with Quire(Settings(home=server[1])) as q:
        names = [s.name for s in q.sessions()]
        remembered = q.state("ui").get("session")
    assert "Q3 final" not in names and "Q3 review" not in names and "demo" in names
    assert remembered in names


def test_upload_adds_files_and_reports_each(server, client, tmp_path):
    from gradio_client import handle_file

    note = tmp_path / "shipping.txt"
    note.write_text("Shipping note\n\nThe pallet count for order 7781 is nineteen.\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = client.predict("other", [handle_file(str(note)), handle_file(str(empty))], "", api_name="/ingest")
    report, table = out[0], out[1]
    assert "shipping.txt" in report and "added" in report
    assert "empty.txt" in report and "empty" in report.lower()  # the bad file is reported, the batch went on
    assert [row[0] for row in table["data"]] == ["shipping.txt"]
    with Quire(Settings(home=server[1])) as q:
        assert [d.name for d in q.documents("other")] == ["shipping.txt"]


def test_export_offers_the_report(server, client):
    files, note = client.predict("demo", "md", api_name="/export")
    paths = [Path(f) for f in files]
    assert paths and paths[0].suffix == ".md" and paths[0].stat().st_size > 0
    assert "demo" in note


def test_chat_handlers_open_a_citation_and_reload_history(settings):
    from ui.chat import ChatTab

    with Quire(settings) as q:
        seed_pdf(q, "s")
        seg = segment_of(q, "s", "contract.pdf")
        citation = CitationRecord(ref="S1", segment_id=seg.id, document_name="contract.pdf", locator=seg.locator,
                                  quote=PDF_CLAUSE, status="verified")
        turn = TurnRecord(question="How long is the warranty?", answer="Thirty-six months [S1].", runtime="llamacpp",
                          model="m", strategy="full", prompt_tokens=90, completion_tokens=8, ttft_s=0.2, total_s=0.9,
                          meta={"segments_used": 1, "segments_total": 1, "share_seen": 1.0}, citations=[citation])
        with _database(q) as db:
            repo.save_turn(db, q.session("s").id, turn)
        tab = ChatTab(q)
        messages, rows, citations, where, info, pick, frame, strategy = tab.load("s")
        opened = tab.open_citation(where, 0)
        panel, only = tab.documents_panel("s")
    assert [m["role"] for m in messages] == ["user", "assistant"] and "Thirty" in messages[1]["content"]
    assert f"(/viewer/?session=s&turn={where['turn']}&cite=0" in messages[1]["content"]  # the marker
    assert rows[0][:4] == ["S1", "contract.pdf", "p.1", "✓ verified"] and "How long" in info
    assert pick["choices"] == [("S1 · contract.pdf · p.1", 0)] and "quire-viewer-empty" in frame
    assert where == {"session": "s", "turn": where["turn"]} and where["turn"] > 0
    assert f'src="/viewer/?session=s&amp;turn={where["turn"]}&amp;cite=0"' in opened and "<iframe" in opened
    assert "contract.pdf" in panel and "readable" in panel and only["choices"][0][0] == "contract.pdf"
    assert strategy == "auto"


def test_evidence_is_listed_with_the_answer_and_opens_in_the_viewer(settings):
    from backend.evidence import top_passages
    from ui.chat import ChatTab

    with Quire(settings) as q:
        seed_pdf(q, "s")
        seg = segment_of(q, "s", "contract.pdf")
        question = "How long is the warranty?"
        evidence = top_passages(question, {"S1": seg}, [], [seg.id])
        turn = TurnRecord(question=question, answer="Ten years.", strategy="full",
                          meta={"evidence": evidence, "warning": "Not supported by the documents."})
        with _database(q) as db:
            repo.save_turn(db, q.session("s").id, turn)
        tab = ChatTab(q)
        messages, rows, citations, where, info, pick, frame, strategy = tab.load("s")
        opened = tab.open_citation(where, 0)
    assert rows == [] and pick["choices"] == [("evidence · S1 · contract.pdf · p.1", 0)]
    content = messages[1]["content"]
    assert content.startswith("**⚠ Not supported by the documents.**") and "<mark>warranty</mark>" in content
    assert citations[0].origin == "evidence" and "cite=0" in opened  # the viewer lists evidence after citations


def test_strategy_choice_is_kept_with_the_session(settings):
    with Quire(settings) as q:
        q.session("s")
        q.set_session_settings("s", strategy="focus")
    with Quire(settings) as q:  # as after a restart
        from ui.chat import ChatTab

        assert ChatTab(q).load("s")[-1] == "focus"


def test_progress_reporter_spreads_pages_over_the_batch():
    from quire.api import Progress
    from ui.documents import progress_reporter

    seen: list[tuple[float, str]] = []
    report = progress_reporter(lambda value, desc="": seen.append((value, desc)), files=2)
    report(Progress("file", "a.pdf", 0, 2))
    report(Progress("page", "a.pdf", 5, 10))
    report(Progress("done", "a.pdf", 1, 2))
    report(Progress("file", "b.txt", 1, 2))
    assert [round(v, 2) for v, _ in seen] == [0.0, 0.25, 0.5, 0.5]
    assert seen[1][1] == "a.pdf: page 5/10" and seen[3][1] == "Reading b.txt (2/2)"

    seen.clear()  # one upload, a zip of three documents: the bar counts the documents and never passes the end
    report = progress_reporter(lambda value, desc="": seen.append((value, desc)), files=1)
    report(Progress("file", "deal.zip/a.pdf", 0, 3))
    report(Progress("done", "deal.zip/a.pdf", 1, 3))
    report(Progress("done", "deal.zip/b.pdf", 2, 3))
    report(Progress("done", "deal.zip/c.pdf", 3, 3))
    assert [round(v, 2) for v, _ in seen] == [0.0, 0.33, 0.67, 1.0] and seen[0][1] == "Reading deal.zip/a.pdf (1/3)"

    seen.clear()  # a codebase's files are read within its document, as a PDF's pages are (they were told as
    report = progress_reporter(lambda value, desc="": seen.append((value, desc)), files=2)  # documents: 2325/1)
    report(Progress("file", "lib.tgz", 0, 2))
    report(Progress("source", "lib.tgz", 1162, 2324, message="python3.11/os.py"))
    report(Progress("done", "lib.tgz", 1, 2))
    assert [round(v, 2) for v, _ in seen] == [0.0, 0.25, 0.5] and seen[1][1] == "lib.tgz: file 1,162/2,324"


def test_the_documents_tab_prepares_the_shards_and_reports_until_ready(settings, corpus):
    import time

    from ui.documents import DocumentsTab

    with Quire(settings.replace(context_window=1024, workers=1)) as q:
        q.ingest("w", [corpus / "contracts" / "cuad" / "pdf" /
                       "PRECIGEN,INC_01_22_2020-EX-99.1-JOINT FILING AGREEMENT.PDF"])
        tab = DocumentsTab(q)
        line, timer = tab.warm("w")
        assert line.startswith("**Shards:") and timer.active
        deadline = time.monotonic() + 180
        while timer.active:
            assert time.monotonic() < deadline, line
            time.sleep(0.5)
            line, timer = tab.warm_progress("w")
    assert line.startswith("**Shards: ready**") and "of" in line, line


def test_a_single_pass_shows_a_bar_against_its_expected_time():
    from quire.api import Status, Waiting
    from ui.chat import progress_line

    line = progress_line(Status("Reading 43 passages (7476 tokens)", 0, 1, eta_s=20.0), 5.0)
    assert "▰▰" in line and "up to about 15 s left" in line
    late = progress_line(Status("Reading 43 passages", 0, 1, eta_s=20.0), 40.0)
    assert "▰" * 10 not in late and "soon" in late  # never shown as done before it is
    assert progress_line(Status("Reading 2 passages", 0, 1), 3.0) == "_Reading 2 passages…_ (3 s)"
    assert "2 questions ahead" in progress_line(Waiting("Waiting for the model: 2 questions ahead", place=2, expected_s=30.0), 1.0)


def test_only_a_whole_upload_that_failed_is_offered_for_retry(settings, corpus, tmp_path):
    """A zip of documents is split; its bad member is reported by name but not offered for retry (its copy is gone
    with the batch), while a bad upload of its own is, under its own path."""
    import zipfile

    from ui.documents import DocumentsTab

    deal = tmp_path / "deal.zip"
    with zipfile.ZipFile(deal, "w") as zf:
        zf.write(sorted((corpus / "contracts" / "cuad" / "pdf").iterdir(), key=lambda p: p.stat().st_size)[0], "a.pdf")
        zf.writestr("bad.pdf", b"no PDF here\n" * 20)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 nothing after this\n" * 10)
    with Quire(settings.replace(workers=1)) as q:
        out = DocumentsTab(q).ingest("r", [str(deal), str(broken)], "", progress=lambda *a, **k: None)
        report, failed = out[0], out[4]
        assert "deal.zip/a.pdf" in report and "deal.zip/bad.pdf" in report and "broken.pdf" in report
        assert failed == {"broken.pdf": str(broken)}
        assert [d.name for d in q.documents("r")] == ["deal.zip/a.pdf"]
