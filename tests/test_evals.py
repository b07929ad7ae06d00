"""The built-in evaluations: scoring on hand-computed cases, plots, storage and resume, and a real needle run."""

from __future__ import annotations

import argparse
import json

import pymupdf
import pytest

from core.errors import QuireError
from core.records import EvalRunRecord
from core.settings import Settings
from quire.api import Quire
from storage import eval_runs as store
from evals import cuad, needle, plots, scoring
from evals.leval import score_item
from evals.runner import Item, Runner


# -- F1, ROUGE, exact match --------------------------------------------------------------
def test_token_f1_hand_computed():
    # "the" is an article and is dropped: [cat, sat] vs [cat, sat, on, mat] -> P 1, R 1/2, F1 2/3
    assert scoring.token_f1("The cat sat.", "cat sat on mat") == pytest.approx(2 / 3)
    assert scoring.token_f1("dog", "cat") == 0.0
    assert scoring.token_f1("", "") == 1.0
    assert scoring.best_f1("cat sat", ["dog", "cat sat"]) == 1.0


def test_rouge_hand_computed():
    pred, ref = "the cat was found under the bed", "the cat was under the bed"
    # LCS = 6 words: P 6/7, R 1 -> F 12/13
    assert scoring.rouge_l(pred, ref) == pytest.approx(12 / 13)
    # unigrams: 6 of 7 / 6 of 6 -> 12/13; bigrams: 4 shared of 6 and 5 -> F 8/11
    assert scoring.rouge_n(pred, ref, 1) == pytest.approx(12 / 13)
    assert scoring.rouge_n(pred, ref, 2) == pytest.approx(8 / 11)
    assert scoring.rouge_l("", ref) == 0.0


def test_leval_metrics():
    assert score_item("B [S2]", "(B) Their subconscious knew", "exam")["score"] == 1.0
    assert score_item("The answer is (C).", "(B) Their subconscious knew", "exam")["score"] == 0.0
    assert score_item("The future of space tourism\nand more", "The future of space tourism", "exam")["score"] == 1.0
    assert score_item("Art and society", "The role of art in society", "exam")["score"] == 0.0
    rouge = score_item("the cat was found under the bed", "the cat was under the bed", "rouge")
    assert rouge["score"] == pytest.approx(12 / 13, abs=1e-4)
    assert rouge["rouge_geomean"] == pytest.approx(((12 / 13) ** 2 * 8 / 11) ** (1 / 3), abs=1e-4)


# -- needles -------------------------------------------------------------------------------------
def test_needle_score_single_multi_and_absent():
    assert scoring.needle_score("It is 7345120 [S3].", ["7345120"]) == 1.0
    assert scoring.needle_score("Figs and goat cheese.", ["Figs", "Prosciutto", "Goat cheese"]) == pytest.approx(2 / 3)
    assert scoring.needle_score("Figs.", ["fig"]) == 0.0  # whole words only
    assert scoring.needle_score("The documents do not mention it.", ["1111111"], absent=True) == 1.0
    assert scoring.needle_score("It is 1111111.", ["1111111"], absent=True) == 0.0
    assert scoring.needle_score("Not found, but maybe 1111111.", ["1111111"], absent=True) == 0.0
    assert not scoring.says_not_found("The best thing is to eat a sandwich.")


def test_needle_values_come_from_the_needles(corpus):
    config = needle.load_config(corpus / "haystack" / "needle_config.json")
    values, _ = needle.differing_parts(config["multi_needle_default_needles"])
    assert [v.lower() for v in values] == ["figs", "prosciutto", "goat cheese"]
    words = needle.key_words("The best place is Dolores Park on a sunny day.", "What is the best place?")
    assert words == ["dolores", "park", "sunny", "day"]


def test_ruler_variants_are_deterministic():
    p = needle.NeedleParams(variant="multivalue", seed=3)
    import random

    a, b = needle.make_spec(p, random.Random("x")), needle.make_spec(p, random.Random("x"))
    assert a == b and len(a.values) == 4 and all(v in " ".join(a.needles) for v in a.values)
    absent = needle.make_spec(needle.NeedleParams(variant="absent"), random.Random("y"))
    assert absent.absent and not any(absent.question.split(" for ")[1].split()[0] in n for n in absent.needles)


def test_plant_at_depths_with_a_word_counter():
    count = lambda s: len(s.split())  # noqa: E731 - a stand-in tokenizer: one token per word
    source = " ".join(f"Sentence number {i} is here." for i in range(200))
    top = needle.build_haystack(source, 100, ["NEEDLE one."], 0, count)
    assert top.startswith("NEEDLE one.") and count(top) <= 100
    end = needle.build_haystack(source, 100, ["NEEDLE one."], 100, count)
    assert end.endswith("NEEDLE one.")
    mid = needle.build_haystack(source, 100, ["NEEDLE one."], 50, count)
    before = mid.split("NEEDLE")[0]
    assert before.rstrip().endswith(".") and 40 <= count(before) <= 55
    two = needle.build_haystack(source, 100, ["NEEDLE a.", "NEEDLE b."], 50, count)
    assert two.index("NEEDLE a.") < two.index("NEEDLE b.")


