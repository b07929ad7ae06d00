"""Long-context QA on L-Eval task files.

Each jsonl line is one long document: ``{input, instructions[], outputs[],
source, evaluation}``; every instruction is asked of the document (ingested as
text) and scored against its output with the metric the line names, as L-Eval's
own scorer does:
- ``exam`` (closed-ended: quality, topic retrieval): multiple choice compares
  the option letter; otherwise the reference, case and spaces ignored, must
  appear in the answer's first non-trivial line (:func:`evals.scoring.exam_score`).
- ``f1``: SQuAD token F1.
- ``rouge``: ROUGE-L F-measure is the item's score; ROUGE-1, ROUGE-2 and their
  geometric mean with ROUGE-L (L-Eval's headline) are kept too.
Citation markers (``[S3]``) are removed from answers before scoring.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from core.errors import QuireError
from core.records import EvalRunRecord
from evals import plots, scoring
from evals.runner import Item, Runner, sha_files, timings, write_json, write_table

MC_HINT = "\nAnswer with the letter of the correct option."


def load_tasks(path: Path) -> dict[str, list[dict[str, Any]]]:
    path = Path(path)
    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise QuireError(f"No L-Eval .jsonl files at {path}.")
    tasks = {}
    for f in files:
        lines = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        if lines and all("input" in d and "instructions" in d and "outputs" in d for d in lines):
            tasks[f.stem] = lines
    return tasks


def score_item(prediction: str, reference: str, metric: str) -> dict[str, Any]:
    pred = scoring.strip_refs(prediction)
    if metric == "exam":
        return {"score": scoring.exam_score(pred, reference)}
    if metric == "f1":
        return {"score": round(scoring.token_f1(pred, reference), 4)}
    r1, r2, rl = scoring.rouge_n(pred, reference, 1), scoring.rouge_n(pred, reference, 2), scoring.rouge_l(pred, reference)
    return {"score": round(rl, 4), "rouge1": round(r1, 4), "rouge2": round(r2, 4), "rougeL": round(rl, 4),
            "rouge_geomean": round((r1 * r2 * rl) ** (1 / 3), 4)}


class LEvalEval:
    kind = "leval"

    def __init__(self, tasks: dict[str, list[dict[str, Any]]], files: list[Path]) -> None:
        self.tasks = tasks
        self.files = files

    @classmethod
    def from_path(cls, path: Path, *, tasks: Sequence[str] = ()) -> "LEvalEval":
        found = load_tasks(path)
        if tasks:
            unknown = [t for t in tasks if t not in found]
            if unknown:
                raise QuireError(f"Unknown L-Eval tasks: {', '.join(unknown)}.", hint=f"Known: {', '.join(found)}.")
            found = {t: found[t] for t in tasks}
        root = Path(path)
        files = [f for f in (sorted(root.rglob("*.jsonl")) if root.is_dir() else [root]) if f.stem in found]
        return cls(found, files)

    def task_names(self) -> list[str]:
        return list(self.tasks)

    def corpus_sha(self) -> str:
        return sha_files(self.files)

    def plan(self) -> list[Item]:
        items = []
        for task, docs in self.tasks.items():
            for d, doc in enumerate(docs):
                for i in range(min(len(doc["instructions"]), len(doc["outputs"]))):
                    metric = doc.get("evaluation", "f1")
                    items.append(Item(f"{task}/{d}/{i}", f"{task}/{d}", {"task": task, "doc": d, "index": i, "metric": metric}))
        return items

    def fill(self, runner: Runner, session: str, items: Sequence[Item]) -> None:
        data = items[0].data
        runner.add_text(session, f"{data['task']}-{data['doc']}.txt", self.tasks[data["task"]][data["doc"]]["input"])

    def score(self, runner: Runner, session: str, item: Item) -> dict[str, Any]:
        doc = self.tasks[item.data["task"]][item.data["doc"]]
        question = doc["instructions"][item.data["index"]].strip()
        reference = doc["outputs"][item.data["index"]]
        if item.data["metric"] == "exam" and "(A)" in question:
            question += MC_HINT
        asked = runner.ask(session, question)
        result = {**item.data, **asked, "question": question[:2000], "reference": reference[:2000]}
        if asked.get("error"):
            return result | {"score": None}
        return result | score_item(asked["answer"], reference, item.data["metric"])

    def finish(self, run: EvalRunRecord, results: dict[str, dict], out_dir: Path) -> tuple[dict, dict]:
        header = ["task", "metric", "items", "score", "errors"]
        rows = []
        for task in self.tasks:
            rs = [r for r in results.values() if r.get("task") == task]
            if rs:
                rows.append([task, rs[0]["metric"], len(rs), scoring.mean(r.get("score") for r in rs),
                             sum(1 for r in rs if r.get("error"))])
        write_table(out_dir, "tasks", header, rows)
        title = f"L-Eval by task · {run.model}\n{run.runtime} · strategy {run.strategy} · window {run.window}"
        plots.bars(out_dir / "tasks.png", [f"{r[0]} ({r[1]})" for r in rows], [r[3] for r in rows], title=title, xlabel="Score")
        table = [dict(zip(header, r)) for r in rows]
        summary = {
            "score": scoring.mean(r[3] for r in rows),
            "items": len(results),
            "errors": sum(r[4] for r in rows),
            "by_task": {r[0]: r[3] for r in rows},
            "timings": timings(results.values()),
            "plots": ["tasks.png"],
            "files": ["result.json", "tasks.csv", "tasks.md", "tasks.png"],
        }
        write_json(out_dir / "result.json", {"run": run.to_dict() | {"summary": summary}, "results": {"tasks": table}, "items": results})
        return {"tasks": table}, summary
