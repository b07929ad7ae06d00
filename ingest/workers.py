"""Extraction in worker processes: both cores busy, the app safe from a reader that crashes or hangs.

A :class:`WorkerPool` is owned by whoever made it (``Quire`` makes one and its ``close()`` ends it);
its processes start on first use (spawn: no fork of a threaded server) and are reused, so only the
first batch pays for starting them.

A file that crashes its worker or runs past the time limit costs the pool:
the pool is replaced, and the other files that were in it are tried again
one at a time so that only the culprit is reported.

Each worker is bounded and dies with the app, by means the kernel enforces
whatever the worker is doing (a long MuPDF call holds the GIL, so no Python
thread of the worker could run): ``RLIMIT_AS`` caps its address space, so an
allocation past the bound fails and the file is reported as too large, and
``PR_SET_PDEATHSIG`` kills it when the app is gone, even after ``kill -9``.
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing
import os
import queue
import resource
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.managers import SyncManager
from typing import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# The bound is on address space, not on resident memory: a worker that has OCR'd one page maps 1.74 GB
# for 0.47 GB resident (2 cores; onnxruntime's reservations, and 64 MB of malloc arena and 8 MB of stack
# for each thread), one that has read a text page maps 0.56 GB for 0.17 GB. onnxruntime starts a thread
# per core, so the least a worker gets grows with the cores.
MIN_WORKER_MB = 3072
PER_CORE_MB = 160
APP_RESERVE_MB = 1024  # what the app itself, the model aside, is left when workers get their share


def worker_memory_mb(setting: int, workers: int) -> int:
    """The address space one worker may use, in MiB: ``--worker-memory-mb``, or when that is 0, an even
    share of three quarters of the machine's memory (less the app's reserve), never under the least a
    worker needs (MIN_WORKER_MB, or 1 GiB and PER_CORE_MB a core on machines of many cores)."""
    if setting > 0:
        return setting
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    least = max(MIN_WORKER_MB, 1024 + PER_CORE_MB * (os.cpu_count() or 1))
    return max(least, (total * 3 // 4 - APP_RESERVE_MB) // max(workers, 1))


def _start_pool(workers: int, memory_mb: int) -> ProcessPoolExecutor:
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_worker, initargs=(os.getpid(), memory_mb))
    for _ in range(workers):  # each submit starts one process, here in the spawner thread, until all are up
        executor.submit(os.getpid)
    return executor


class _Spawner:
    """The one thread that starts every worker and the progress manager.

    The kernel sends a child its parent-death signal when the *thread* that started it ends, not the
    process; a pool started from a short-lived thread (a web request's) would lose its workers with
    that thread. This thread lives as long as the app."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def call(self, fn: Callable[[], object]):
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="quire-worker-spawner", daemon=True)
                self._thread.start()
        done: Future = Future()
        self._jobs.put((fn, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            fn, done = self._jobs.get()
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)


_spawner = _Spawner()


def init_worker(parent: int, memory_mb: int = 0) -> None:
    """Runs first in every worker: bound its memory, and tie its life to the app's."""
    if memory_mb > 0:
        limit_memory(memory_mb)
    die_with_parent(parent)


def limit_memory(memory_mb: int) -> None:
    """Cap this process's address space: an allocation past it fails (MemoryError in Python, a malloc
    error in MuPDF) instead of growing the process, and the file being read is reported as too large."""
    limit = memory_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def die_with_parent(parent: int) -> None:
    """Runs first in every worker and in the manager: when the process that started them is gone
    without shutting them down (SIGTERM or SIGKILL skip atexit), they go too instead of reading on
    as orphans of a few hundred MB or more each.

    On Linux the kernel does it (``PR_SET_PDEATHSIG``), within milliseconds and whatever the process
    is doing; elsewhere a thread watches the parent, which cannot run while a C call holds the GIL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # the parent died before the signal was asked for
                os._exit(0)
            return

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
        self._memory_mb = 0
        self._manager: SyncManager | None = None
        self._at_exit = False

    def pool(self, workers: int, memory_mb: int = 0) -> ProcessPoolExecutor:
        """The pool, with at least ``workers`` processes (a bigger one is reused as it is), each bounded to
        ``memory_mb`` MiB of address space (0: unbounded)."""
        with self._lock:
            if self._pool is None or self._size < workers or self._memory_mb != memory_mb:
                if self._pool is not None:
                    self._pool.shutdown(wait=False, cancel_futures=True)
                self._stop_at_exit()
                self._pool = _spawner.call(lambda: _start_pool(workers, memory_mb))
                self._size, self._memory_mb = workers, memory_mb
            return self._pool

    def warm(self, workers: int, call: Callable[[object], object], memory_mb: int = 0) -> None:
        """Start the pool's workers now and have each run ``call`` (their imports), without waiting:
        they get ready while this process does its own work."""
        executor = self.pool(workers, memory_mb)
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
                manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
                _spawner.call(lambda: manager.start(die_with_parent, (os.getpid(),)))
                self._manager = manager
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
        memory_mb: int = 0,  # each worker's address-space bound; 0: unbounded
    ) -> None:
        """Run ``call`` over ``items`` in the pool; every item ends in exactly one callback."""
        suspects = self._pass(items, call, workers, memory_mb, timeout_s, on_result, on_failure, cancelled,
                              on_cancel, on_tick)
        for item in suspects:  # alone, so a crash or a hang is pinned on the right file
            for again in self._pass([item], call, 1, memory_mb, timeout_s, on_result, on_failure, cancelled,
                                    on_cancel, on_tick):
                on_failure(again, "crashed")


    def _pass(self, items, call, workers, memory_mb, timeout_s, on_result, on_failure, cancelled, on_cancel,
              on_tick) -> list:
        executor = self.pool(workers, memory_mb)
        try:
            pending: dict[Future, object] = {executor.submit(call, item): item for item in items}
        except BrokenProcessPool:
            self.discard(executor)
            executor = self.pool(workers, memory_mb)
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
