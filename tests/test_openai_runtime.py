"""The OpenAI-compatible runtime against a real llama-cpp-python server running SmolLM2-135M."""

from __future__ import annotations

import importlib.util
import json
import math

import httpx
import pytest
from PIL import Image

from backend.base import Delta, GenerateOptions, Part, Prompt, Usage
from backend.openai_compat import (
    OpenAIRuntime,
    StreamState,
    TokenEstimator,
    build_messages,
    normalize_endpoint,
    read_chunk,
    sse_payloads,
)
from core.errors import BackendError, RuntimeUnavailable
from core.settings import Settings
from core.tokens import estimate_tokens
from tests.servers import free_port, start_llama_server, stop_app

SERVER_WINDOW = 2048
FACT_CONTEXT = "Notes from the archive.\nThe secret code word is PAPAYA.\nThe archive closes at noon.\n"
SYSTEM = "Answer from the document. Be brief."


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    if importlib.util.find_spec("llama_cpp.server") is None:
        pytest.fail("llama-cpp-python[server] is not installed: run `python3 bootstrap.py test`")
    proc, url = start_llama_server(tmp_path_factory.mktemp("llama-server"), window=SERVER_WINDOW)
    yield url
    stop_app(proc)


@pytest.fixture
def runtime(server, quire_home):
    rt = OpenAIRuntime(Settings(home=quire_home, endpoint=server + "/v1/", context_window=SERVER_WINDOW))
    with rt:
        yield rt


def _ask(rt, question: str, max_tokens: int = 24) -> tuple[str, Usage, list]:
    prompt = Prompt(system=SYSTEM, parts=[Part("text", text=FACT_CONTEXT), Part("text", text="\nQuestion: " + question)])
    events = list(rt.generate(prompt, GenerateOptions(max_tokens=max_tokens)))
    return "".join(e.text for e in events if isinstance(e, Delta)), events[-1], events


def _server_prompt_tokens(url: str, question: str) -> int:
    """What the server itself reports (non-streamed, where it does report usage)."""
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": FACT_CONTEXT + "\nQuestion: " + question}]
    body = {"messages": messages, "max_tokens": 1, "temperature": 0}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()["usage"]["prompt_tokens"]


# -- against the real server ---------------------------------------------------------
def test_streams_an_answer_with_the_planted_fact(runtime):
    answer, usage, events = _ask(runtime, "What is the secret code word?")
    assert "PAPAYA" in answer
    assert sum(isinstance(e, Delta) for e in events) > 1  # streamed in pieces, not in one block
    assert [type(e) for e in events].count(Usage) == 1 and isinstance(events[-1], Usage)


def test_usage_matches_what_the_server_counts(runtime, server):
    question = "When does the archive close?"
    _, usage, _ = _ask(runtime, question, max_tokens=8)
    assert usage.prompt_tokens == _server_prompt_tokens(server, question)
    assert 0 < usage.completion_tokens <= 8
    assert 0 < usage.ttft_s <= usage.total_s
    assert usage.finish_reason in ("stop", "length")
    # llama-cpp-python's server sends no usage in a stream, so the figures were counted
    assert usage.details["usage"] == "counted"


def test_second_question_claims_no_cache_the_server_did_not_report(runtime):
    """llama_cpp.server reports no cached tokens (no usage in streams, no timings.cache_n): the runtime
    must then claim none. Reading reported caches is tested on SGLang/vLLM/llama.cpp streams above."""
    _, first, _ = _ask(runtime, "What is the secret code word?", max_tokens=4)
    _, second, _ = _ask(runtime, "When does the archive close?", max_tokens=4)
    assert second.prompt_tokens > 0 and first.prompt_tokens > 0
    assert second.details["cache_reported"] is False
    assert second.cached_tokens == 0


def test_count_tokens_uses_the_servers_tokenizer(runtime, server):
    text = "Quire reads long documents: PDFs, code bases, and page images."
    direct = httpx.post(server + "/extras/tokenize/count", json={"input": text}, timeout=10).json()["count"]
    assert runtime.count_tokens(text) == direct
    assert runtime.count_tokens("") == 0


def test_template_overhead_is_learned_from_the_server(runtime):
    overhead = runtime.template_overhead()
    assert 0 < overhead < 32  # SmolLM2's ChatML wrapping of system + user is 14 tokens
    assert runtime.template_overhead() == overhead  # learned once


def test_model_and_window_discovery(server, quire_home):
    rt = OpenAIRuntime(Settings(home=quire_home, endpoint=server))
    with pytest.raises(BackendError, match="window"):  # a property never asks the server: start() does
        rt.context_window  # noqa: B018
    rt.start()
    assert rt.model_name.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")  # llama_cpp.server names it by path
    # llama_cpp.server reports no max_model_len and has no /props: the conservative fallback
    assert rt.context_window == OpenAIRuntime.DEFAULT_WINDOW
    told = OpenAIRuntime(Settings(home=quire_home, endpoint=server, context_window=SERVER_WINDOW))
    assert told.context_window == SERVER_WINDOW


