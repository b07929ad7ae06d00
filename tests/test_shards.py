"""Shards whose boundaries stay put, and their KV states prepared once and loaded for every later question.

The planning tests count with SmolLM2's own tokenizer (its vocabulary only: no model runs); the warming
tests run the real model on the two shortest CUAD contracts at a 1K window."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest

from backend import citations, shards
from backend.clauses import CUAD_CATEGORIES
from backend.context import TokenCounter
from backend.llamacpp import LlamaCppRuntime
from backend.matrix import Field, extraction_prompt
from backend.sweep import map_part
from quire.api import Answer, Quire

CUAD_TXT = ("contracts", "cuad", "txt")
SMALL = ("PRECIGEN,INC_01_22_2020-EX-99.1-JOINT FILING AGREEMENT.PDF",
         "BellringBrandsInc_20190920_S-1_EX-10.12_11817081_EX-10.12_Manufacturing Agreement4.pdf")


@pytest.fixture
def vocab_runtime(settings):
    rt = LlamaCppRuntime(settings.replace(context_window=1024))  # counts tokens; the model is never loaded
    yield rt
    rt.shutdown()


def texts(corpus: Path, n: int) -> list[Path]:
    folder = corpus.joinpath(*CUAD_TXT)
    return sorted(folder.glob("*.txt"), key=lambda p: p.stat().st_size)[:n]


def prefixes(plan: list[shards.Shard], rt) -> list[str]:
    return [rt.prefix_key(s.prefix()) for s in plan]


def test_adding_a_document_leaves_the_other_shards_as_they_were(q, corpus, vocab_runtime):
    rt = vocab_runtime
    counter, limit = TokenCounter(rt), shards.budget(rt, 160)
    files = texts(corpus, 7)  # three one-shard contracts (packed together) and four of several shards
    q.ingest("s", files[:6])
    before = shards.plan(q.segments("s"), counter, limit)
    q.ingest("s", files[6:])
    after = shards.plan(q.segments("s"), counter, limit)
    assert len(after) > len(before)
    assert prefixes(after, rt)[: len(before)] == prefixes(before, rt)  # the old ones stay, content-keyed alike
    # every shard holds a window's worth or less, and a whole document or part of one, never a document split
    # across a packed group
    for shard in after:
        assert sum(counter(r, s) for r, s in shard.refs().items()) <= limit
        assert len(shard.document_ids) == 1 or all(
            len(shards.document_shards([s for s in q.segments("s") if s.document_id == d], counter, limit)) == 1
            for d in shard.document_ids)


def test_removing_a_document_moves_only_its_own_group(q, corpus, vocab_runtime):
    rt = vocab_runtime
    counter, limit = TokenCounter(rt), shards.budget(rt, 160)
    q.ingest("s", texts(corpus, 8))
    before = shards.plan(q.segments("s"), counter, limit)
    long_docs = [s.document_ids[0] for s in before if len(s.document_ids) == 1]
    gone = long_docs[0]
    q.remove_document("s", gone)
    after = shards.plan(q.segments("s"), counter, limit)
    kept = [k for s, k in zip(before, prefixes(before, rt)) if gone not in s.document_ids]
    assert kept == prefixes(after, rt)


def test_the_sweep_and_the_matrix_read_the_same_shards_of_a_long_document(q, corpus, vocab_runtime):
    rt = vocab_runtime
    counter, limit = TokenCounter(rt), shards.budget(rt, 160)
    q.ingest("s", texts(corpus, 5)[-1:])
    segments = q.segments("s")
    plan = shards.plan(segments, counter, limit)
    own = shards.document_shards(segments, counter, limit)
    assert len(plan) > 1 and prefixes(plan, rt) == prefixes(own, rt)
    longest = max(CUAD_CATEGORIES, key=lambda c: len(c.description))
    question = "Which state's law governs each agreement, and how much notice ends it?"
    for shard in plan:  # the question parts differ; the prefix (the state a later question loads) is one
        sweep, cell = shard.prompt(map_part(question)), extraction_prompt(shard, Field.of(longest.name))
        assert rt.prefix_key(sweep) == rt.prefix_key(cell) == rt.prefix_key(shard.prefix())
        assert rt.count_prompt(cell) + 160 <= rt.context_window  # the longest CUAD field fits every shard
        assert rt.count_prompt(sweep) + 160 <= rt.context_window
        warmed, passages = rt.state_tokens(shard.prefix()), rt.prefix_tokens(shard.prefix())
        # what warming computes is what a sweep question starts with, instructions and all (the line that ends
        # them may be cut into tokens differently before the question: one token recomputed) ...
        assert shared(warmed, rt.tokenize_prompt(sweep)) >= len(warmed) - 2
        # ... and a matrix field its passages and the end of the data block (its instructions follow the field)
        assert shared(warmed, rt.tokenize_prompt(cell)) >= len(passages) + rt.count_tokens(shards.CLOSE) - 2
        assert len(warmed) > len(passages) + rt.count_tokens(shards.INSTRUCTIONS)


def shared(a: list[int], b: list[int]) -> int:
    """How many leading tokens two token lists have in common."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def test_findings_get_the_session_wide_ids():
    ids = {"S1": "S40", "S2": "S41"}
    assert citations.relabel('- fee is 5% [S2] "five percent" [S1, S2]', ids) == '- fee is 5% [S41] "five percent" [S40, S41]'
    assert citations.relabel("no ids here [S9]", ids) == "no ids here [S9]"


