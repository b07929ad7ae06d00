"""``python app.py eval evidence``: does focus put the evidence in front of the model? No generation.

For questions whose evidence is known, each document is stored in a session of its own and the
focus strategy assembles the context for the question at the runtime's window, exactly as
:meth:`quire.api.Quire.assemble` does before an answer. A question is a hit when the passages
sent hold its evidence:

- FinanceBench (``financebench/questions.jsonl``): a passage on an evidence page
  (``evidence_page_num`` is zero-based; Quire's pages are one-based);
- CUAD (``contracts/cuad/cuad_qa_subset.json``): a passage holding a labelled clause span (its
  first or last 60 normalised characters), asked as a user would: the category's description
  from ``category_descriptions.csv`` ("Which state/country's law governs the interpretation of the contract?").

- CUAD across documents (``cuad-cross``): five contracts in one session, and each category's
  question asked of all of them ("Which of these agreements: ..."); the score is the share of the
  contracts holding the clause whose span was sent. This is what per-document quotas are for.

Evidence recall is hits over questions, reported with the share of the corpus that was sent.
``--variants`` measures several rankings in one run on the same sessions (lexical or hybrid rank,
with or without the per-document quota); ``--half a|b`` keeps the documents of one half of a
fixed split by name, so a change tuned on one half is checked on the other.
Minutes, not hours: documents are ingested once (a second run reuses the sessions) and only the
tokenizer runs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from backend.citations import normalise
from core.errors import QuireError
from core.settings import Settings
from quire.api import Quire

SPAN_PROBE = 60  # normalised characters of a clause span looked for in the passages sent
GROUP = 5  # contracts in one session of the cuad-cross questions
VARIANTS = {  # name -> the settings it changes
    "lexical-unexpanded": {"rank": "lexical", "document_quota": False, "expand_queries": False},
    "lexical": {"rank": "lexical", "document_quota": False},
    "lexical+quota": {"rank": "lexical", "document_quota": True},
    "hybrid": {"rank": "hybrid", "document_quota": False},
    "hybrid+quota": {"rank": "hybrid", "document_quota": True},
}


@dataclass
class Item:
    dataset: str  # financebench | cuad
    key: str
    document: Path
    question: str
    pages: set[int] = field(default_factory=set)  # one-based evidence pages (FinanceBench)
    spans: list[str] = field(default_factory=list)  # labelled clause texts (CUAD)
    documents: list[Path] = field(default_factory=list)  # the session's documents, when there are several
    spans_by_document: dict[str, list[str]] = field(default_factory=dict)  # cuad-cross: file name -> its spans

    @property
    def category(self) -> str:
        """A CUAD item's clause category (its key is ``<contract>__<category>``)."""
        return self.key.rsplit("__", 1)[-1]


