"""Mutated PDFs, archives and images through the real pipeline: a clean result or a Quire error naming
the file, never a crash, a hang or a half-written document."""

import io
import zipfile

import pymupdf
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from PIL import Image
from sqlalchemy import text

from core.errors import printable
from core.settings import Settings
from ingest.pipeline import Ingestor
from ingest.workers import WorkerPool
from storage import repo
from storage.blobs import BlobStore
from storage.db import Database


def seed_pdf() -> bytes:
    doc = pymupdf.open()
    for i in range(2):
        page = doc.new_page()
        page.insert_text((72, 72 + 20 * i), f"Seed page {i} with some words to extract.")
    return doc.tobytes()


def seed_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("pkg/mod.py", "def f(x):\n    return x + 1\n" * 20)
        z.writestr("README.md", "# Title\n\nSome text.\n")
    return buf.getvalue()


def seed_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


SEEDS = {"doc.pdf": seed_pdf(), "code.zip": seed_zip(), "pic.png": seed_png()}

mutation = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=12)


def mutate(data: bytes, flips, cut: float) -> bytes:
    out = bytearray(data)
    for where, value in flips:
        out[int(where * len(out))] = value
    return bytes(out[: max(1, int(len(out) * cut))])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz-home")
    s = Settings(home=home, workers=2, file_timeout_s=60)
    db, pool = Database(s.db_path), WorkerPool()
    yield Ingestor(s, db, BlobStore(s.blob_dir), pool), db
    pool.shutdown()
    db.close()


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pdf=mutation, zipf=mutation, png=mutation, cut=st.floats(0.3, 1.0))
def test_mutated_inputs_end_cleanly(pipeline, tmp_path_factory, pdf, zipf, png, cut):
    ingestor, db = pipeline
    folder = tmp_path_factory.mktemp("fuzz")
    paths = []
    for (name, data), flips in zip(SEEDS.items(), (pdf, zipf, png)):
        path = folder / name
        path.write_bytes(mutate(data, flips, cut))
        paths.append(path)
    session = repo.create_session(db, folder.name[:90])
    results = ingestor.ingest(session.id, paths)
    # one result per input, in order; a zip mutated into one of documents (its .py name gone): one per member
    first, *middle, last = [r.name for r in results]
    assert (first, last) == ("doc.pdf", "pic.png") and middle
    assert all(name == "code.zip" or name.startswith("code.zip/") for name in middle), middle
    for r in results:
        assert r.status in ("added", "duplicate", "error"), r
        if r.status == "error":
            assert r.message.startswith(printable(r.name) + ":"), r.message
            assert "Traceback" not in r.message
    # no half documents: every stored document has all its segments, and no segment lacks its document
    with db.read() as s:
        orphans = s.execute(text("SELECT count(*) FROM segments WHERE document_id NOT IN (SELECT id FROM documents)")).scalar()
        assert orphans == 0
    for r in results:
        if r.status in ("added", "duplicate"):  # never "added" with nothing read, and its damage is shown
            stored = repo.get_document(db, r.document_id)
            assert stored.segments == r.segments > 0
            assert r.warnings == stored.warnings
