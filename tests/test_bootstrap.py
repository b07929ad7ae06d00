"""Setup builds llama.cpp for the CPU and the OS, never with AMX, and proves the model runs in a child process."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import bootstrap  # noqa: E402

# /proc/cpuinfo flags of a Sapphire Rapids Xeon under a hypervisor (the machine where a native build segfaulted)
XEON_AMX = set("fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi1 bmi2 avx512f avx512dq avx512cd avx512bw "
               "avx512vl avx512vbmi avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8".split())


def _switches(args: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in args if a.startswith("-D"))


@pytest.fixture(autouse=True)
def _x86(monkeypatch):
    monkeypatch.delenv("QUIRE_LLAMA_CMAKE_ARGS", raising=False)
    monkeypatch.setattr(bootstrap.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(bootstrap.sys, "platform", "linux")


def test_the_cpu_level_takes_what_the_os_enables_and_never_amx():
    sw = _switches(bootstrap.cmake_args("cpu", XEON_AMX))
    assert sw["GGML_NATIVE"] == "OFF"
    assert sw["GGML_AVX512"] == sw["GGML_AVX512_VNNI"] == sw["GGML_AVX512_BF16"] == sw["GGML_AVX_VNNI"] == "ON"
    assert sw["GGML_AMX_TILE"] == sw["GGML_AMX_INT8"] == sw["GGML_AMX_BF16"] == "OFF"


def test_safer_levels_drop_avx512_then_everything():
    avx2 = _switches(bootstrap.cmake_args("avx2", XEON_AMX))
    assert avx2["GGML_AVX2"] == avx2["GGML_FMA"] == "ON"
    assert avx2["GGML_AVX512"] == avx2["GGML_AVX_VNNI"] == "OFF"
    base = _switches(bootstrap.cmake_args("baseline", XEON_AMX))
    assert {k for k, v in base.items() if v == "ON"} == set()


def test_a_feature_the_os_does_not_list_is_not_built():
    old = {"sse4_2", "avx"}  # a Sandy Bridge: no AVX2, so no FMA/AVX2 kernels that would die with SIGILL
    sw = _switches(bootstrap.cmake_args("cpu", old))
    assert sw["GGML_AVX"] == "ON" and sw["GGML_AVX2"] == "OFF" and sw["GGML_FMA"] == "OFF"


def test_this_machine_is_read_from_proc_cpuinfo():
    name, flags = bootstrap.cpu_info()
    assert name
    if Path("/proc/cpuinfo").exists():
        assert "sse2" in flags or "fp" in flags  # every x86-64 has SSE2; every aarch64 lists fp


def _fake_python(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} -c '{body}'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_a_check_that_segfaults_is_reported_by_signal(tmp_path, monkeypatch):
    monkeypatch.setattr(bootstrap, "PY", _fake_python(tmp_path, "import ctypes; ctypes.string_at(0)"))
    ok, said = bootstrap.check_model()
    assert not ok and said == "died with signal 11 (SIGSEGV)"


def test_a_check_that_hangs_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(bootstrap, "PY", _fake_python(tmp_path, "import time; time.sleep(60)"))
    monkeypatch.setattr(bootstrap, "CHECK_TIMEOUT_S", 1)
    ok, said = bootstrap.check_model()
    assert not ok and said == "hung for 1 s"


def test_the_real_check_runs_the_bundled_model(monkeypatch):
    monkeypatch.setattr(bootstrap, "PY", Path(sys.executable))
    ok, said = bootstrap.check_model()
    assert ok, said
    assert said.startswith("the bundled model answers")


def test_setup_recorded_a_checked_build_for_this_cpu():
    """The venv the suite runs in went through ensure_llama: its record names this CPU and a passing check."""
    record_path = Path(sys.prefix) / bootstrap.LLAMA_RECORD.name
    assert record_path.is_file(), f"{sys.prefix} was not set up by bootstrap.py (no {record_path.name})"
    record = json.loads(record_path.read_text())
    name, _ = bootstrap.cpu_info()
    assert record["ok"] is True and record["cpu"] == name
    assert "AMX" not in record["kernels"]
    assert Path(record["wheel"]).is_file() and str(bootstrap.WHEELS) in record["wheel"]  # ours, keyed by flags