# -- with the real model ------------------------------------------------------------------------------
@pytest.fixture
def wq(settings):
    quire = Quire(settings.replace(context_window=1024, workers=1, sweep_answer_tokens=48, max_answer_tokens=48,
                                   matrix_answer_tokens=40))
    yield quire
    quire.close()


def test_warmed_shards_are_loaded_by_the_first_sweep_and_the_matrix(wq, corpus):
    wq.ingest("w", [corpus / "contracts" / "cuad" / "pdf" / name for name in SMALL])
    first = wq.warm("w", wait=True)
    assert first.state == "done" and first.total >= 2 and first.computed == first.total
    again = wq.warm("w", wait=True)
    assert again.state == "done" and again.computed == 0 and again.done == again.total  # all kept on disk
    states = list((wq.settings.cache_dir / "llama-states").glob("*.llstate"))
    assert len(states) >= first.total
    wq.answer("w", "Who are the parties?", strategy="focus")  # leaves the system text and first passages in memory
    answer = [e for e in wq.ask("w", "List every party named in each agreement.", strategy="sweep")
              if isinstance(e, Answer)][0]
    passes = answer.turn.meta["map_passes"]
    assert len(passes) >= 2
    for p in passes:  # each part's passages came from its state: only the question part was computed
        assert p["prompt_tokens"] - p["cached_tokens"] < 40, passes  # the question alone
    assert answer.turn.meta["shards"] == len(passes)


def test_a_question_interrupts_warming_and_warming_finishes_after(wq, corpus):
    wq.ingest("w", [corpus / "contracts" / "cuad" / "pdf" / name for name in SMALL])
    wq.warm("w")  # in the background
    with closing(wq.ask("w", "Who are the parties?", strategy="focus")) as events:
        answer = [e for e in events if isinstance(e, Answer)][0]
    assert answer.turn.answer
    done = wq.warm("w", wait=True)  # the rest, or nothing if it had finished: either way every shard is kept
    assert done.state == "done" and done.done == done.total


def test_a_q8_0_kv_cache_keeps_states_at_about_half_the_size(settings, corpus):
    sizes = {}
    for kind in ("f16", "q8_0"):
        with Quire(settings.replace(home=settings.home / kind, context_window=1024, workers=1,
                                    kv_cache_type=kind)) as q:
            q.ingest("k", [corpus / "contracts" / "cuad" / "pdf" / SMALL[1]])
            w = q.warm("k", wait=True)
            assert w.state == "done" and w.computed >= 1
            states = list((q.settings.cache_dir / "llama-states").glob("*.llstate"))
            sizes[kind] = sum(p.stat().st_size for p in states)
            answer = [e for e in q.ask("k", "Who are the parties?", strategy="sweep") if isinstance(e, Answer)][0]
            assert answer.turn.answer.strip()  # the quantised cache still answers
    assert 0.4 < sizes["q8_0"] / sizes["f16"] < 0.65, sizes


def test_cutting_a_long_passage_leaves_the_estimate_scale_alone(q, vocab_runtime, tmp_path):
    rt = vocab_runtime
    q.ingest("long", [_long_text(tmp_path)])
    segments = q.segments("long")
    whole = TokenCounter(rt)
    for i, s in enumerate(segments):
        whole(f"S{i + 1}", s)
    planned = TokenCounter(rt)
    limit = shards.budget(rt, 160)
    plan = shards.plan(segments, planned, limit)
    assert sum(len(s.passages) for s in plan) > len(segments)  # a passage was cut in pieces
    assert abs(planned.scale() - whole.scale()) < 0.1 * whole.scale()


def _long_text(folder: Path) -> Path:
    path = folder / "one-paragraph.txt"
    path.write_text(" ".join(f"Clause {n} binds the parties to term {n * 7} of the schedule." for n in range(600)))
    return path
