"""What the process tests look at: whether a process still runs."""

import os


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead, only not reaped yet
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
