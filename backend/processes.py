"""Worker processes of the embedded runtimes (llama.cpp, SGLang): started alike, ended alike.

A worker runs ``python -m <module> --fd N`` in its own session and process group (so that
ending the group ends whatever the engine started too), talks to the app over an inherited
socket (``multiprocessing.connection.Connection``, JSON messages), and writes its output to
a log file whose tail goes into error messages.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def spawn(module: str, log_path: Path, *args: str) -> tuple[subprocess.Popen, Connection]:
    """Start ``python -m module --fd N *args`` as the leader of a new process group; its socket and process."""
    parent_sock, child_sock = socket.socketpair()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", module, "--fd", str(child_sock.fileno()), *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    try:
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                pass_fds=[child_sock.fileno()], start_new_session=True,
            )
    finally:
        child_sock.close()
    return proc, Connection(parent_sock.detach())


def exit_status(proc: subprocess.Popen | None) -> str:
    """How a worker ended, in words ("signal 11, SIGSEGV", "exit code 1"), once its status is known."""
    code = None
    if proc is not None:
        try:
            code = proc.wait(timeout=5.0)  # the socket closes a moment before the exit status exists
        except subprocess.TimeoutExpired:
            return "still running"
    if code is not None and code < 0:
        return f"signal {-code}" + (f", {signal.Signals(-code).name}" if -code in signal.valid_signals() else "")
    return f"exit code {code}"


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to every process of the group (a worker leads its own); gone already is fine."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
