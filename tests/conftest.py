"""Shared fixtures: a private data directory per test, real corpus files, a real database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.settings import Settings
from ingest.base import ExtractContext
from quire.api import Quire
from storage.blobs import BlobStore
from storage.db import Database
from tests.postgres import Cluster, binaries

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("QUIRE_CORPUS", ROOT.parent / "shared" / "corpus"))


@pytest.fixture(autouse=True)
def quire_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "quire-home"
    monkeypatch.setenv("QUIRE_HOME", str(home))
    return home


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"corpus not found at {CORPUS}: it lies in shared/corpus beside the checkout (or set QUIRE_CORPUS)")
    return CORPUS


@pytest.fixture
def settings(quire_home) -> Settings:
    return Settings.from_env(threads=2)


@pytest.fixture
def db(settings) -> Database:
    database = Database(settings.db_path)
    yield database
    database.close()


@pytest.fixture
def q(settings) -> Quire:
    """The API over the same data directory as ``db`` and ``blobs``."""
    with Quire(settings) as quire:
        yield quire


@pytest.fixture
def blobs(settings) -> BlobStore:
    return BlobStore(settings.blob_dir)


@pytest.fixture
def ctx(settings, blobs) -> ExtractContext:
    return ExtractContext(settings=settings, blobs=blobs)


@pytest.fixture(scope="session")
def cpu_runtime(tmp_path_factory):
    """The real CPU default (SmolLM2-135M in llama.cpp's worker process), small window to keep tests fast."""
    from backend.llamacpp import LlamaCppRuntime

    home = tmp_path_factory.mktemp("cpu-runtime-home")
    rt = LlamaCppRuntime(Settings(home=home, context_window=2048, threads=2, max_answer_tokens=64))
    rt.start()
    yield rt
    rt.shutdown()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ARG001 - pytest's hook signature
    """Marks a test whose body failed (``item.failed_call``), so a fixture can keep evidence (a screenshot)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.failed_call = True

@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster the suite starts itself (initdb + pg_ctl on a loopback port), removed at the end."""
    bin_dir = binaries()
    if bin_dir is None:
        pytest.fail("PostgreSQL is not installed (/usr/lib/postgresql/*/bin): `python3 bootstrap.py test` installs it "
                    "(apt-get install postgresql)")
    cluster = Cluster(bin_dir).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(postgres) -> str:
    """A fresh, empty PostgreSQL database of that cluster, as a SQLAlchemy URL."""
    return postgres.database()
