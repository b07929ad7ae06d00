"""The loop every evaluation shares: plan items, skip the stored ones, ask, score, store, summarise.

An evaluation (needle, CUAD, L-Eval) supplies four things, see :class:`Evaluation`:
its items (each with a key and a group: items of one group share one eval
session, e.g. every clause category of one contract), how to fill a group's
session, how to score one item from the model's answer, and how to summarise
and write the results. Sessions are named ``eval-<kind>-<run>-<n>`` and deleted
after their group unless ``keep_sessions`` is set.
"""

from __future__ import annotations

import csv
import hashlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from core.errors import NotFound, QuireError
from core.records import EvalRunRecord, TurnRecord
from quire.api import CellDone, Field, Quire, SessionRef


@dataclass
class Item:
    key: str
    group: str
    data: dict[str, Any] = field(default_factory=dict)


class Evaluation(Protocol):
    kind: str

    def plan(self) -> list[Item]: ...

    def fill(self, runner: "Runner", session: str, items: Sequence[Item]) -> None:
        """Put the group's documents into ``session``."""

    def score(self, runner: "Runner", session: str, item: Item) -> dict[str, Any]:
        """Ask the item's question in ``session`` and return its result (with the ``ask`` facts)."""

    def finish(self, run: EvalRunRecord, results: dict[str, dict], out_dir: Path) -> tuple[dict, dict]:
        """(results JSON, summary JSON); writes the run's files under ``out_dir``."""


ProgressFn = Callable[[int, int, str], None]  # done, total, label


class Runner:
    def __init__(self, q: Quire, run: EvalRunRecord, *, progress: ProgressFn | None = None, keep_sessions: bool = False) -> None:
        self.q = q
        self.run = run
        self.progress = progress or (lambda done, total, label: None)
        self.keep_sessions = keep_sessions
        self._session_no = 0

    # -- sessions ------------------------------------------------------------------
    def new_session(self) -> str:
        self._session_no += 1
        name = f"eval-{self.run.kind}-{self.run.id}-{self._session_no}"
        if any(s.name == name for s in self.q.sessions()):
            self.q.delete_session(name)  # left over from an interrupted run
        self.q.session(name)
        return name

    def drop_session(self, name: str) -> None:
        if not self.keep_sessions:
            try:
                self.q.delete_session(name)
            except NotFound:
                pass

    def add_text(self, session: SessionRef, name: str, text: str) -> None:
        """Ingest ``text`` as a .txt file named ``name``, through the app's own ingest pipeline."""
        with tempfile.TemporaryDirectory(prefix="quire-eval-") as tmp:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            self.ingest(session, [path])

    def ingest(self, session: SessionRef, paths: Iterable[Path]) -> None:
        results = self.q.ingest(session, list(paths))
        failed = [r for r in results if not r.ok]
        if failed:
            raise QuireError(f"Could not ingest {failed[0].name}: {failed[0].message}")

    # -- asking ----------------------------------------------------------------------
    def ask(self, session: str, question: str) -> dict[str, Any]:
        """The answer and how it was produced, as a JSON-ready dict; errors are recorded, not raised."""
        started = time.perf_counter()
        try:
            answer = self.q.answer(session, question, strategy=self.run.strategy)
        except QuireError as exc:
            return {"answer": "", "error": exc.user_message(), "citations": [], "wall_s": round(time.perf_counter() - started, 3)}
        t = answer.turn
        return {
            "answer": t.answer,
            "strategy_used": t.strategy,
            "citations": [
                {"ref": c.ref, "segment_id": c.segment_id, "document": c.document_name, "page": c.locator.page,
                 "status": c.status, "origin": c.origin, "quote": c.quote[:300]}
                for c in t.citations
            ],
            **usage_facts(t),
            "decode_s": round(max(0.0, t.total_s - t.ttft_s), 4),
            "share_seen": t.meta.get("share_seen"),
            "support": t.meta.get("support"),  # verified | unsupported | no_evidence (backend.citations.verdict)
            "checks_s": t.meta.get("checks_s"),
            "narrowed": t.meta.get("narrowed"),
            "notes": t.meta.get("notes", []),
            "wall_s": round(time.perf_counter() - started, 3),
        }

    def matrix_cell(self, session: str, fields: Sequence[str], field: str) -> dict[str, Any]:
        """One cell of the session's review matrix over ``fields`` (computed for all of them on first use,
        then kept), as a JSON-ready dict shaped like :meth:`ask`'s; errors are recorded, not raised."""
        started = time.perf_counter()
        try:
            cells = [e.cell for e in self.q.matrix(session, list(fields)) if isinstance(e, CellDone)]
        except QuireError as exc:
            return {"answer": "", "error": exc.user_message(), "citations": [], "wall_s": round(time.perf_counter() - started, 3)}
        wanted = Field.of(field).name
        cell = next(c for c in cells if c.field_name == wanted)
        if cell.status == "not_found":
            answer = "Not found: the contract does not contain this."
        else:
            answer = cell.answer + (f' "{cell.quote}"' if cell.quote else "")
        citations = [] if cell.segment_id is None else [
            {"ref": str(cell.meta.get("ref", "")), "segment_id": cell.segment_id, "document": cell.document_name,
             "page": cell.locator.page, "status": cell.status, "origin": "matrix", "quote": cell.quote[:300]}]
        n_fields = max(1, len(fields))
        return {
            "answer": answer, "strategy_used": "matrix", "cell_status": cell.status, "citations": citations,
            "second_pass": cell.meta.get("second_pass"), "pass": cell.meta.get("pass"),
            "prompt_tokens": cell.meta.get("prompt_tokens", 0) // n_fields,
            "cached_tokens": cell.meta.get("cached_tokens", 0) // n_fields,
            "share_seen": round(cell.read_tokens / cell.total_tokens, 4) if cell.total_tokens else 1.0,
            # the document's fields are read together: each cell's share of the document's time
            "wall_s": round(float(cell.meta.get("wall_s", 0.0)) / n_fields, 3),
        }

    def cited_texts(self, asked: dict[str, Any]) -> list[str]:
        ids = [c["segment_id"] for c in asked.get("citations", []) if c.get("segment_id")]
        segs = self.q.segments_by_id(ids)
        return [segs[i].text for i in ids if i in segs]

    # -- the loop -------------------------------------------------------------------------
    def execute(self, evaluation: Evaluation, items: Sequence[Item]) -> dict[str, dict]:
        done = self.q.eval_items(self.run.id)
        total = len(items)
        count = sum(1 for it in items if it.key in done)
        self.progress(count, total, "resumed" if count else "starting")
        groups: dict[str, list[Item]] = {}
        for it in items:
            if it.key not in done:
                groups.setdefault(it.group, []).append(it)
        for group_items in groups.values():
            session = self.new_session()
            try:
                try:
                    evaluation.fill(self, session, group_items)
                except QuireError as exc:  # the group's documents could not be read: every item records it
                    for it in group_items:
                        result = {"error": exc.user_message(), **it.data}
                        self.q.save_eval_item(self.run.id, it.key, result)
                        done[it.key] = result
                        count += 1
                        self.progress(count, total, it.key)
                    continue
                for it in group_items:
                    result = evaluation.score(self, session, it)
                    self.q.save_eval_item(self.run.id, it.key, result)
                    done[it.key] = result
                    count += 1
                    self.progress(count, total, _label(it.key, result))
            finally:
                self.drop_session(session)
        return {it.key: done[it.key] for it in items if it.key in done}


