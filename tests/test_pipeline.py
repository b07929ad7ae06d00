"""The pipeline's own checks: types found by content, unknown types refused by name, originals kept."""

import pymupdf

from ingest.pipeline import Ingestor
from ingest.workers import WorkerPool
from storage import repo


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