def financebench_items(folder: Path) -> list[Item]:
    items = []
    for line in (folder / "questions.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        pages = {e["evidence_page_num"] + 1 for e in row.get("evidence", []) if e.get("doc_name") == row["doc_name"]}
        pdf = folder / "pdfs" / f"{row['doc_name']}.pdf"
        if pages and pdf.is_file():
            items.append(Item("financebench", row["financebench_id"], pdf, row["question"], pages=pages))
    return items


def cuad_questions(folder: Path) -> dict[str, str]:
    """Category -> the question a user would ask (its description), from category_descriptions.csv."""
    out = {}
    with open(folder / "category_descriptions.csv", newline="", encoding="utf-8-sig") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[0].startswith("Category: "):
                out[row[0].removeprefix("Category: ").strip()] = row[1].removeprefix("Description: ").strip()
    return out


def cuad_items(folder: Path) -> list[Item]:
    questions = cuad_questions(folder)
    items = []
    for doc in json.loads((folder / "cuad_qa_subset.json").read_text())["data"]:
        pdf = folder / "pdf" / Path(doc["pdf"]).name
        for qa in doc["qas"]:
            spans = [a["text"] for a in qa["answers"] if a["answer_start"] >= 0 and len(normalise(a["text"])) >= 12]
            if spans and pdf.is_file() and qa["category"] in questions:
                items.append(Item("cuad", qa["id"], pdf, questions[qa["category"]], spans=spans))
    return items


def cuad_cross_items(folder: Path) -> list[Item]:
    """Sessions of GROUP contracts (in file order); per category held by two or more of them, one question."""
    single = cuad_items(folder)
    pdfs = list(dict.fromkeys(item.document for item in single))
    items = []
    for start in range(0, len(pdfs) - 1, GROUP):
        group = pdfs[start:start + GROUP]
        by_category: dict[str, dict[str, list[str]]] = {}
        questions = {}
        for item in single:
            if item.document in group:
                by_category.setdefault(item.category, {})[item.document.name] = item.spans
                questions[item.category] = item.question
        for category, spans in by_category.items():
            if len(spans) >= 2:
                items.append(Item("cuad-cross", f"group{start // GROUP + 1}__{category}", group[0],
                                  "Which of these agreements: " + questions[category], documents=group,
                                  spans_by_document=spans))
    return items


def cuad_terse_items(folder: Path) -> list[Item]:
    """The CUAD questions as a user types them in a hurry: the category's name, not its description
    ("What does the contract say about governing law?"). This is what query expansion is for."""
    return [Item("cuad-terse", item.key, item.document,
                 f"What does the contract say about {item.category.lower()}?", spans=item.spans)
            for item in cuad_items(folder)]


def in_half(item: Item, half: str) -> bool:
    """Whether the item's documents fall in ``half`` ('a' or 'b') of a fixed split by file name."""
    if half not in ("a", "b"):
        return True
    key = ",".join(sorted(p.name for p in (item.documents or [item.document])))
    return (hashlib.sha256(key.encode()).digest()[0] % 2 == 0) == (half == "a")


def _found(spans: list[str], texts: list[str]) -> bool:
    for span in spans:
        probe = normalise(span)
        if any(p and any(p in t for t in texts) for p in {probe[:SPAN_PROBE], probe[-SPAN_PROBE:]}):
            return True
    return False


def score(item: Item, shown) -> float:
    """1 or 0 for one document's evidence; for cuad-cross, the share of the documents whose span was sent."""
    shown = list(shown)
    if item.pages:
        return float(any(s.locator.page in item.pages for s in shown))
    if item.spans_by_document:
        found = [_found(spans, [normalise(s.text) for s in shown if s.document_name == name])
                 for name, spans in item.spans_by_document.items()]
        return sum(found) / len(found)
    return float(_found(item.spans, [normalise(s.text) for s in shown]))


def session_name(item: Item) -> str:
    """One session per document (or per group of documents), named by their content, so runs share them."""
    key = ",".join(p.name for p in (item.documents or [item.document]))
    return "eval-evidence-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def measure(q: Quire, items: list[Item], progress=print) -> list[dict]:
    ready: dict[str, bool] = {}
    rows = []
    for n, item in enumerate(items, 1):
        session = session_name(item)
        if session not in ready:
            files = item.documents or [item.document]
            have = {d.name for d in q.documents(q.session(session))}
            results = q.ingest(session, [f for f in files if f.name not in have]) if len(have) < len(files) else []
            for result in results:
                if result.status not in ("added", "duplicate"):
                    progress(f"  {result.name}: {result.message}")
            ready[session] = all(r.status in ("added", "duplicate") for r in results)
        if not ready[session]:
            continue
        started = time.perf_counter()
        ctx = q.assemble(session, item.question, strategy="focus")
        value = score(item, ctx.refs.values())
        rows.append({
            "dataset": item.dataset, "key": item.key, "document": item.document.name, "hit": value == 1.0,
            "score": round(value, 4), "share_seen": round(ctx.share_seen, 4), "narrowed": ctx.narrowed,
            "s": round(time.perf_counter() - started, 3),
        })
        if n % 20 == 0:
            progress(f"  {n}/{len(items)} questions")
    return rows


def summary(rows: list[dict]) -> dict:
    out = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        mine = [r for r in rows if r["dataset"] == dataset]
        narrowed = [r for r in mine if r["narrowed"]]
        out[dataset] = {
            "questions": len(mine),
            "recall": round(sum(r.get("score", r["hit"]) for r in mine) / len(mine), 4),
            "narrowed": len(narrowed),
            "recall_narrowed": round(sum(r.get("score", r["hit"]) for r in narrowed) / len(narrowed), 4) if narrowed else None,
            "share_seen_mean": round(sum(r["share_seen"] for r in mine) / len(mine), 4),
            "assemble_s_mean": round(sum(r["s"] for r in mine) / len(mine), 3),
        }
    return out


def add_parser(esub, parents: list[argparse.ArgumentParser]) -> None:
    p = esub.add_parser("evidence", parents=parents,
                        help="Evidence recall of focus on FinanceBench pages and CUAD clause spans (no generation).")
    p.add_argument("--datasets", default="financebench,cuad,cuad-cross",
                   help="Comma-separated: financebench, cuad, cuad-cross, cuad-terse.")
    p.add_argument("--path", type=Path, default=None, help="The corpus folder (default: the shared corpus).")
    p.add_argument("--limit", type=int, default=0, help="Only the first N questions of each dataset (0: all).")
    p.add_argument("--half", choices=("a", "b", "all"), default="all",
                   help="Only the documents of one half of a fixed split by file name (tune on one, check on the other).")
    p.add_argument("--variants", default="",
                   help=f"Comma-separated rankings to measure in one run: {', '.join(VARIANTS)} "
                        "(default: the settings as given).")
    p.add_argument("--out", type=Path, default=None, help="Write every question's result and the summary here (JSON).")


def load_items(corpus: Path, datasets: str, *, limit: int = 0, half: str = "all") -> list[Item]:
    loaders = {"financebench": lambda: financebench_items(corpus / "financebench"),
               "cuad": lambda: cuad_items(corpus / "contracts" / "cuad"),
               "cuad-cross": lambda: cuad_cross_items(corpus / "contracts" / "cuad"),
               "cuad-terse": lambda: cuad_terse_items(corpus / "contracts" / "cuad")}
    items: list[Item] = []
    for name in [d.strip() for d in datasets.split(",") if d.strip()]:
        if name not in loaders:
            raise QuireError(f"Unknown dataset {name!r}.", hint=f"Choose from: {', '.join(loaders)}.")
        found = [item for item in loaders[name]() if in_half(item, half)]
        items += found[:limit] if limit else found
    return items


def run(settings: Settings, args, corpus: Path) -> int:
    items = load_items(args.path or corpus, args.datasets, limit=args.limit, half=args.half)
    names = [v.strip() for v in args.variants.split(",") if v.strip()] or ["as given"]
    unknown = [v for v in names if v != "as given" and v not in VARIANTS]
    if unknown:
        raise QuireError(f"Unknown variant {unknown[0]!r}.", hint=f"Choose from: {', '.join(VARIANTS)}.")
    result: dict = {"half": args.half, "variants": {}}
    for name in names:
        changes = VARIANTS.get(name, {})
        with Quire(settings.replace(workers=1, **changes)) as q:
            window = q.runtime().context_window
            started = time.perf_counter()
            rows = measure(q, items, progress=lambda m: print(m, flush=True))
            wall = time.perf_counter() - started
        result["window"] = window
        result["variants"][name] = {"settings": changes, "wall_s": round(wall, 1), "summary": summary(rows), "rows": rows}
        for dataset, s in result["variants"][name]["summary"].items():
            print(f"{name} · {dataset}: evidence recall {s['recall']:.1%} of {s['questions']} questions "
                  f"({s['recall_narrowed'] if s['recall_narrowed'] is not None else '-'} where the corpus overflows "
                  f"the window, {s['narrowed']} questions); {s['share_seen_mean']:.1%} of the corpus sent; "
                  f"{s['assemble_s_mean']:.2f} s a question; window {window}, half {args.half}", flush=True)
        print(f"{name}: {wall:.0f} s in all", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0
