"""Extraction in worker processes: both cores busy, the app safe from a reader that crashes or hangs.

One pool per process, started on first use (spawn: no fork of a threaded
server) and reused, so only the first batch pays for starting the workers.
A file that crashes its worker or runs past the time limit costs the pool:
the pool is replaced, and the other files that were in it are tried again
one at a time so that only the culprit is reported.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.managers import SyncManager
from typing import Callable

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_size = 0


def pool(workers: int) -> ProcessPoolExecutor:
    """The shared pool, with at least ``workers`` processes (a bigger one is reused as it is)."""
    global _pool, _size
    with _lock:
        if _pool is None or _size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False, cancel_futures=True)
            _pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=die_with_parent, initargs=(os.getpid(),))
            _size = workers
        return _pool


def die_with_parent(parent: int) -> None:
    """Runs first in every worker and in the manager: when the process that started them is gone
    without shutting them down (SIGTERM or SIGKILL skip atexit), they go too instead of idling on
    as orphans of a few hundred MB each."""

    def watch() -> None:
        while os.getppid() == parent:  # a dead parent's children are handed to another process
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def warm(workers: int, call: Callable[[object], object]) -> None:
    """Start the pool's workers now and have each run ``call`` (their imports), without waiting:
    they get ready while this process does its own work."""
    executor = pool(workers)
    try:
        for _ in range(workers):
            executor.submit(call, None)
    except BrokenProcessPool:
        discard(executor)


def discard(broken: ProcessPoolExecutor) -> None:
    """Kill a pool's workers (a hung reader ignores politer requests) and forget it."""
    global _pool
    with _lock:
        procs = list(getattr(broken, "_processes", {}).values())
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        broken.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.join(timeout=5)  # reap them: no zombies, and their peak memory reaches rusage
        if _pool is broken:
            _pool = None


_manager = None


def progress_queue():
    """A queue worker processes can put progress events on (one manager process, started on first use)."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
            _manager.start(die_with_parent, (os.getpid(),))
        return _manager.Queue()


@atexit.register
def shutdown() -> None:
    """Stop the workers and the progress manager (at exit, or when a caller wants them gone now)."""
    global _manager
    if _pool is not None:
        discard(_pool)
    if _manager is not None:
        _manager.shutdown()
        _manager = None


def run_all(
    items: list,
    call: Callable,  # picklable function: item -> result, run in a worker
    *,
    workers: int,
    timeout_s: float,
    on_result: Callable[[object, object], None],
    on_failure: Callable[[object, str], None],  # item, "crashed" | "timeout" | message
    cancelled: Callable[[], bool] = lambda: False,
    on_cancel: Callable[[object], None] = lambda item: None,
    on_tick: Callable[[], None] = lambda: None,
) -> None:
    """Run ``call`` over ``items`` in the pool; every item ends in exactly one callback."""
    suspects = _pass(items, call, workers, timeout_s, on_result, on_failure, cancelled, on_cancel, on_tick)
    for item in suspects:  # alone, so a crash or a hang is pinned on the right file
        for again in _pass([item], call, 1, timeout_s, on_result, on_failure, cancelled, on_cancel, on_tick):
            on_failure(again, "crashed")


def _pass(items, call, workers, timeout_s, on_result, on_failure, cancelled, on_cancel, on_tick) -> list:
    executor = pool(workers)
    try:
        pending: dict[Future, object] = {executor.submit(call, item): item for item in items}
    except BrokenProcessPool:
        discard(executor)
        executor = pool(workers)
        pending = {executor.submit(call, item): item for item in items}
    started: dict[Future, float] = {}
    suspects: list = []
    while pending:
        if cancelled():
            for future, item in list(pending.items()):
                if future.cancel():
                    del pending[future]
                    on_cancel(item)
        done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
        on_tick()
        now = time.monotonic()
        for future in done:
            item = pending.pop(future)
            exc = future.exception()
            if isinstance(exc, BrokenProcessPool):
                suspects.append(item)
            elif exc is not None:
                on_failure(item, f"{type(exc).__name__}: {exc}")
            else:
                on_result(item, future.result())
        for future in pending:
            if future.running():
                started.setdefault(future, now)
        late = [f for f, t in started.items() if f in pending and now - t > timeout_s]
        if late:
            for future in late:
                on_failure(pending.pop(future), "timeout")
            discard(executor)  # the only way to stop a stuck reader
            suspects.extend(pending.values())  # the rest went down with the pool: try them again
            pending.clear()
    return suspects
