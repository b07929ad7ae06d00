"""Jobs for tests/test_workers.py; a module of its own so spawned workers can import them."""

import os
import time


def job(item: str) -> str:
    if item == "crash":
        os._exit(3)  # what a segfaulting reader looks like from outside
    if item == "hang":
        time.sleep(60)
    if item == "error":
        raise ValueError("bad input")
    return item.upper()


def start_pool_and_wait() -> None:
    """Run as a script: start the pool and the progress manager, print their pids, then idle until killed."""
    from ingest.workers import WorkerPool

    workers = WorkerPool()
    workers.warm(2, job_ready)
    workers.progress_queue()
    while len(workers.pids()) < 3:  # two workers and the manager
        time.sleep(0.1)
    print(" ".join(str(p) for p in workers.pids()), flush=True)
    time.sleep(600)


def job_ready(_: object) -> bool:
    return True


if __name__ == "__main__":
    start_pool_and_wait()
