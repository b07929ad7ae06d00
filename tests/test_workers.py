"""The extraction pool: a crash or a hang is pinned on its own file; the rest of the batch goes on."""

import time

from ingest import workers
from tests.worker_jobs import job


def test_crash_hang_and_error_are_contained():
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


def test_cancel_before_start():
    cancelled, results = [], []
    workers.run_all(["x", "y"], job, workers=1, timeout_s=5, cancelled=lambda: True,
                    on_result=lambda i, o: results.append(i), on_failure=print, on_cancel=cancelled.append)
    assert len(cancelled) + len(results) == 2  # each item ends in exactly one callback
