"""Jobs for tests/test_workers.py; a module of its own so spawned workers can import them."""

import os
import sys
import threading
import time


def job(item: str) -> str:
    if item == "crash":
        os._exit(3)  # what a segfaulting reader looks like from outside
    if item == "hang":
        time.sleep(60)
    if item == "error":
        raise ValueError("bad input")
    return item.upper()


def start_pool_and_wait(busy: bool) -> None:
    """Run as a script: start the pool and the progress manager from a thread that then ends (as a web
    request's would), print their pids, optionally set a worker rendering, then idle until killed."""
    from ingest.workers import WorkerPool

    workers = WorkerPool()
    starter = threading.Thread(target=lambda: (workers.warm(2, job_ready), workers.progress_queue()))
    starter.start()
    starter.join()
    while len(workers.pids()) < 3:  # two workers and the manager
        time.sleep(0.1)
    print(" ".join(str(p) for p in workers.pids()), flush=True)
    if busy:
        workers.pool(2).submit(render_forever, None)
    time.sleep(600)


def job_ready(_: object) -> bool:
    return True


def render_forever(_: object) -> None:
    """Render a page of 6,000 large filled rectangles again and again: each render is one MuPDF call of
    several seconds that holds the GIL, so no Python thread of this worker runs meanwhile."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "x")
    doc.update_stream(page.get_contents()[0], b"".join(b"%d %d 500 300 re f\n" % (i % 90, i * 7 % 500) for i in range(6000)))
    print("rendering", flush=True)
    while True:
        page.get_pixmap(dpi=150)


if __name__ == "__main__":
    start_pool_and_wait(busy="busy" in sys.argv[1:])
