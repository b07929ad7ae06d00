"""Scoring functions shared by the evaluations. Pure functions of strings; no model, no database.

- ``normalise``: SQuAD answer normalisation (lower case, no punctuation, no
  articles, single spaces).
- ``token_f1``: SQuAD token F1 between a prediction and one reference;
  ``best_f1`` takes the best over several references.
- ``rouge_l``: ROUGE-L F-measure (longest common subsequence of words, beta 1),
  ``rouge_n`` the n-gram F-measure; both on lower-cased word tokens, no stemming.
- ``needle_score``: share of the expected values found in the answer (see
  :mod:`evals.needle` for the metric); ``says_not_found`` recognises an answer
  that declines ("the documents do not say").
- ``exam_score``: L-Eval's closed-ended rule (option letter, else the reference
  contained in the first non-trivial line of the answer).
- ``span_overlap`` / ``page_hit``: whether a cited passage overlaps an expert
  span, and whether a cited page is a labelled span's page (CUAD).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_REFS = re.compile(r"\[\s*S\s*\d+(?:\s*[,;]\s*S?\s*\d+)*\s*\]", re.IGNORECASE)
_WORD = re.compile(r"\w+", re.UNICODE)

_NOT_FOUND = re.compile(
    r"\b("
    r"not found|no (?:such |relevant )?(?:information|mention|answer|clause|provision|reference|details?)"
    r"|(?:do|does|did) not (?:contain|say|mention|include|provide|specify|state|have|appear|discuss|give)"
    r"|(?:don't|doesn't|didn't) (?:contain|say|mention|include|provide|specify|state|have|appear|discuss|give)"
    r"|(?:is|are) not (?:mentioned|stated|specified|provided|given|included|present|found|available)"
    r"|isn't (?:mentioned|stated|specified|provided|given)"
    r"|(?:cannot|can't|could not|couldn't|unable to) (?:find|locate|determine|answer|identify)"
    r"|there (?:is|are) no|none (?:is|are) (?:mentioned|given)|no such"
    r"|not (?:in|within) the (?:documents?|text|passages?|contract)"
    r")\b",
    re.IGNORECASE,
)


# -- text normalisation ------------------------------------------------------------
def strip_refs(text: str) -> str:
    """The answer without its ``[S12]`` citation markers."""
    return _REFS.sub(" ", text or "")


def strip_echo(answer: str, prompt: str, n: int = 6) -> str:
    """The answer without the runs of ``n`` or more words it repeats from the prompt.

    Small models often echo the instruction ("If the contract has no such clause,
    say that it does not"); an echo must not count as a decline or as content.
    """
    raw = (answer or "").split()
    keys = [normalise(t) for t in raw]
    pk = [k for k in (normalise(t) for t in (prompt or "").split()) if k]
    grams = {tuple(pk[i : i + n]) for i in range(len(pk) - n + 1)}
    covered = [False] * len(raw)
    idx = [i for i, k in enumerate(keys) if k]  # positions of real words (punctuation-only tokens skipped)
    for j in range(len(idx) - n + 1):
        if tuple(keys[i] for i in idx[j : j + n]) in grams:
            for i in range(idx[j], idx[j + n - 1] + 1):
                covered[i] = True
    return " ".join(t for t, c in zip(raw, covered) if not c)


def normalise(text: str) -> str:
    text = (text or "").lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def words(text: str) -> list[str]:
    return _WORD.findall((text or "").lower())


# -- F1, exact match, ROUGE ------------------------------------------------------------
def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalise(prediction).split(), normalise(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_f1(prediction: str, references: Sequence[str]) -> float:
    return max((token_f1(prediction, r) for r in references), default=0.0)


def exact_match(prediction: str, reference: str) -> float:
    return float(normalise(prediction) == normalise(reference))


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def _f(overlap: int, n_pred: int, n_ref: int) -> float:
    if overlap == 0 or n_pred == 0 or n_ref == 0:
        return 0.0
    p, r = overlap / n_pred, overlap / n_ref
    return 2 * p * r / (p + r)


def rouge_l(prediction: str, reference: str) -> float:
    pred, ref = words(prediction), words(reference)
    return _f(_lcs(pred, ref), len(pred), len(ref))


def rouge_n(prediction: str, reference: str, n: int = 1) -> float:
    def grams(ws: list[str]) -> Counter:
        return Counter(tuple(ws[i : i + n]) for i in range(len(ws) - n + 1))

    pred, ref = grams(words(prediction)), grams(words(reference))
    return _f(sum((pred & ref).values()), sum(pred.values()), sum(ref.values()))


# -- needles -----------------------------------------------------------------------------
def contains_value(answer: str, value: str) -> bool:
    """Whether the normalised value appears in the normalised answer as whole words."""
    v = normalise(value)
    return bool(v) and f" {v} " in f" {normalise(strip_refs(answer))} "


def says_not_found(answer: str) -> bool:
    return bool(_NOT_FOUND.search(strip_refs(answer)))


def needle_score(answer: str, values: Sequence[str], *, absent: bool = False) -> float:
    """Share of ``values`` the answer contains; for an absent needle, 1 when the answer declines
    and names none of the (decoy) values."""
    if absent:
        return float(says_not_found(answer) and not any(contains_value(answer, v) for v in values))
    if not values:
        return 0.0
    return sum(contains_value(answer, v) for v in values) / len(values)


# -- L-Eval closed-ended ------------------------------------------------------------------------
_OPTION_GT = re.compile(r"^\s*\(?([A-D])\)")
_OPTION_PRED = re.compile(r"(?:^|[\s(\[])([A-D])(?=[\s).:\]]|$)")


def option_letter(text: str) -> str:
    """The first option letter an answer names: "(B) ...", "B.", "Answer: C"."""
    text = strip_refs(text).strip()
    if text[:1] in ("A", "B", "C", "D") and (len(text) == 1 or not text[1].isalpha()):
        return text[0]
    m = _OPTION_PRED.search(text)
    return m.group(1) if m else ""


def exam_score(prediction: str, reference: str) -> float:
    """L-Eval's closed-ended rule: multiple choice compares option letters; otherwise the
    reference (case and spaces ignored) must appear in the answer's first non-trivial line."""
    gt = _OPTION_GT.match(reference)
    if gt:
        return float(option_letter(prediction) == gt.group(1))
    lines = [ln for ln in strip_refs(prediction).splitlines() if len(ln.strip()) > 1]
    first = lines[0] if lines else ""
    squash = lambda s: re.sub(r"\s+", "", s.lower())  # noqa: E731
    return float(bool(reference.strip()) and squash(reference) in squash(first))


# -- CUAD spans, passages and pages ---------------------------------------------------------------
def _ngrams(ws: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def span_overlap(passage: str, spans: Iterable[str], n: int = 5) -> bool:
    """Whether the passage shares a run of ``n`` words with an expert span (the whole span if shorter)."""
    pw = words(passage)
    for span in spans:
        sw = words(span)
        if not sw:
            continue
        k = min(n, len(sw))
        if _ngrams(sw, k) & _ngrams(pw, k):
            return True
    return False


def page_hit(cited_pages: Iterable[int | None], span_pages: Iterable[int]) -> bool:
    labelled = set(span_pages)
    return any(p in labelled for p in cited_pages if p is not None)


def mean(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None
