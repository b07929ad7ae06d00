"""Needle in a haystack, with RULER-style variants.

A needle (a sentence with a fact) is planted at a grid of depths (0-100% of
the haystack, at the sentence boundary before that point) in haystacks of a
grid of context lengths, and the model is asked the needle's question through
the app's own pipeline (ingest, context strategy, citations).

Context length. A haystack of length L is sized to fill a window of L tokens
exactly the way the app fills one: the document part (passages with their
``[S1] name`` headers, counted with the runtime's own tokenizer) gets
``0.98 * (L - answer reserve - fixed prompt cost)`` tokens, where the fixed
cost is the system prompt, the question and the chat template, and the answer
reserve is ``--answer-tokens`` (64 by default). So a "4K" item sends about 4K
tokens of prompt+answer room, and an L equal to the window just fits with the
``full`` strategy; lengths beyond the window exercise ``focus`` and ``sweep``.

Variants:
- ``single``: the configured needle and question (../shared/corpus/haystack/needle_config.json).
- ``multi``: several needles (the config's multi-needle set), one question, every value expected.
- ``multikey``: four "special magic number" needles with different keys; the question names one.
- ``multivalue``: four needles with the same key and different values; all are expected.
- ``absent``: three magic-number needles with other keys; the question asks for a key that is
  not there, and the right answer is "not found".
Further needles go evenly between the depth and the end, as upstream's multi-needle test does.

Metric (no judge model here, unlike upstream's 1-10 GPT-4 rubric): the share of
expected values the answer contains after SQuAD normalisation (whole words).
The single needle's values are its content words that the question does not
already contain (so the score is partial credit for how much of the fact came
back); the multi variants' values are the parts in which the needles differ
(the ingredients, the magic numbers). The absent variant scores 1 when the
answer declines (not found / the documents do not say) and names no decoy
value, else 0. ``hit`` is ``score >= 0.5``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from backend.context import SYSTEM_PROMPT, TokenCounter, question_part, ref_id
from core.records import EvalRunRecord
from evals import plots, scoring
from evals.runner import Item, Runner, sha_files, sha_texts, timings, write_json, write_table
from quire.api import Quire

VARIANTS = ("single", "multi", "multikey", "multivalue", "absent")
DOC_NAME = "haystack.txt"

_STOP = frozenset(
    "a an the and or of to in on at for with by from is are was were be been it its this that what which who how "
    "why when where do does did i you we they he she one".split()
)
_ADJ = (
    "amber brave calm dusty eager fuzzy gentle hollow icy jolly keen lucky misty noble odd proud quiet rapid "
    "silver tidy urban vivid witty young zesty".split()
)
_NOUN = (
    "anchor badger canyon dolphin ember falcon glacier harbor island jungle kettle lantern meadow nectar orchard "
    "pepper quarry river saddle tunnel violin walnut yacht zephyr".split()
)


@dataclass
class NeedleSpec:
    needles: list[str]
    question: str
    values: list[str]
    absent: bool = False


@dataclass
class NeedleParams:
    variant: str = "single"
    lengths: list[int] = field(default_factory=list)
    depths: list[float] = field(default_factory=lambda: [0, 25, 50, 75, 100])
    config: dict[str, Any] = field(default_factory=dict)
    needle: str = ""  # overrides the configured single needle
    question: str = ""
    values: list[str] = field(default_factory=list)
    seed: int = 0


# -- needles ---------------------------------------------------------------------------
def key_words(needle: str, question: str) -> list[str]:
    """The needle's content words the question does not contain: what a right answer must bring back."""
    asked = set(scoring.words(question))
    out = [w for w in scoring.words(needle) if w not in asked and w not in _STOP]
    return list(dict.fromkeys(out))


def differing_parts(needles: Sequence[str]) -> tuple[list[str], str]:
    """The parts in which the needles differ (common leading and trailing words removed), and the common tail."""
    split = [n.split() for n in needles]
    lead = 0
    while all(len(s) > lead for s in split) and len({s[lead].lower() for s in split}) == 1:
        lead += 1
    trail = 0
    while all(len(s) > lead + trail for s in split) and len({s[-1 - trail].lower() for s in split}) == 1:
        trail += 1
    values = [" ".join(_trim_stop(s[lead : len(s) - trail])).strip(" ,.;:") for s in split]
    tail = " ".join(split[0][len(split[0]) - trail :]) if trail else ""
    return values, tail


def _trim_stop(ws: list[str]) -> list[str]:
    """Without leading or trailing function words ("Figs are" -> "Figs")."""
    while ws and ws[-1].lower().strip(",.;:") in _STOP:
        ws = ws[:-1]
    while ws and ws[0].lower().strip(",.;:") in _STOP:
        ws = ws[1:]
    return ws


