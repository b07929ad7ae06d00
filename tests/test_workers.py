"""The extraction pool: a crash or a hang is pinned on its own file; the rest of the batch goes on."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.pipeline import Ingestor
from ingest.workers import APP_RESERVE_MB, MIN_WORKER_MB, PER_CORE_MB, WorkerPool, worker_memory_mb
from storage import repo
from tests import hostile
from tests.processes import alive
from tests.worker_jobs import job


@pytest.fixture
def workers():
    pool = WorkerPool()
    yield pool
    pool.shutdown()


def test_crash_hang_and_error_are_contained(workers):
    results, failures = {}, {}
    t = time.monotonic()
    workers.run_all(
        ["a", "crash", "b", "hang", "error", "c"], job, workers=2, timeout_s=3,
        on_result=lambda item, out: results.__setitem__(item, out),
        on_failure=lambda item, why: failures.__setitem__(item, why),
    )
    assert results == {"a": "A", "b": "B", "c": "C"}
    assert failures["crash"] == "crashed"
    assert failures["hang"] == "timeout"
    assert failures["error"].startswith("ValueError")
    assert time.monotonic() - t < 40
    # the pool is usable afterwards
    out = {}
    workers.run_all(["d"], job, workers=2, timeout_s=5, on_result=lambda i, o: out.__setitem__(i, o), on_failure=print)
    assert out == {"d": "D"}


def test_cancel_before_start(workers):
    cancelled, results = [], []
    workers.run_all(["x", "y"], job, workers=1, timeout_s=5, cancelled=lambda: True,
                    on_result=lambda i, o: results.append(i), on_failure=print, on_cancel=cancelled.append)
    assert len(cancelled) + len(results) == 2  # each item ends in exactly one callback


def _killed_app(busy: bool) -> tuple[list[int], float]:
    """Start a pool in a real app process, kill -9 the app, and time how long its workers live on."""
    root = Path(__file__).resolve().parent.parent
    args = [sys.executable, "-m", "tests.worker_jobs"] + (["busy"] if busy else [])
    proc = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 3
    time.sleep(0.5)
    # started by a thread that has ended since: still there (the kernel ties them to a thread that lives on)
    assert all(alive(pid) for pid in pids)
    if busy:
        assert proc.stdout.readline().strip() == "rendering"
        time.sleep(0.5)  # inside a MuPDF call that holds the GIL for seconds
    proc.send_signal(signal.SIGKILL)  # no atexit, no shutdown: only the kernel or the workers can end them
    proc.wait()
    killed = time.monotonic()
    while any(alive(pid) for pid in pids) and time.monotonic() < killed + 15:
        time.sleep(0.01)
    return [pid for pid in pids if alive(pid)], time.monotonic() - killed


def test_workers_and_manager_go_when_the_app_is_killed():
    left, took = _killed_app(busy=False)
    assert not left and took < 1.0, took


def test_a_worker_inside_a_long_mupdf_call_goes_at_once_when_the_app_is_killed():
    left, took = _killed_app(busy=True)
    print(f"workers gone {took * 1000:.0f} ms after kill -9 of the app")
    assert not left and took < 1.0, took


def test_a_file_past_the_memory_bound_is_too_large_and_the_batch_goes_on(settings, db, blobs, tmp_path, corpus, workers):
    bomb = hostile.text_bomb(tmp_path / "text-bomb.pdf")
    note = tmp_path / "note.txt"
    note.write_text("The boiler serial number is QX-4471.\n")
    paths = [bomb, corpus / "pdfs/pdfjs/tracemonkey.pdf", note]
    session = repo.create_session(db, "s")
    ingestor = Ingestor(settings.replace(workers=2, ocr=False, worker_memory_mb=1200), db, blobs, workers)
    too_big, paper, small = ingestor.ingest(session.id, paths)
    assert too_big.status == "error" and too_big.message == (
        "text-bomb.pdf: is too large to read safely: reading it needed more than the 1,200 MiB a reader may use. "
        "Split it, or raise --worker-memory-mb.")
    assert paper.status == small.status == "added"
    for pid in workers.pids()[:2]:  # the two workers (the progress manager comes last): the bound is the kernel's: every worker's address space is capped
        with open(f"/proc/{pid}/limits") as fh:
            (line,) = [row for row in fh if row.startswith("Max address space")]
        assert line.split()[3:5] == [str(1200 * 2**20)] * 2


def test_the_default_bound_is_a_share_of_the_machine():
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    assert worker_memory_mb(5000, 2) == 5000
    least = max(MIN_WORKER_MB, 1024 + PER_CORE_MB * os.cpu_count())
    assert worker_memory_mb(0, 2) == max(least, (total * 3 // 4 - APP_RESERVE_MB) // 2)
    assert worker_memory_mb(0, 10_000) == least >= MIN_WORKER_MB


def test_the_api_ends_the_workers_it_started(settings):
    from quire.api import Quire

    before = set(multiprocessing.active_children())
    q = Quire(settings.replace(workers=2))
    q.warm_ingest()
    deadline = time.monotonic() + 30
    while len(set(multiprocessing.active_children()) - before) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    started = set(multiprocessing.active_children()) - before
    assert len(started) >= 2
    q.close()
    assert not [p for p in started if p.is_alive()]
