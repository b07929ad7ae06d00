"""The SGLang runtime: its worker process and protocol for real (with a fake engine), the real engine on a GPU.

``FakeEngine`` below stands in for ``sglang.Engine`` inside the real worker process
(through the worker's ``--engine-factory`` seam): it streams SGLang-shaped chunks
(cumulative ``text``, ``meta_info`` with ``prompt_tokens``, ``completion_tokens``,
``cached_tokens`` from a longest-common-prefix "radix cache", ``finish_reason`` dicts)
and starts a helper process the way SGLang starts its scheduler, so shutdown is
checked to leave no process behind.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from backend import presets
from backend.base import Delta, GenerateOptions, Part, Prompt, Usage
from backend.sglang_runtime import SGLangRuntime, server_args
from core.errors import BackendError, RuntimeUnavailable
from core.settings import Settings

FAKE = "tests.test_sglang_runtime:FakeEngine"


# -- the fake engine (runs inside the worker process) -------------------------------------
class FakeEngine:
    """Words are tokens; the answer repeats the line of the prompt that holds ``FACT:``."""

    context_length = 4096

    def __init__(self, config: dict) -> None:
        args = config["server_args"]
        if args["model_path"] == "fail-to-load":
            print("CUDA out of memory while loading weights (fake)", file=sys.stderr, flush=True)
            raise RuntimeError("could not load fail-to-load")
        self.last_prompt: list[int] = []
        self.helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        self.context_length = args.get("context_length", FakeEngine.context_length)

    def encode(self, text: str) -> list[int]:
        return [hash(w) % 50000 for w in text.split()]

    def render(self, system: str, parts: list[dict]) -> str:
        body = " ".join("<image>" if p["kind"] == "image" else p["text"] for p in parts)
        return f"<sys> {system} </sys> <user> {body} </user> <assistant>"

    def stream(self, prompt: str, image_data: list[str], sampling_params: dict, rid: str):
        ids = self.encode(prompt)
        cached = 0
        for a, b in zip(self.last_prompt, ids):
            if a != b:
                break
            cached += 1
        self.last_prompt = ids
        if "CRASH" in prompt:
            os._exit(3)
        if "RAISE" in prompt:
            raise ValueError("fake engine refused the prompt")
        fact = next((line for line in prompt.split("\n") if "FACT:" in line), "no fact")
        words = (fact.split("FACT:")[-1].split("</user>")[0] + f" images={len(image_data)}").split()
        limit = sampling_params["max_new_tokens"]
        text = ""
        for i, word in enumerate(words[:limit], 1):
            if "SLOW" in prompt:
                time.sleep(0.2)
            text += (" " if text else "") + word
            done = i == min(len(words), limit)
            finish = ({"type": "length", "length": limit} if i == limit else {"type": "stop", "matched": 2}) if done else None
            meta = {"prompt_tokens": len(ids), "completion_tokens": i, "cached_tokens": cached, "finish_reason": finish}
            if done:
                meta["e2e_latency"] = 0.01
            yield {"text": text, "output_ids": list(range(i)), "meta_info": meta}

    def abort(self, rid: str) -> None:
        pass

    def shutdown(self) -> None:
        pass  # leaves its helper running on purpose: the runtime must end the whole process group


# -- helpers ------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for init to reap it is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().split(")")[-1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def _prompt(question: str, fact: str = "FACT: the vault code is 7421", images: list[Path] = ()) -> Prompt:
    parts = [Part("text", text="Report, page one.\n" + fact + "\nMore text.\n")]
    parts += [Part("image", image_path=p) for p in images]
    parts.append(Part("text", text="\nQuestion: " + question))
    return Prompt(system="Answer from the document.", parts=parts)


def _run(rt, prompt, max_tokens=16):
    events = list(rt.generate(prompt, GenerateOptions(max_tokens=max_tokens)))
    return "".join(e.text for e in events if isinstance(e, Delta)), events


@pytest.fixture
def fake_settings(quire_home) -> Settings:
    return Settings(home=quire_home, model="fake/model")


@pytest.fixture
def runtime(fake_settings):
    rt = SGLangRuntime(fake_settings, engine_factory=FAKE)
    with rt:
        yield rt


# -- availability ------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="sglang is installed here")
def test_missing_sglang_is_runtime_unavailable(fake_settings):
    with pytest.raises(RuntimeUnavailable) as err:
        SGLangRuntime(fake_settings)
    assert "sglang" in err.value.message and "not installed" in err.value.message
    assert "CUDA GPU" in err.value.hint and "--runtime llamacpp" in err.value.hint and "--endpoint" in err.value.hint


# -- ServerArgs from settings and presets -------------------------------------------------------
def test_server_args_from_plain_settings(quire_home):
    s = Settings(home=quire_home, model="/models/qwen", tp_size=2, dp_size=2, chunked_prefill_size=8192,
                 seed=7, log_level="info")
    assert server_args(s) == {
        "model_path": "/models/qwen", "tp_size": 2, "dp_size": 2, "random_seed": 7, "log_level": "info",
        "chunked_prefill_size": 8192,
    }


def test_shards_outlive_gpu_memory_with_the_hierarchical_cache_and_its_storage_tier(quire_home):
    s = Settings(home=quire_home, model="/models/qwen", enable_hierarchical_cache=True, hicache_storage_backend="file")
    args = server_args(s)
    assert args["enable_hierarchical_cache"] is True and args["hicache_storage_backend"] == "file"
    assert "hicache_storage_backend" not in server_args(Settings(home=quire_home, model="/m", hicache_storage_backend="file"))


def test_server_args_from_the_llama4_preset(quire_home):
    s = Settings(home=quire_home, model="meta-llama/Llama-4-Scout-17B-16E-Instruct")
    preset = presets.resolve(s)
    assert preset is presets.PRESETS["llama4-scout"]
    args = server_args(s, preset)
    assert args["chat_template"] == "llama-4" and args["enable_multimodal"] is True
    assert args["context_length"] == 1_000_000 and args["tp_size"] == 8
    assert "chunked_prefill_size" not in args  # 0 keeps SGLang's default


def test_explicit_settings_beat_the_preset(quire_home):
    s = Settings(home=quire_home, model="/data/Llama-4-Scout-17B-16E-Instruct", tp_size=4, context_window=262_144,
                 chat_template="my-template")
    args = server_args(s, presets.resolve(s))
    assert (args["tp_size"], args["context_length"], args["chat_template"]) == (4, 262_144, "my-template")
    assert args["model_path"] == "/data/Llama-4-Scout-17B-16E-Instruct"


def test_no_model_is_a_clear_error(quire_home):
    with pytest.raises(BackendError, match="needs a model"):
        server_args(Settings(home=quire_home))


def test_preset_image_costs():
    scout = presets.get("llama4-scout")
    assert scout.image_tokens(336, 336) == 147 and scout.image_tokens(935, 1210) == 1887
    assert presets.get("qwen2.5-vl-7b").image_tokens(1000, 700) == 902
    assert presets.for_model("Qwen/Qwen2.5-VL-7B-Instruct").name == "qwen2.5-vl-7b"
    assert presets.for_model("some/other-model") is None
    with pytest.raises(KeyError, match="known"):
        presets.get("nope")


# -- the worker process, for real ---------------------------------------------------------------
def test_streams_deltas_and_one_usage(runtime):
    answer, events = _run(runtime, _prompt("What is the vault code?"))
    assert answer == "the vault code is 7421 images=0"
    deltas = [e for e in events if isinstance(e, Delta)]
    assert len(deltas) == 6  # one per streamed chunk, cumulative text turned into pieces
    usage = events[-1]
    assert isinstance(usage, Usage) and sum(isinstance(e, Usage) for e in events) == 1
    rendered = runtime.render(_prompt("What is the vault code?"))
    assert usage.prompt_tokens == len(rendered.split())
    assert usage.completion_tokens == 6 and usage.finish_reason == "stop"
    assert 0 < usage.ttft_s <= usage.total_s and usage.details["engine_e2e_latency_s"] == 0.01


def test_second_question_reports_the_cached_prefix(runtime):
    _, first = _run(runtime, _prompt("What is the vault code?"))
    _, second = _run(runtime, _prompt("Who wrote the report?"))
    assert first[-1].cached_tokens == 0
    shared = len(runtime.render(_prompt("")).split()) - 3  # everything before the question's words
    assert second[-1].cached_tokens >= shared > 0


def test_length_limit_and_images(runtime, tmp_path):
    page = tmp_path / "page.png"
    Image.new("RGB", (64, 48), "white").save(page)
    answer, events = _run(runtime, _prompt("Code?", images=[page, page]), max_tokens=3)
    assert answer == "the vault code" and events[-1].finish_reason == "length"
    answer, _ = _run(runtime, _prompt("Code?", images=[page, page]), max_tokens=50)
    assert answer.endswith("images=2")  # the worker passed both image paths to the engine


def test_count_tokens_context_and_overhead(runtime):
    assert runtime.count_tokens("one two three") == 3 and runtime.count_tokens("") == 0
    assert runtime.context_window == 4096  # what the engine reported
    assert runtime.template_overhead() == len("<sys> </sys> <user> </user> <assistant>".split()) + 1


def test_the_window_is_not_known_before_start_and_asking_starts_nothing(fake_settings):
    rt = SGLangRuntime(fake_settings, engine_factory=FAKE)
    with pytest.raises(BackendError, match="window"):
        rt.context_window  # noqa: B018 - a property: it must not spawn the worker
    assert rt.worker_pid is None


def test_engine_error_is_reported_and_the_worker_keeps_serving(runtime):
    with pytest.raises(BackendError, match="fake engine refused the prompt"):
        _run(runtime, _prompt("RAISE please"))
    answer, _ = _run(runtime, _prompt("What is the vault code?"))
    assert "7421" in answer


def test_abandoned_stream_is_cancelled(runtime):
    stream = runtime.generate(_prompt("SLOW answer"), GenerateOptions(max_tokens=16))
    assert isinstance(next(stream), Delta)
    stream.close()  # the reader stops early
    answer, _ = _run(runtime, _prompt("What is the vault code?"))
    assert answer.startswith("the vault code")


def test_worker_crash_is_a_backend_error_and_leaves_nothing(fake_settings):
    rt = SGLangRuntime(fake_settings, engine_factory=FAKE).start()
    pgid = rt.worker_pid
    assert len(_group_pids(pgid)) == 2  # the worker and the engine's helper
    with pytest.raises(BackendError) as err:
        _run(rt, _prompt("CRASH now"))
    assert "exited (exit code 3)" in err.value.message and "sglang-worker.log" in err.value.hint
    assert _group_pids(pgid) == []
    rt.shutdown()  # harmless after a crash


def test_start_failure_shows_the_workers_last_lines(quire_home):
    rt = SGLangRuntime(Settings(home=quire_home, model="fail-to-load"), engine_factory=FAKE)
    with pytest.raises(BackendError) as err:
        rt.start()
    assert "could not load fail-to-load" in err.value.message
    assert "CUDA out of memory while loading weights (fake)" in err.value.hint
    assert rt.worker_pid is None


def test_shutdown_ends_the_whole_process_group(fake_settings):
    rt = SGLangRuntime(fake_settings, engine_factory=FAKE).start()
    pgid = rt.worker_pid
    members = _group_pids(pgid)
    assert pgid in members and len(members) == 2
    rt.shutdown()
    assert not any(_alive(pid) for pid in members)
    rt.shutdown()  # idempotent


def test_runtime_restarts_after_shutdown(fake_settings):
    rt = SGLangRuntime(fake_settings, engine_factory=FAKE)
    with rt:
        first = rt.worker_pid
    with rt:
        assert rt.worker_pid not in (None, first)
        assert "7421" in _run(rt, _prompt("code?"))[0]


# -- the real engine (GPU) ------------------------------------------------------------------------
def _gpu_missing() -> str:
    """Why the real engine cannot run on this machine ('' where it can)."""
    if importlib.util.find_spec("sglang") is None or importlib.util.find_spec("torch") is None:
        return "sglang and torch are not installed"
    import torch

    return "" if torch.cuda.is_available() else "no CUDA GPU"


GPU_MISSING = _gpu_missing()
needs_gpu = pytest.mark.skipif(bool(GPU_MISSING), reason=GPU_MISSING or "a CUDA GPU and sglang are here")


@pytest.fixture(scope="module")
def gpu_runtime(tmp_path_factory):
    model = os.environ.get("QUIRE_SGLANG_TEST_MODEL", "")
    if not model:  # sglang and a GPU are here: a test run without a model is a setup error, not a pass
        pytest.fail("set QUIRE_SGLANG_TEST_MODEL to a small model path or hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct)")
    settings = Settings(home=tmp_path_factory.mktemp("quire-gpu"), model=model, context_window=8192,
                        log_level="warning")
    rt = SGLangRuntime(settings)
    rt.start()
    yield rt
    rt.shutdown()


@pytest.mark.gpu
@needs_gpu
def test_gpu_answers_and_reuses_the_prefix(gpu_runtime):
    filler = "".join(f"Line {i}: nothing of note happened on this day.\n" for i in range(150))
    corpus = filler + "The vault code is 7421.\n" + filler
    def ask(q):
        p = Prompt(system="Answer from the document. Be brief.",
                   parts=[Part("text", text=corpus), Part("text", text="\nQuestion: " + q)])
        return _run(gpu_runtime, p, max_tokens=24)
    answer, events = ask("What is the vault code?")
    assert "7421" in answer
    usage = events[-1]
    assert usage.prompt_tokens > 1000 and usage.completion_tokens > 0
    _, again = ask("What is the vault code? Answer with digits only.")
    assert again[-1].cached_tokens >= usage.prompt_tokens - 40  # the corpus prefix came from the radix cache
    assert gpu_runtime.count_tokens("hello world") in (2, 3)


@pytest.mark.gpu
@needs_gpu
def test_gpu_shutdown_frees_the_processes(gpu_runtime):
    pgid = gpu_runtime.worker_pid
    members = _group_pids(pgid)
    assert len(members) >= 2  # worker + SGLang scheduler/detokenizer
    gpu_runtime.shutdown()
    assert not any(_alive(pid) for pid in members)