# -- CUAD ------------------------------------------------------------------------------------------
def test_span_overlap_and_page_hit():
    span = "This Agreement shall be governed by the laws of the State of New York"
    assert scoring.span_overlap("... 12. Governing law. This Agreement shall be governed by the laws of ...", [span])
    assert not scoring.span_overlap("Either party may terminate this agreement on notice.", [span])
    assert scoring.span_overlap("Parties: ACME Corp and others", ["ACME Corp"])  # short span: the whole span
    assert scoring.page_hit([None, 3], [3, 4]) and not scoring.page_hit([1], [3])


def test_span_pages_in_a_pdf_built_here(tmp_path):
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "Section 1. Definitions apply.\nThe term shall begin on the Effective Date and")
    doc.new_page().insert_text((72, 72), "continue for five years unless terminated.\nSection 9. Governing law is Delaware.")
    path = tmp_path / "c.pdf"
    doc.save(path)
    pages = cuad.page_texts(path)
    assert cuad.span_pages("Governing law is  Delaware", pages) == [2]
    crossing = "The term shall begin on the Effective Date and continue for five years unless terminated"
    assert cuad.span_pages(crossing, pages) == [1, 2]
    assert cuad.span_pages("not in this contract at all", pages) == []


def test_echoed_instruction_is_not_a_decline():
    question = 'Highlight the "Governing Law" clause. If the contract has no such clause, say that it does not.'
    echo = "The contract Quote: If the contract has no such clause, say that it does not."
    assert scoring.strip_echo(echo, question) == "The contract Quote:"
    assert cuad.score_answer(echo, [], [], [], [], question)["f1"] == 0.0
    assert cuad.score_answer("There is no such clause.", [], [], [], [], question)["f1"] == 1.0


def test_cuad_item_scores():
    spans = ["governed by the laws of Delaware"]
    hit = cuad.score_answer('It is "governed by the laws of Delaware" [S4].', spans,
                            ["9. This Agreement is governed by the laws of Delaware."], [2], [2])
    assert hit["f1"] == 1.0 and hit["span_overlap"] and hit["page_hit"]
    declined = cuad.score_answer("The contract does not contain such a clause.", spans, [], [], [2])
    assert declined["f1"] == 0.0 and declined["declined"] and declined["page_hit"] is False
    absent_ok = cuad.score_answer("The contract does not contain such a clause.", [], [], [], [])
    assert absent_ok["f1"] == 1.0 and absent_ok["absent"] and absent_ok["span_overlap"] is None


