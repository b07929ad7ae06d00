"""Clause finding on CUAD-format contracts.

A CUAD-format folder holds a SQuAD-like JSON file (``data``: one entry per
contract with ``title``, ``pdf``, ``txt`` and ``qas``; each qa has a
``category``, a ``question`` and expert ``answers`` with ``text`` and
``answer_start``; no answers means the clause is absent), plus ``pdf/`` and
``txt/`` folders. Each contract's PDF is ingested through the app's own
pipeline (so citations carry pages), and each category's question is asked.

Strategy ``matrix`` asks no question: the contract's categories are the fields of one review matrix
(``Quire.matrix``, each asking the category's description), and each cell is scored as an answer that
quotes its cell's quote (a "not found" cell declines).

Scores per item (runs of 6+ words the answer repeats from the question and
instruction are removed first, so an echoed "say that it does not" is no decline):
- ``f1``: SQuAD token F1 of the answer's quoted words (the whole answer when it
  quotes nothing) against the best-matching expert span. When the clause is
  absent, 1 if the answer says the contract does not contain it, else 0; when
  it is present and the answer declines, 0.
- ``span_overlap``: a cited passage shares a run of 5 words (or the whole
  span if shorter) with an expert span. None when the clause is absent.
- ``page_hit``: a citation's page is a page where an expert span was located
  (spans are found in the PDF's page texts by whitespace- and
  case-insensitive search, by their first or last words when they cross a
  page). None when the clause is absent or no span could be located.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pymupdf

from core.errors import QuireError
from core.records import EvalRunRecord
from evals import plots, scoring
from evals.runner import Item, Runner, sha_files, timings, write_json, write_table

INSTRUCTION = " Quote the exact words of the contract. If the contract has no such clause, say that it does not."
_QUOTED = re.compile(r"[\"“]([^\"“”]{3,2000})[\"”]")


@dataclass
class Contract:
    title: str
    pdf: Path
    txt: Path | None
    qas: list[dict[str, Any]]


def load_contracts(folder: Path) -> list[Contract]:
    folder = Path(folder)
    files = [p for p in sorted(folder.glob("*.json")) if _is_cuad(p)]
    if not files:
        raise QuireError(f"{folder} has no CUAD-format JSON file.", hint="Point --path at a folder with a SQuAD-like CUAD JSON, pdf/ and txt/.")
    contracts = []
    for f in files:
        for entry in json.loads(f.read_text(encoding="utf-8"))["data"]:
            contracts.append(Contract(entry["title"], _resolve(folder, entry.get("pdf", ""), "pdf", entry["title"]),
                                      _resolve(folder, entry.get("txt", ""), "txt", entry["title"]), _qas(entry)))
    return contracts


def _is_cuad(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("data"), list)


def _qas(entry: dict) -> list[dict[str, Any]]:
    if "qas" in entry:
        return entry["qas"]
    return [qa for para in entry.get("paragraphs", []) for qa in para.get("qas", [])]  # upstream CUAD_v1.json layout


def _resolve(folder: Path, given: str, sub: str, title: str) -> Path | None:
    for candidate in (folder / sub / Path(given).name, folder / given, folder.parent.parent / given):
        if given and candidate.is_file():
            return candidate
    matches = [p for p in (folder / sub).glob("*") if p.stem == title] if (folder / sub).is_dir() else []
    return matches[0] if matches else None


def category_of(qa: dict[str, Any]) -> str:
    return qa.get("category") or qa["id"].split("__")[-1]


def expert_spans(qa: dict[str, Any]) -> list[str]:
    return [a["text"] for a in qa.get("answers", []) if a.get("text", "").strip()]


# -- spans to pages ------------------------------------------------------------------
def page_texts(pdf: Path) -> list[str]:
    with pymupdf.open(pdf) as doc:
        return [" ".join(scoring.words(page.get_text())) for page in doc]


def span_pages(span: str, pages: Sequence[str], min_words: int = 4) -> list[int]:
    """1-based pages where the span appears; a span across a page break counts on the pages of its
    longest leading and longest trailing run of words that a page contains (at least ``min_words``)."""
    ws = scoring.words(span)
    if not ws:
        return []

    def where(probe: list[str]) -> set[int]:
        needle = f" {' '.join(probe)} "
        return {i + 1 for i, text in enumerate(pages) if needle in f" {text} "}

    found = where(ws)
    if found or len(ws) < 2 * min_words:
        return sorted(found)
    head = _longest(lambda k: where(ws[:k]), min_words, len(ws) - 1)
    tail = _longest(lambda k: where(ws[-k:]), min_words, len(ws) - 1)
    return sorted(head | tail)


def _longest(pages_for: Callable[[int], set[int]], lo: int, hi: int) -> set[int]:
    """Pages of the longest probe length in [lo, hi] that is found (found-ness shrinks with length)."""
    best: set[int] = set()
    while lo <= hi:
        mid = (lo + hi) // 2
        hit = pages_for(mid)
        if hit:
            best, lo = hit, mid + 1
        else:
            hi = mid - 1
    return best


def predicted_span(answer: str) -> str:
    quotes = _QUOTED.findall(answer or "")
    return " ".join(quotes) if quotes else scoring.strip_refs(answer)


def score_answer(answer: str, spans: Sequence[str], cited_texts: Sequence[str], cited_pages: Sequence[int | None],
                 gold_pages: Sequence[int], question: str = "") -> dict[str, Any]:
    answer = scoring.strip_echo(answer, question)  # an echoed instruction is neither a decline nor content
    declined = scoring.says_not_found(answer) and not _QUOTED.search(answer or "")
    if not spans:
        ok = scoring.says_not_found(answer)
        return {"f1": float(ok), "absent": True, "declined": declined, "span_overlap": None, "page_hit": None}
    f1 = 0.0 if declined else scoring.best_f1(predicted_span(answer), spans)
    return {
        "f1": round(f1, 4),
        "absent": False,
        "declined": declined,
        "span_overlap": any(scoring.span_overlap(t, spans) for t in cited_texts),
        "page_hit": scoring.page_hit(cited_pages, gold_pages) if gold_pages else None,
    }


# -- the evaluation -----------------------------------------------------------------------
class CuadEval:
    kind = "cuad"

    def __init__(self, contracts: list[Contract], categories: list[str]) -> None:
        self.contracts = contracts
        self.categories = categories
        self._pages: dict[str, list[str]] = {}
        self._fields: dict[str, list[str]] = {}  # contract -> the categories its items ask (the matrix's fields)

    @classmethod
    def from_folder(cls, folder: Path, *, contracts: str = "", categories: Sequence[str] = (), order: str = "file") -> "CuadEval":
        found = load_contracts(folder)
        if order == "size":
            found.sort(key=lambda c: (c.txt.stat().st_size if c.txt else c.pdf.stat().st_size if c.pdf else 0, c.title))
        if contracts.strip().isdigit():
            found = found[: int(contracts)]
        elif contracts.strip():
            wanted = [t.strip() for t in contracts.split(",") if t.strip()]
            found = [c for c in found if c.title in wanted]
        all_categories = list(dict.fromkeys(category_of(qa) for c in found for qa in c.qas))
        unknown = [c for c in categories if c not in all_categories]
        if unknown:
            raise QuireError(f"Unknown clause categories: {', '.join(unknown)}.", hint=f"Known: {'; '.join(all_categories)}.")
        return cls(found, list(categories) or all_categories)

    def contract_titles(self) -> list[str]:
        return [c.title for c in self.contracts]

    def corpus_sha(self) -> str:
        files = [c.pdf for c in self.contracts if c.pdf] + [c.txt for c in self.contracts if c.txt]
        return sha_files(files)

    def plan(self) -> list[Item]:
        items = []
        for c in self.contracts:
            by_cat = {category_of(qa): qa for qa in c.qas}
            for cat in self.categories:
                if cat in by_cat:
                    items.append(Item(f"{c.title}/{cat}", c.title, {"contract": c.title, "category": cat}))
        return items

    def _contract(self, title: str) -> Contract:
        return next(c for c in self.contracts if c.title == title)

    def fill(self, runner: Runner, session: str, items: Sequence[Item]) -> None:
        contract = self._contract(items[0].data["contract"])
        if contract.pdf is None:
            raise QuireError(f"No PDF found for contract {contract.title}.")
        self._pages[contract.title] = page_texts(contract.pdf)
        self._fields[contract.title] = [it.data["category"] for it in items]
        runner.ingest(session, [contract.pdf])

    def score(self, runner: Runner, session: str, item: Item) -> dict[str, Any]:
        contract = self._contract(item.data["contract"])
        qa = next(qa for qa in contract.qas if category_of(qa) == item.data["category"])
        spans = expert_spans(qa)
        pages = self._pages.get(contract.title) or page_texts(contract.pdf)
        gold_pages = sorted({p for s in spans for p in span_pages(s, pages)})
        question = qa["question"] + INSTRUCTION
        if runner.run.strategy == "matrix":  # the review matrix: every category of the contract read at once
            fields = self._fields.get(contract.title) or [item.data["category"]]
            asked = runner.matrix_cell(session, fields, item.data["category"])
        else:
            asked = runner.ask(session, question)
        result = {**item.data, **asked, "expert_spans": [s[:500] for s in spans], "gold_pages": gold_pages}
        if asked.get("error"):
            return result | {"score": None, "f1": None}
        scored = score_answer(asked["answer"], spans, runner.cited_texts(asked),
                              [c.get("page") for c in asked["citations"]], gold_pages, question)
        return result | scored | {"score": scored["f1"]}

    def finish(self, run: EvalRunRecord, results: dict[str, dict], out_dir: Path) -> tuple[dict, dict]:
        header = ["category", "items", "f1", "span_overlap", "page_hit", "absent_correct", "errors"]
        rows = [_row(cat, [r for r in results.values() if r.get("category") == cat]) for cat in self.categories]
        rows = [r for r in rows if r[1]]
        overall = _row("ALL", list(results.values()))
        write_table(out_dir, "categories", header, rows + [overall])
        title = f"CUAD F1 by category · {run.model}\n{run.runtime} · strategy {run.strategy} · window {run.window}"
        plots.bars(out_dir / "categories.png", [r[0] for r in rows], [r[2] for r in rows], title=title, xlabel="Token F1")
        table = [dict(zip(header, r)) for r in rows]
        summary = {
            "f1": overall[2], "score": overall[2], "span_overlap": overall[3], "page_hit": overall[4],
            "absent_correct": overall[5], "items": len(results), "errors": overall[6],
            "contracts": len({r.get("contract") for r in results.values()}),
            "timings": timings(results.values()),
            "answers": answer_shares(results.values()),
            "plots": ["categories.png"],
            "files": ["result.json", "categories.csv", "categories.md", "categories.png"],
        }
        results_json = {"categories": table, "overall": dict(zip(header, overall))}
        write_json(out_dir / "result.json", {"run": run.to_dict() | {"summary": summary}, "results": results_json, "items": results})
        return results_json, summary


def answer_shares(results) -> dict[str, Any]:
    """How the answers ended: the share whose best citation is verified, only quoted (found, not
    supporting), or that no citation supports (unverified, missing or none); and the checks' cost."""
    ok = [r for r in results if not r.get("error")]
    if not ok:
        return {}
    ends = {"verified": 0, "quoted": 0, "unsupported": 0}
    for r in ok:
        statuses = {c.get("status") for c in r.get("citations", [])}
        ends["verified" if "verified" in statuses else "quoted" if "quoted" in statuses else "unsupported"] += 1
    checks = [r["checks_s"] for r in ok if r.get("checks_s") is not None]
    walls = [r["wall_s"] for r in ok if r.get("checks_s") is not None and r.get("wall_s")]
    return {**{k: round(v / len(ok), 4) for k, v in ends.items()}, "answers": len(ok),
            "checks_share_of_wall": round(sum(checks) / sum(walls), 4) if walls and sum(walls) else None}


def _row(name: str, rs: list[dict]) -> list[Any]:
    ok = [r for r in rs if not r.get("error")]
    absent = [r for r in ok if r.get("absent")]
    return [
        name,
        len(rs),
        scoring.mean(r.get("f1") for r in ok),
        scoring.mean(None if r.get("span_overlap") is None else float(r["span_overlap"]) for r in ok),
        scoring.mean(None if r.get("page_hit") is None else float(r["page_hit"]) for r in ok),
        scoring.mean(r.get("f1") for r in absent) if absent else None,
        len(rs) - len(ok),
    ]
