"""Extraction in worker processes: both cores busy, the app safe from a reader that crashes or hangs.

A :class:`WorkerPool` is owned by whoever made it (``Quire`` makes one and its ``close()`` ends it);
its processes start on first use (spawn: no fork of a threaded server) and are reused, so only the
first batch pays for starting them.

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


def die_with_parent(parent: int) -> None:
    """Runs first in every worker and in the manager: when the process that started them is gone
    without shutting them down (SIGTERM or SIGKILL skip atexit), they go too instead of idling on
    as orphans of a few hundred MB each."""

    def watch() -> None:
        while os.getppid() == parent:  # a dead parent's children are handed to another process
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


class WorkerPool:
    """Extraction worker processes and the progress manager they report through, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._size = 0
        self._manager: SyncManager | None = None
        self._at_exit = False

    def pool(self, workers: int) -> ProcessPoolExecutor:
        """The pool, with at least ``workers`` processes (a bigger one is reused as it is)."""
        with self._lock:
            if self._pool is None or self._size < workers:
                if self._pool is not None:
                    self._pool.shutdown(wait=False, cancel_futures=True)
                self._stop_at_exit()
                self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=die_with_parent, initargs=(os.getpid(),))
                self._size = workers
            return self._pool

    def warm(self, workers: int, call: Callable[[object], object]) -> None:
        """Start the pool's workers now and have each run ``call`` (their imports), without waiting:
        they get ready while this process does its own work."""
        executor = self.pool(workers)
        try:
            for _ in range(workers):
                executor.submit(call, None)
        except BrokenProcessPool:
            self.discard(executor)

    def discard(self, broken: ProcessPoolExecutor) -> None:
        """Kill a pool's workers (a hung reader ignores politer requests) and forget it."""
        with self._lock:
            procs = list(getattr(broken, "_processes", {}).values())
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
            broken.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                proc.join(timeout=5)  # reap them: no zombies, and their peak memory reaches rusage
            if self._pool is broken:
                self._pool = None

    def progress_queue(self):
        """A queue worker processes can put progress events on (one manager process, started on first use)."""
        with self._lock:
            if self._manager is None:
                self._manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
                self._manager.start(die_with_parent, (os.getpid(),))
                self._stop_at_exit()
            return self._manager.Queue()

    def _stop_at_exit(self) -> None:
        """A backstop for an owner that never closes: the owner's close() is the way (called with the lock)."""
        if not self._at_exit:
            atexit.register(self.shutdown)
            self._at_exit = True

    def pids(self) -> list[int]:
        """The worker and manager processes running now."""
        workers = list(getattr(self._pool, "_processes", {}) or {}) if self._pool is not None else []
        manager = [self._manager._process.pid] if self._manager is not None else []
        return workers + manager

    def shutdown(self) -> None:
        """Stop the workers and the progress manager (the owner's close(); at exit if it never came)."""
        if self._pool is not None:
            self.discard(self._pool)
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = None
        if self._at_exit:
            atexit.unregister(self.shutdown)
            self._at_exit = False

    def run_all(
        self,
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
        suspects = self._pass(items, call, workers, timeout_s, on_result, on_failure, cancelled, on_cancel, on_tick)
        for item in suspects:  # alone, so a crash or a hang is pinned on the right file
            for again in self._pass([item], call, 1, timeout_s, on_result, on_failure, cancelled, on_cancel, on_tick):
                on_failure(again, "crashed")


    def _pass(self, items, call, workers, timeout_s, on_result, on_failure, cancelled, on_cancel, on_tick) -> list:
        executor = self.pool(workers)
        try:
            pending: dict[Future, object] = {executor.submit(call, item): item for item in items}
        except BrokenProcessPool:
            self.discard(executor)
            executor = self.pool(workers)
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
                self.discard(executor)  # the only way to stop a stuck reader
                suspects.extend(pending.values())  # the rest went down with the pool: try them again
                pending.clear()
        return suspects