# -- plots and storage -----------------------------------------------------------------------------
def test_heatmap_is_a_real_png(tmp_path):
    from PIL import Image

    path = plots.heatmap(tmp_path / "h.png", [[1.0, 0.5], [None, 0.0]], [0, 100], [1024, 2048], title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200


def _run(**kw) -> EvalRunRecord:
    values = dict(id=0, kind="needle", runtime="llamacpp", model="m.gguf", strategy="auto", window=2048,
                  corpus_sha="c" * 64, params={"lengths": [800], "depths": [50.0], "limit": 1})
    return EvalRunRecord(**(values | kw))


def test_store_round_trip(db, tmp_path):
    run_id = store.create_run(db, _run(out_dir=str(tmp_path)))
    store.save_item(db, run_id, "a", {"score": 1.0})
    store.save_item(db, run_id, "a", {"score": 0.0})  # a second store of a key keeps the first
    store.save_item(db, run_id, "b", {"score": 0.5})
    assert store.items(db, run_id) == {"a": {"score": 1.0}, "b": {"score": 0.5}}
    plots.heatmap(tmp_path / "heatmap.png", [[1.0]], [50], [800], title="t")
    store.finish_run(db, run_id, results={"grid": [[1.0]]}, summary={"score": 0.75, "plots": ["heatmap.png"]}, status="done")
    back = store.get_run(db, run_id)
    assert back.status == "done" and back.results == {"grid": [[1.0]]} and back.params["lengths"] == [800]
    listed = store.list_runs(db)
    assert listed[0].id == run_id and listed[0].plot() == str(tmp_path / "heatmap.png")
    assert listed[0].summary["score"] == 0.75 and listed[0].to_dict()["plot"] == listed[0].plot()


def test_unfinished_run_is_found_by_params_not_by_limit(db):
    run_id = store.create_run(db, _run(status="partial"))
    assert store.find_unfinished(db, _run(params={"lengths": [800], "depths": [50], "limit": 9})).id == run_id
    assert store.find_unfinished(db, _run(params={"lengths": [900], "depths": [50]})) is None
    assert store.find_unfinished(db, _run(strategy="focus")) is None


class CountingEval:
    """An evaluation without a model: each item's score is recorded, so skipped items show."""

    kind = "needle"

    def __init__(self) -> None:
        self.scored: list[str] = []

    def plan(self):
        return [Item(f"k{i}", f"g{i // 2}", {"i": i}) for i in range(4)]

    def fill(self, runner, session, items):
        runner.add_text(session, "doc.txt", "Some text.\n\nMore text.")

    def score(self, runner, session, item):
        self.scored.append(item.key)
        assert runner.q.documents(session)
        return {"score": 1.0, **item.data}


def test_resume_skips_stored_items(settings, tmp_path):
    with Quire(settings) as q:
        run = q.create_eval_run(_run(out_dir=str(tmp_path)))
        q.save_eval_item(run.id, "k0", {"score": 0.0, "i": 0})
        q.save_eval_item(run.id, "k2", {"score": 0.0, "i": 2})
        ev = CountingEval()
        seen = []
        results = Runner(q, run, progress=lambda d, t, label: seen.append((d, t))).execute(ev, ev.plan())
        assert ev.scored == ["k1", "k3"]
        assert list(results) == ["k0", "k1", "k2", "k3"] and results["k0"]["score"] == 0.0
        assert seen[0] == (2, 4) and seen[-1] == (4, 4)
        assert not [s for s in q.sessions() if s.name.startswith("eval-")]  # eval sessions are deleted


# -- end to end with the real CPU model --------------------------------------------------------------
def _parse(argv):
    from evals import cli as eval_cli

    common = argparse.ArgumentParser(add_help=False)
    Settings.add_arguments(common)
    parser = argparse.ArgumentParser(parents=[common])
    sub = parser.add_subparsers(dest="command")
    eval_cli.add_parser(sub, common)
    args = parser.parse_args(argv)
    return Settings.from_args(args), args


def test_needle_end_to_end_with_the_real_model(corpus, tmp_path):
    from evals import cli as eval_cli

    out = tmp_path / "out"
    settings, args = _parse(["eval", "needle", "--lengths", "800", "--depths", "50", "--context-window", "2048",
                             "--threads", "2", "--prefix-cache-mb", "0", "--strategies", "full", "--quiet",
                             "--out", str(out)])
    assert eval_cli.run(settings, args) == 0
    data = json.loads((out / "result.json").read_text())
    (item,) = data["items"].values()
    assert item["strategy_used"] == "full" and item["answer"]
    assert 600 < item["prompt_tokens"] + 64 <= 800  # the prompt fills an 800-token window, 64 kept for the answer
    assert 0.0 <= item["score"] <= 1.0 and item["ttft_s"] > 0
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    with Quire(settings) as q:
        (run,) = q.eval_runs()
        assert run.status == "done" and run.plot() == str(out / "heatmap.png") and run.window == 2048
        assert run.params["temperature"] == 0.0 and q.eval_items(run.id)


def test_unknown_strategy_is_recorded_per_item(corpus, tmp_path):
    from evals import cli as eval_cli

    settings, args = _parse(["eval", "needle", "--lengths", "400", "--depths", "0", "--context-window", "2048",
                             "--threads", "2", "--prefix-cache-mb", "0", "--quiet", "--out", str(tmp_path / "o")])
    assert eval_cli.run_one(settings, args, "no-such-strategy") == 1
    (item,) = json.loads((tmp_path / "o" / "result.json").read_text())["items"].values()
    assert "Unknown strategy" in item["error"] and item["score"] is None


def test_cuad_scores_the_matrix_like_the_other_strategies(corpus, tmp_path):
    from evals import cli as eval_cli

    out = tmp_path / "m"
    settings, args = _parse(["eval", "cuad", "--order", "size", "--contracts", "1", "--categories",
                             "Document Name;Governing Law", "--strategies", "matrix", "--context-window", "1024",
                             "--matrix-answer-tokens", "40", "--threads", "2", "--quiet", "--out", str(out)])
    assert eval_cli.run(settings, args) == 0
    data = json.loads((out / "result.json").read_text())
    items = data["items"]
    assert sorted(i["category"] for i in items.values()) == ["Document Name", "Governing Law"]
    for item in items.values():
        assert item["strategy_used"] == "matrix" and item["cell_status"] in ("verified", "quoted", "unverified", "not_found")
        assert 0.0 <= item["f1"] <= 1.0 and item["wall_s"] > 0
        assert item["absent"] == (item["category"] == "Governing Law")  # this contract names no governing law
        for c in item["citations"]:
            if c["status"] == "verified":
                assert c["quote"] and c["page"] == 1
    assert data["run"]["strategy"] == "matrix" and data["run"]["summary"]["items"] == 2
    with pytest.raises(QuireError, match="matrix strategy is scored on contracts only"):
        eval_cli.run(*_parse(["eval", "needle", "--strategies", "matrix", "--quiet"]))