def make_spec(p: NeedleParams, rng: random.Random) -> NeedleSpec:
    single = p.config.get("single_needle", {})
    if p.variant == "single":
        needle = p.needle or single.get("needle", "")
        question = p.question or single.get("retrieval_question", "")
        return NeedleSpec([needle.strip()], question, p.values or key_words(needle, question))
    if p.variant == "multi":
        needles = [n.strip() for n in p.config.get("multi_needle_default_needles", [])]
        values, tail = differing_parts(needles)
        question = p.question or p.config.get("multi_needle_question") or (
            f'Which things does the text describe as "{tail.rstrip(".")}"? Name every one.'
        )
        return NeedleSpec(needles, question, p.values or values)
    keys = _keys(rng, 5)
    numbers = [str(rng.randint(1_000_000, 9_999_999)) for _ in range(4)]
    fact = "One of the special magic numbers for {} is: {}."
    if p.variant == "multikey":
        return NeedleSpec([fact.format(k, v) for k, v in zip(keys, numbers)],
                          f"What is the special magic number for {keys[0]} mentioned in the provided text?", [numbers[0]])
    if p.variant == "multivalue":
        return NeedleSpec([fact.format(keys[0], v) for v in numbers],
                          f"What are all the special magic numbers for {keys[0]} mentioned in the provided text?", numbers)
    if p.variant == "absent":
        return NeedleSpec([fact.format(k, v) for k, v in zip(keys[1:4], numbers)],
                          f"What is the special magic number for {keys[0]} mentioned in the provided text?",
                          numbers[:3], absent=True)
    raise ValueError(f"unknown needle variant {p.variant!r}; choose one of {', '.join(VARIANTS)}")


def _keys(rng: random.Random, n: int) -> list[str]:
    keys: list[str] = []
    while len(keys) < n:
        k = f"{rng.choice(_ADJ)}-{rng.choice(_NOUN)}"
        if k not in keys:
            keys.append(k)
    return keys


# -- haystacks ----------------------------------------------------------------------------
Count = Callable[[str], int]


def longest_prefix(text: str, tokens: int, count: Count) -> str:
    """The longest prefix of ``text`` (ending at a word boundary) with at most ``tokens`` tokens."""
    if tokens <= 0:
        return ""
    if count(text) <= tokens:
        return text
    lo = _chars_within(text, tokens, count)
    cut = text.rfind(" ", 0, lo)
    return text[: cut if cut > 0 else lo]


def _chars_within(text: str, tokens: float, count: Count) -> int:
    """About the longest character prefix of ``text`` holding at most ``tokens`` tokens (bisection, 8 chars)."""
    lo, hi = 0, len(text)
    while hi - lo > 8:
        mid = (lo + hi) // 2
        if count(text[:mid]) <= tokens:
            lo = mid
        else:
            hi = mid
    return lo


def insertion_point(text: str, depth: float, count: Count) -> int:
    """Character offset at ``depth`` percent of the tokens, moved back to the start of that sentence."""
    if depth <= 0:
        return 0
    if depth >= 100:
        return len(text)
    lo = _chars_within(text, count(text) * depth / 100, count)
    end = max(text.rfind(". ", 0, lo), text.rfind("\n", 0, lo))
    return end + 1 if end >= 0 else 0


def needle_depths(depth: float, n: int) -> list[float]:
    """First needle at ``depth``, the rest evenly spaced towards the end."""
    step = (100 - depth) / n
    return [depth + i * step for i in range(n)]


def plant(haystack: str, needles: Sequence[str], depth: float, count: Count) -> str:
    text = haystack
    # Deepest first, so earlier offsets stay valid.
    for needle, d in sorted(zip(needles, needle_depths(depth, len(needles))), key=lambda x: -x[1]):
        at = insertion_point(text, d, count)
        text = text[:at].rstrip(" ") + " " + needle + " " + text[at:].lstrip(" ")
    return text.strip()


