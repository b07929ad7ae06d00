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
