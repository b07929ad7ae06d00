"""Archives of documents given to ingest: each member document added on its own, like a folder of documents;
an archive with source code in it stays one codebase. Real zips and tars of real corpus PDFs, built here."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from ingest.pipeline import Ingestor
from storage import repo

LOCKED = "pdfs/py-pdf-sample-files/005-libreoffice-writer-password/libreoffice-writer-password.pdf"


@pytest.fixture
def contracts(corpus) -> list[Path]:
    """The two smallest CUAD contracts (real filings, named .PDF, with spaces)."""
    return sorted((corpus / "contracts/cuad/pdf").iterdir(), key=lambda p: p.stat().st_size)[:2]


def _texts(db, session_id: int) -> dict[str, str]:
    texts: dict[str, str] = {}
    for seg in repo.session_segments(db, session_id):
        texts[seg.document_name] = texts.get(seg.document_name, "") + seg.text + "\n"
    return texts


def _unpacked_left(settings) -> list[Path]:
    folder = settings.cache_dir / "unpacked"
    return list(folder.rglob("*")) if folder.exists() else []


def test_a_zip_of_documents_adds_each_one_and_a_bad_one_does_not_stop_the_rest(settings, db, blobs, tmp_path,
                                                                             corpus, contracts):
    archive = tmp_path / "in" / "deal.zip"
    archive.parent.mkdir()
    secret = json.loads((corpus / "pdfs/passwords.json").read_text())[LOCKED]["user_password"]
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for pdf in contracts:
            zf.write(pdf, f"contracts/{pdf.name}")
        zf.writestr("schedules/bad.pdf", b"this is no PDF at all\n" * 40)
        zf.writestr("schedules/notes.txt", "Schedule A lists the delivery dates.\n")
        zf.write(corpus / LOCKED, "locked/letter.pdf")
        zf.writestr(f"__MACOSX/contracts/._{contracts[0].name}", b"\x00\x05\x16\x07resource fork")
        zf.writestr(".DS_Store", b"\x00\x01")
    session = repo.create_session(db, "s")
    results = Ingestor(settings.replace(workers=1), db, blobs).ingest(
        session.id, [archive], passwords={"letter.pdf": secret})  # the member's own name, as the CLI maps FILE=PW
    by_name = {r.name: r for r in results}
    pdfs = [f"deal.zip/contracts/{name}" for name in sorted(p.name for p in contracts)]
    assert [r.name for r in results] == [*pdfs, "deal.zip/locked/letter.pdf", "deal.zip/schedules/bad.pdf",
                                         "deal.zip/schedules/notes.txt"]
    bad = by_name["deal.zip/schedules/bad.pdf"]
    assert bad.status == "error" and bad.message.startswith("deal.zip/schedules/bad.pdf: ")
    assert all(by_name[name].status == "added" for name in by_name if name != bad.name)
    stored = {d.name: d for d in repo.session_documents(db, session.id)}
    assert set(stored) == set(by_name) - {bad.name}
    assert {stored[name].kind for name in pdfs} == {"pdf"}
    assert stored[pdfs[0]].source_path == f"{archive}/contracts/{contracts[0].name}"
    texts = _texts(db, session.id)
    assert all(len(texts[name]) > 2000 and "agreement" in texts[name].lower() for name in pdfs)
    assert "delivery dates" in texts["deal.zip/schedules/notes.txt"]
    assert texts["deal.zip/locked/letter.pdf"].strip()
    assert not _unpacked_left(settings)  # the members' temporary copies went with the batch


def test_a_zip_uploaded_under_another_name_goes_through_the_app_and_again_is_duplicates(q, tmp_path, contracts):
    upload = tmp_path / "gradio" / "7f3a9c" / "upload"  # the UI hands a temporary path and the file's own name
    upload.parent.mkdir(parents=True)
    with zipfile.ZipFile(upload, "w", zipfile.ZIP_DEFLATED) as zf:
        for pdf in contracts:
            zf.write(pdf, pdf.name)
    events = []
    results = q.ingest("s", [str(upload)], names={str(upload): "deal.zip"}, progress=events.append)
    names = [f"deal.zip/{name}" for name in sorted(p.name for p in contracts)]
    assert [(r.name, r.status) for r in results] == [(n, "added") for n in names]
    finished = [e for e in events if e.stage in ("done", "error")]
    assert [e.total for e in finished] == [2, 2] and finished[-1].done == 2 and finished[-1].pages > 0
    again = q.ingest("other", [str(upload)], names={str(upload): "deal.zip"})
    assert [(r.name, r.status) for r in again] == [(n, "duplicate") for n in names]
    assert [d.name for d in q.documents("other")] == names
    assert not _unpacked_left(q.settings)


def test_a_zip_with_source_code_stays_one_codebase(settings, db, blobs, tmp_path, contracts):
    archive = tmp_path / "tool.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("tool/main.py", "def main():\n    return 'ok'\n")
        zf.write(contracts[0], "tool/manual.pdf")
    session = repo.create_session(db, "s")
    (result,) = Ingestor(settings.replace(workers=1), db, blobs).ingest(session.id, [archive])
    assert result.status == "added" and result.name == "tool.zip"
    assert repo.get_document(db, result.document_id).kind == "code"
    assert not _unpacked_left(settings)


def test_zip_slip_members_are_refused_by_name_and_nothing_lands_outside_the_data_dir(settings, db, blobs, tmp_path,
                                                                                   quire_home, contracts):
    archive = tmp_path / "in" / "deal.zip"
    archive.parent.mkdir()
    data = contracts[0].read_bytes()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.pdf", data)
        zf.writestr("../evil.pdf", data)
        zf.writestr("sub/../../../evil2.pdf", data + b"\n")
        zf.writestr("/tmp/evil3.pdf", data + b"\n\n")
    outside = {p for p in tmp_path.rglob("*") if quire_home not in p.parents}
    session = repo.create_session(db, "s")
    results = Ingestor(settings.replace(workers=1), db, blobs).ingest(session.id, [archive])
    by_name = {r.name: r for r in results}
    assert by_name["deal.zip/ok.pdf"].status == "added"
    for member in ("../evil.pdf", "sub/../../../evil2.pdf", "/tmp/evil3.pdf"):
        refused = by_name[f"deal.zip/{member}"]
        assert refused.status == "error" and "unsafe path" in refused.message
        assert refused.message.startswith(f"deal.zip/{member}: ")
    assert {p for p in tmp_path.rglob("*") if quire_home not in p.parents} == outside
    assert not list(tmp_path.parent.glob("evil*")) and not Path("/tmp/evil3.pdf").exists()
    assert [d.name for d in repo.session_documents(db, session.id)] == ["deal.zip/ok.pdf"]
    assert not _unpacked_left(settings)


def test_a_tar_gz_of_documents_refuses_links_and_members_over_the_size_limit(settings, db, blobs, tmp_path,
                                                                              contracts):
    archive = tmp_path / "deal.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for pdf in contracts:
            tf.add(pdf, f"deal/{pdf.name}")
        link = tarfile.TarInfo("deal/passwd.pdf")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tf.addfile(link)
        big = tarfile.TarInfo("deal/big.pdf")
        big.size = (1 << 20) + 4096
        tf.addfile(big, io.BytesIO(b"%PDF-1.4\n" + bytes(big.size - 9)))
    session = repo.create_session(db, "s")
    results = Ingestor(settings.replace(workers=1, max_file_mb=1), db, blobs).ingest(session.id, [archive])
    by_name = {r.name: r for r in results}
    pdfs = [f"deal.tar.gz/deal/{p.name}" for p in contracts]
    assert all(by_name[name].status == "added" for name in pdfs)
    assert by_name["deal.tar.gz/deal/big.pdf"].status == "error"
    assert "over the 1 MiB limit" in by_name["deal.tar.gz/deal/big.pdf"].message
    link = by_name["deal.tar.gz/deal/passwd.pdf"]
    assert link.status == "error" and "link pointing outside the archive" in link.message
    assert link.message.startswith("deal.tar.gz/deal/passwd.pdf: ")
    assert sorted(d.name for d in repo.session_documents(db, session.id)) == sorted(pdfs)
    assert not _unpacked_left(settings)


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_tar_is_told_code_at_its_first_kept_source_file_without_reading_on(settings, tmp_path, contracts):
    """A tar must be decompressed to be listed (about a second for the standard library as a 74 MB .tgz, and the
    code extractor lists it again): telling code from documents stops at the first source file the ignore files
    read so far keep. The proof it stops: a damaged stream after that file, which a full listing refuses."""
    from ingest.archive import ArchiveLimits, ArchiveReader
    from ingest.code import archive_documents
    from ingest.pipeline import _is_document

    pdf = contracts[0].read_bytes()
    whole = _tar([("tool/main.py", b"def main():\n    return 1\n"), ("tool/manual.pdf", pdf)])
    damaged = tmp_path / "tool.tar.gz"
    damaged.write_bytes(whole[: len(whole) // 2])  # the PDF's bytes cut off
    limits = ArchiveLimits.from_settings(settings)
    with ArchiveReader(damaged, damaged.name, limits) as reader:
        assert archive_documents(reader, _is_document) is None  # code: the damage after main.py is never reached
    with ArchiveReader(damaged, damaged.name, limits) as reader, pytest.raises(Exception, match="not a readable"):
        reader.list()

    # a source file the ignore files before it leave out does not make a codebase; the documents are all listed
    docs = tmp_path / "deal.tar.gz"
    docs.write_bytes(_tar([(".quireignore", b"tools/\n"), ("tools/convert.py", b"print(1)\n"),
                           ("deal/contract.pdf", pdf), ("deal/notes.md", b"# Notes\n")]))
    with ArchiveReader(docs, docs.name, limits) as reader:
        members, refused = archive_documents(reader, _is_document)
    assert [rel for rel, _ in members] == ["deal/contract.pdf", "deal/notes.md"] and not refused
