"""Real app processes for the tests: started on a free loopback port, waited for, ended."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SMALL_MODEL = ["--context-window", "2048", "--threads", "2", "--max-answer-tokens", "64"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(home: Path, *args: str, port: int | None = None, env: dict | None = None,
              wait_s: float = 90) -> tuple[subprocess.Popen, str]:
    """``python app.py --port P *args`` with QUIRE_HOME=home; returns once /login answers (the process and URL)."""
    port = port or free_port()
    log = home / f"server-{port}.log"
    environment = {**os.environ, "QUIRE_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *SMALL_MODEL, *args], cwd=ROOT,
                            env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/login", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the app did not answer on port {port}:\n{log.read_text()[-3000:]}")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
