"""The extraction pool: a crash or a hang is pinned on its own file; the rest of the batch goes on."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.workers import WorkerPool
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead, only not reaped yet
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_and_manager_go_when_the_app_is_killed():
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "tests.worker_jobs"], cwd=root, stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 3 and all(_alive(pid) for pid in pids)
    proc.send_signal(signal.SIGKILL)  # no atexit, no shutdown: only the workers' own watch can end them
    proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in pids if _alive(pid)]


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
