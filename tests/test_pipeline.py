"""The pipeline's own checks: types found by content, unknown types refused by name, originals kept."""

import pymupdf

from export import export_session
from ingest.pipeline import Ingestor
from quire.api import Quire
from ingest.workers import WorkerPool
from storage import repo
from tests import hostile
from ui import render


def test_a_pdf_without_extension_is_read_by_its_content(settings, db, blobs, tmp_path):
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "Invoice number 4471 is due on 3 May.")
    path = tmp_path / "scan0001"
    doc.save(path)
    session = repo.create_session(db, "s")
    (result,) = Ingestor(settings.replace(workers=1), db, blobs).ingest(session.id, [path])
    assert result.status == "added", result.message
    info = repo.get_document(db, result.document_id)
    assert info.kind == "pdf" and blobs.find(info.blob_sha).suffix == ".pdf"


def test_an_unknown_type_is_refused_and_the_batch_goes_on(settings, db, blobs, tmp_path):
    odd = tmp_path / "data.xyz"
    odd.write_bytes(b"\x00\x01\x02 not a known format")
    good = tmp_path / "note.txt"
    good.write_text("A short note about the boiler.\n")
    session = repo.create_session(db, "s")
    bad, ok = Ingestor(settings.replace(workers=1), db, blobs).ingest(session.id, [odd, good])
    assert bad.status == "error" and bad.message.startswith("data.xyz: is a file type Quire does not read (.xyz)")
    assert ok.status == "added"


def test_progress_counts_files_pages_and_tokens_across_workers(settings, db, blobs, tmp_path, corpus):
    paths = [corpus / "pdfs/pdfjs/tracemonkey.pdf", corpus / "pdfs/py-pdf-sample-files/004-pdflatex-4-pages/pdflatex-4-pages.pdf",
             tmp_path / "bad.pdf"]
    paths[2].write_bytes(b"%PDF-1.4\n%%EOF\n")
    events = []
    session = repo.create_session(db, "s")
    pool = WorkerPool()
    try:
        results = Ingestor(settings.replace(workers=2), db, blobs, pool).ingest(session.id, paths, progress=events.append)
    finally:
        pool.shutdown()
    finished = [e for e in events if e.stage in ("done", "error")]
    assert [e.done for e in finished] == [1, 2, 3] and {e.total for e in finished} == {3}
    assert finished[-1].pages == sum(r.pages for r in results if r.status == "added") == 18
    assert finished[-1].tokens == sum(r.tokens for r in results if r.status == "added") > 10_000
    assert any(e.stage == "page" and e.name == "tracemonkey.pdf" and e.done == e.total == 14 for e in events)


def test_a_pdf_whose_only_page_is_a_bomb_is_not_readable_and_not_added(settings, db, blobs, tmp_path):
    bomb = hostile.bomb_page(tmp_path / "bomb_giant.pdf")
    session = repo.create_session(db, "s")
    (result,) = Ingestor(settings.replace(workers=1, ocr=False), db, blobs).ingest(session.id, [bomb])
    assert result.status == "error" and not result.ok
    assert result.message.startswith("bomb_giant.pdf: is not readable: no text or image could be read from its one page.")
    assert repo.session_documents(db, session.id) == []


def test_warnings_reach_the_result_the_api_the_ui_and_the_report(settings, tmp_path):
    pdf = hostile.bad_resource_page(tmp_path / "bad-resource.pdf")
    with Quire(settings.replace(workers=1, ocr=False)) as q:
        (result,) = q.ingest("s", [pdf])
        assert result.status == "added" and result.warnings == [
            "page 2 could not be read (TypeError: in method 'll_fz_warn', argument 1 of type 'char const *'); "
            "it was left out."]
        (doc,) = q.documents("s")
        assert doc.warnings == result.warnings
        (again,) = q.ingest("s", [pdf])
        assert again.status == "duplicate" and again.message == "already in the session"
        assert again.warnings == result.warnings
        row = render.document_rows([doc])[0]
        assert row[-1].startswith("⚠ page 2 could not be read (TypeError")
        assert "⚠ **bad-resource.pdf**: added" in render.ingest_report([result])
        assert "page 2 could not be read" in render.ingest_report([again])
        paths = {p.suffix: p for fmt in ("md", "html") for p in export_session(q, "s", fmt, tmp_path / f"report.{fmt}")}
    assert "\n  - ⚠ page 2 could not be read (TypeError: in method 'll\\_fz\\_warn'" in paths[".md"].read_text()
    assert "⚠ page 2 could not be read (TypeError: in method &#x27;ll_fz_warn&#x27;" in paths[".html"].read_text()


