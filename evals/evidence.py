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

Evidence recall is hits over questions, reported with the share of the corpus that was sent.
Minutes, not hours: documents are ingested once (a second run reuses the sessions) and only the
tokenizer runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from backend.citations import normalise
from core.settings import Settings
from quire.api import Quire

SPAN_PROBE = 60  # normalised characters of a clause span looked for in the passages sent


@dataclass
class Item:
    dataset: str  # financebench | cuad
    key: str
    document: Path
    question: str
    pages: set[int] = field(default_factory=set)  # one-based evidence pages (FinanceBench)
    spans: list[str] = field(default_factory=list)  # labelled clause texts (CUAD)


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


def hit(item: Item, shown) -> bool:
    if item.pages:
        return any(s.locator.page in item.pages for s in shown)
    texts = [normalise(s.text) for s in shown]
    for span in item.spans:
        probe = normalise(span)
        if any(p and any(p in t for t in texts) for p in {probe[:SPAN_PROBE], probe[-SPAN_PROBE:]}):
            return True
    return False


def measure(q: Quire, items: list[Item], progress=print) -> list[dict]:
    sessions: dict[Path, str] = {}
    rows = []
    for n, item in enumerate(items, 1):
        session = sessions.get(item.document)
        if session is None:
            session = f"eval-evidence-{len(sessions) + 1}"
            if not q.documents(q.session(session)):
                (result,) = q.ingest(session, [item.document])
                if result.status not in ("added", "duplicate"):
                    progress(f"  {item.document.name}: {result.message}")
                    continue
            sessions[item.document] = session
        started = time.perf_counter()
        ctx = q.assemble(session, item.question, strategy="focus")
        rows.append({
            "dataset": item.dataset, "key": item.key, "document": item.document.name, "hit": hit(item, ctx.refs.values()),
            "share_seen": round(ctx.share_seen, 4), "narrowed": ctx.narrowed, "s": round(time.perf_counter() - started, 3),
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
            "recall": round(sum(r["hit"] for r in mine) / len(mine), 4),
            "narrowed": len(narrowed),
            "recall_narrowed": round(sum(r["hit"] for r in narrowed) / len(narrowed), 4) if narrowed else None,
            "share_seen_mean": round(sum(r["share_seen"] for r in mine) / len(mine), 4),
            "assemble_s_mean": round(sum(r["s"] for r in mine) / len(mine), 3),
        }
    return out


def add_parser(esub, parents: list[argparse.ArgumentParser]) -> None:
    p = esub.add_parser("evidence", parents=parents,
                        help="Evidence recall of focus on FinanceBench pages and CUAD clause spans (no generation).")
    p.add_argument("--datasets", default="financebench,cuad", help="Comma-separated: financebench, cuad.")
    p.add_argument("--path", type=Path, default=None, help="The corpus folder (default: the shared corpus).")
    p.add_argument("--limit", type=int, default=0, help="Only the first N questions of each dataset (0: all).")
    p.add_argument("--out", type=Path, default=None, help="Write every question's result and the summary here (JSON).")


def run(settings: Settings, args, corpus: Path) -> int:
    corpus = args.path or corpus
    loaders = {"financebench": lambda: financebench_items(corpus / "financebench"),
               "cuad": lambda: cuad_items(corpus / "contracts" / "cuad")}
    items: list[Item] = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        found = loaders[name]()
        items += found[: args.limit] if args.limit else found
    with Quire(settings.replace(workers=1)) as q:
        window = q.runtime().context_window
        started = time.perf_counter()
        rows = measure(q, items, progress=lambda m: print(m, flush=True))
        wall = time.perf_counter() - started
    result = {"window": window, "wall_s": round(wall, 1), "summary": summary(rows)}
    for dataset, s in result["summary"].items():
        print(f"{dataset}: evidence recall {s['recall']:.1%} of {s['questions']} questions "
              f"({s['recall_narrowed'] if s['recall_narrowed'] is not None else '-'} where the document overflows "
              f"the window, {s['narrowed']} questions); {s['share_seen_mean']:.1%} of the document sent; "
              f"window {window}")
    print(f"{wall:.0f} s in all")
    if args.out:
        args.out.write_text(json.dumps(result | {"rows": rows}, indent=1))
    return 0