def test_closed_port_is_a_clear_backend_error(quire_home):
    url = f"http://127.0.0.1:{free_port()}"
    rt = OpenAIRuntime(Settings(home=quire_home, endpoint=url, model="m"))
    prompt = Prompt(system="s", parts=[Part("text", text="hello")])
    with pytest.raises(BackendError) as err:
        list(rt.generate(prompt, GenerateOptions(max_tokens=4)))
    assert url in err.value.message and "Cannot reach" in err.value.message
    assert "--endpoint" in err.value.hint
    with pytest.raises(BackendError):
        rt.start()


def test_http_error_names_the_route(server, quire_home):
    rt = OpenAIRuntime(Settings(home=quire_home, endpoint=server + "/nothing-here", model="m"))
    with pytest.raises(BackendError) as err:
        list(rt.generate(Prompt(system="", parts=[Part("text", text="x")]), GenerateOptions(max_tokens=2)))
    assert "HTTP 404" in err.value.message and "/v1/chat/completions" in err.value.message


# -- request and stream shapes (no server needed) ---------------------------------------
def test_normalize_endpoint():
    assert normalize_endpoint("http://h:30000/v1/") == "http://h:30000"
    assert normalize_endpoint("h:8000") == "http://h:8000"
    assert normalize_endpoint("https://x.example/api/") == "https://x.example/api"
    with pytest.raises(RuntimeUnavailable):
        normalize_endpoint("  ")


def test_messages_keep_a_byte_identical_prefix_across_questions(tmp_path):
    page = tmp_path / "page-1.png"
    Image.new("RGB", (40, 30), "white").save(page)
    corpus = [Part("text", text="Chapter 1\n"), Part("image", image_path=page), Part("text", text="Chapter 2\n")]
    first = json.dumps(build_messages(Prompt(system=SYSTEM, parts=corpus + [Part("text", text="Q: one?")])))
    second = json.dumps(build_messages(Prompt(system=SYSTEM, parts=corpus + [Part("text", text="Q: two?")])))
    shared = len(first) - len('Q: one?"}]}]')
    assert first[:shared] == second[:shared]
    user = build_messages(Prompt(system=SYSTEM, parts=corpus))[1]["content"]
    assert [p["type"] for p in user] == ["text", "image_url", "text"]
    assert user[1]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    text_only = build_messages(Prompt(system="", parts=[Part("text", text="a"), Part("text", text="b")]))
    assert text_only == [{"role": "user", "content": "ab"}]


def test_sglang_style_stream_with_usage_and_cached_tokens():
    # The shape SGLang sends with --enable-cache-report and stream_options.include_usage.
    lines = [
        'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}',
        "",
        'data: {"choices":[{"index":0,"delta":{"content":"PAPA"},"finish_reason":null}]}',
        ": keep-alive",
        'data: {"choices":[{"index":0,"delta":{"content":"YA"},"finish_reason":"stop"}]}',
        'data: {"choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":3,"total_tokens":1203,'
        '"prompt_tokens_details":{"cached_tokens":1150}}}',
        "data: [DONE]",
        'data: {"choices":[{"delta":{"content":"after done"}}]}',
    ]
    state = StreamState()
    pieces = [read_chunk(chunk, state) for chunk in sse_payloads(lines)]
    assert "".join(pieces) == "PAPAYA" and state.text == "PAPAYA"
    assert (state.prompt_tokens, state.completion_tokens, state.cached_tokens) == (1200, 3, 1150)
    assert state.finish_reason == "stop"


def test_llama_cpp_timings_report_cached_tokens_and_errors_raise():
    state = StreamState()
    read_chunk({"choices": [], "timings": {"prompt_n": 12, "cache_n": 300}}, state)
    assert state.cached_tokens == 300
    with pytest.raises(BackendError, match="out of memory"):
        read_chunk({"error": {"message": "out of memory"}}, state)


def test_token_estimator_learns_the_ratio():
    est = TokenEstimator(margin=1.10)
    text = " ".join(["word"] * 100)
    raw = estimate_tokens(text)  # cl100k: 100
    assert est.count(text) == math.ceil(raw * 1.10)  # margin only
    est.observe(estimated=100, reported=150)  # this model's tokenizer splits finer
    assert est.ratio == 1.5
    assert est.count(text) == math.ceil(raw * 1.5 * 1.10)
    est.observe(estimated=0, reported=10)  # ignored: nothing to compare
    assert est.ratio == 1.5