def test_a_folder_read_again_unchanged_is_already_in_the_session(settings, db, blobs, tmp_path):
    tree = tmp_path / "proj"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "mod.py").write_text("def f(x):\n    return x + 1\n")
    session = repo.create_session(db, "s")
    ingestor = Ingestor(settings.replace(workers=1), db, blobs)
    (first,) = ingestor.ingest(session.id, [tree])
    (second,) = ingestor.ingest(session.id, [tree])
    assert first.status == "added"
    assert second.status == "duplicate" and second.message == "already in the session"
    assert second.document_id == first.document_id and len(repo.session_documents(db, session.id)) == 1


def test_a_repaired_file_says_so(settings, db, blobs, corpus):
    session = repo.create_session(db, "s")
    (result,) = Ingestor(settings.replace(workers=1, ocr=False), db, blobs).ingest(
        session.id, [corpus / "pdfs/pdfjs/helloworld-bad.pdf"])
    assert result.status == "added"
    assert result.warnings == ["The file was damaged; MuPDF repaired it. Check the page images against the text."]


def test_a_folder_of_documents_adds_each_one_and_a_bad_one_does_not_stop_the_rest(settings, db, blobs, tmp_path, corpus):
    folder = tmp_path / "deal"
    (folder / "schedules").mkdir(parents=True)
    contracts = sorted((corpus / "contracts/cuad/pdf").iterdir())[:2]  # real CUAD contracts, one named .PDF
    for pdf in contracts:
        (folder / pdf.name).write_bytes(pdf.read_bytes())
    (folder / "schedules" / "notes.txt").write_text("Schedule A lists the delivery dates.\n")
    (folder / "schedules" / "broken.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: ignored, as in a codebase
    session = repo.create_session(db, "s")
    results = Ingestor(settings.replace(workers=1), db, blobs).ingest(session.id, [folder])
    by_name = {r.name: r for r in results}
    assert set(by_name) == {f"deal/{p.name}" for p in contracts} | {"deal/schedules/notes.txt", "deal/schedules/broken.pdf"}
    assert all(by_name[f"deal/{p.name}"].status == "added" for p in contracts)
    assert by_name["deal/schedules/notes.txt"].status == "added"
    broken = by_name["deal/schedules/broken.pdf"]
    assert broken.status == "error" and broken.message.startswith("deal/schedules/broken.pdf: ")
    stored = {d.name: d for d in repo.session_documents(db, session.id)}
    assert set(stored) == set(by_name) - {"deal/schedules/broken.pdf"}
    assert {stored[f"deal/{p.name}"].kind for p in contracts} == {"pdf"}


def test_a_folder_with_source_code_stays_one_codebase(settings, db, blobs, tmp_path, corpus):
    tree = tmp_path / "tool"
    tree.mkdir()
    (tree / "main.py").write_text("def main():\n    return 'ok'\n")
    (tree / "manual.pdf").write_bytes((corpus / "pdfs/pdfjs/tracemonkey.pdf").read_bytes())
    session = repo.create_session(db, "s")
    (result,) = Ingestor(settings.replace(workers=1), db, blobs).ingest(session.id, [tree])
    assert result.status == "added" and result.name == "tool"
    assert repo.get_document(db, result.document_id).kind == "code"