def _label(key: str, result: dict) -> str:
    if result.get("error"):
        return f"{key}: error"
    score = result.get("score")
    return f"{key}: {score:.2f}" if isinstance(score, (int, float)) else key


# -- helpers shared by the evaluations ------------------------------------------------------------
def usage_facts(turn: TurnRecord) -> dict[str, Any]:
    """The turn's token counts and timings (``prompt_tokens`` ... ``total_s``), as the record names them."""
    return {k: v for k, v in asdict(turn).items() if k.endswith(("_tokens", "_s"))}


def sha_files(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        h.update(p.name.encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def sha_texts(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    return h.hexdigest()


def timings(results: Iterable[dict]) -> dict[str, Any]:
    """Prefill (time to first token), decode and token counts over the answered items."""
    rows = [r for r in results if not r.get("error") and "total_s" in r]
    if not rows:
        return {"answered": 0}
    decode_tokens = sum(r.get("completion_tokens", 0) for r in rows)
    decode_s = sum(r.get("decode_s", 0.0) for r in rows)
    return {
        "answered": len(rows),
        "ttft_s_mean": round(statistics.fmean(r["ttft_s"] for r in rows), 3),
        "ttft_s_median": round(statistics.median(r["ttft_s"] for r in rows), 3),
        "prefill_s_total": round(sum(r["ttft_s"] for r in rows), 2),
        "decode_s_total": round(decode_s, 2),
        "decode_tok_s": round(decode_tokens / decode_s, 2) if decode_s else None,
        "prompt_tokens_mean": round(statistics.fmean(r.get("prompt_tokens", 0) for r in rows), 1),
        "prefill_tok_s": round(
            sum(r.get("prompt_tokens", 0) - r.get("cached_tokens", 0) for r in rows) / max(1e-9, sum(r["ttft_s"] for r in rows)), 1
        ),
        "cached_tokens_total": sum(r.get("cached_tokens", 0) for r in rows),
        "wall_s_total": round(sum(r.get("wall_s", 0.0) for r in rows), 2),
    }


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    return path


def write_table(out_dir: Path, stem: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Path]:
    """The same table as CSV and Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    fmt = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v).replace("|", "\\|"))  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [csv_path, md_path]


class StderrProgress:
    """A one-line progress bar on stderr: done/total, percent, elapsed, ETA and the last item."""

    def __init__(self, prefix: str, stream=None) -> None:
        self.prefix = prefix
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()
        self.first_done: int | None = None

    def __call__(self, done: int, total: int, label: str) -> None:
        if self.first_done is None:
            self.first_done, self.started = done, time.perf_counter()
        elapsed = time.perf_counter() - self.started
        new = done - self.first_done
        eta = elapsed / new * (total - done) if new else 0
        width = 24
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        line = f"\r{self.prefix} [{bar}] {done}/{total} {elapsed:5.0f}s eta {eta:5.0f}s  {label[:60]}"
        print(line.ljust(120), end="" if done < total else "\n", file=self.stream, flush=True)