def build_haystack(source: str, tokens: int, needles: Sequence[str], depth: float, count: Count) -> str:
    """``source`` repeated and cut so the planted result has about ``tokens`` tokens."""
    room = tokens - sum(count(" " + n + " ") for n in needles)
    if not source.strip():
        raise ValueError("the haystack source text is empty")
    per_copy = max(1, count(source))
    text = "\n\n".join([source] * (room // per_copy + 1))
    return plant(longest_prefix(text, room, count), needles, depth, count)


def essays_text(folder: Path) -> tuple[str, str]:
    """(text, sha) of every .txt file in ``folder``, in name order."""
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no .txt files in {folder}")
    return "\n\n".join(f.read_text(encoding="utf-8", errors="replace").strip() for f in files), sha_files(files)


def session_text(q: Quire, session: str) -> tuple[str, str]:
    """(text, sha) of a session's text passages, in reading order: the user's own documents as haystack."""
    segs = q.segments(session)
    texts = [s.text for s in segs if s.kind == "text" and s.text.strip()]
    return "\n\n".join(texts), sha_texts(texts)


# -- the evaluation ------------------------------------------------------------------------------
class NeedleEval:
    kind = "needle"

    def __init__(self, params: NeedleParams, source: str) -> None:
        if params.variant not in VARIANTS:
            raise ValueError(f"unknown needle variant {params.variant!r}; choose one of {', '.join(VARIANTS)}")
        self.p = params
        self.source = source

    def plan(self) -> list[Item]:
        return [
            Item(f"{self.p.variant}/{length}/{depth:g}", f"{length}/{depth:g}", {"length": length, "depth": depth})
            for length in self.p.lengths
            for depth in self.p.depths
        ]

    def spec(self, item: Item) -> NeedleSpec:
        rng = random.Random(f"{self.p.seed}:{item.key}")
        return make_spec(self.p, rng)

    def fill(self, runner: Runner, session: str, items: Sequence[Item]) -> None:
        for item in items:
            plan_haystack(runner, session, item, self.spec(item), self.source)

    def score(self, runner: Runner, session: str, item: Item) -> dict[str, Any]:
        spec = self.spec(item)
        asked = runner.ask(session, spec.question)
        result = {**item.data, **asked, "question": spec.question, "values": spec.values, "absent": spec.absent}
        if asked.get("error"):
            return result | {"score": None, "hit": None}
        score = scoring.needle_score(scoring.strip_echo(asked["answer"], spec.question), spec.values, absent=spec.absent)
        found = [v for v in spec.values if scoring.contains_value(asked["answer"], v)]
        return result | {"score": round(score, 4), "hit": score >= 0.5, "found": found}

    def finish(self, run: EvalRunRecord, results: dict[str, dict], out_dir: Path) -> tuple[dict, dict]:
        lengths, depths = self.p.lengths, self.p.depths
        cell = {(r.get("length"), r.get("depth")): r.get("score") for r in results.values()}
        grid = [[cell.get((n, d)) for n in lengths] for d in depths]
        by_length = {str(n): scoring.mean(cell.get((n, d)) for d in depths) for n in lengths}
        by_depth = {f"{d:g}": scoring.mean(cell.get((n, d)) for n in lengths) for d in depths}
        title = f"Needle ({self.p.variant}) · {run.model}\n{run.runtime} · strategy {run.strategy} · window {run.window}"
        plots.heatmap(out_dir / "heatmap.png", grid, depths, lengths, title=title)
        header = ["depth %"] + [str(n) for n in lengths]
        write_table(out_dir, "grid", header, [[f"{d:g}"] + row for d, row in zip(depths, grid)])
        results_json = {"lengths": lengths, "depths": depths, "grid": grid, "by_length": by_length, "by_depth": by_depth}
        summary = {
            "score": scoring.mean(r.get("score") for r in results.values()),
            "hit_rate": scoring.mean(float(r["hit"]) for r in results.values() if r.get("hit") is not None),
            "items": len(results),
            "errors": sum(1 for r in results.values() if r.get("error")),
            "by_length": by_length,
            "timings": timings(results.values()),
            "plots": ["heatmap.png"],
            "files": ["result.json", "heatmap.png", "grid.csv", "grid.md"],
        }
        write_json(out_dir / "result.json", {"run": run.to_dict() | {"summary": summary}, "results": results_json, "items": results})
        return results_json, summary


def plan_haystack(runner: Runner, session: str, item: Item, spec: NeedleSpec, source: str) -> None:
    """Write the item's haystack into ``session`` so its passages fill the budget of an L-token window."""
    q = runner.q
    rt = q.runtime()
    length, depth = item.data["length"], item.data["depth"]
    fixed = rt.count_tokens(SYSTEM_PROMPT) + rt.count_tokens("<documents>\n" + question_part(spec.question)) + rt.template_overhead()
    budget = int(max(0, length - q.settings.max_answer_tokens - fixed) * 0.98)
    target = int(budget * 0.96)  # first guess: leave ~4% for the passage headers
    info = q.session(session, create=False)
    measured = 0
    for _ in range(3):
        text = build_haystack(source, target, spec.needles, depth, rt.count_tokens)
        runner.add_text(info, DOC_NAME, text)
        counter = TokenCounter(rt)
        measured = sum(counter(ref_id(i), s) for i, s in enumerate(q.segments(info)))
        if budget * 0.97 <= measured <= budget:
            break
        for doc in q.documents(info):
            q.remove_document(info, doc.id)
        target = max(16, target - (measured - int(budget * 0.985)))
    else:
        runner.add_text(info, DOC_NAME, text)  # the last try stands, slightly off the target
    item.data.update({"haystack_tokens": measured, "budget": budget, "fixed_prompt_tokens": fixed})


def load_config(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
