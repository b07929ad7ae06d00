"""``python app.py eval needle|cuad|leval|evidence|list``: the command line of the built-in evaluations.

Wired into quire/cli.py with ``add_parser(sub, common)`` and ``COMMANDS["eval"] = run``.
Evaluations reach the app only through :class:`quire.api.Quire`; matplotlib loads when a plot is drawn.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from core.errors import QuireError
from core.records import EvalRunRecord
from core.settings import Settings
from evals import evidence, needle
from evals.cuad import CuadEval
from evals.leval import LEvalEval
from evals.runner import Runner, StderrProgress, sha_texts
from quire.api import Quire

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


def _corpus() -> Path:
    return Path(os.environ.get("QUIRE_CORPUS") or CORPUS)


def add_parser(subparsers, common_parent: argparse.ArgumentParser) -> argparse.ArgumentParser:
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--strategies", default="", metavar="LIST",
                        help="Comma-separated context strategies to evaluate, one run each "
                             "(auto, full, focus, sweep; matrix for cuad: the review matrix); default: --strategy.")
    shared.add_argument("--limit", type=int, default=0, help="Evaluate only the first N items (0: all).")
    shared.add_argument("--out", type=Path, default=None, help="Folder for the result files (default: HOME/evals/KIND-RUN).")
    shared.add_argument("--resume", type=int, default=0, metavar="RUN_ID",
                        help="Continue this run; an unfinished run with the same parameters is resumed anyway.")
    shared.add_argument("--answer-tokens", type=int, default=0,
                        help="Most tokens per answer (default: 64 for needle, else --max-answer-tokens).")
    shared.add_argument("--keep-sessions", action="store_true", help="Keep the eval-* sessions for inspection.")
    shared.add_argument("--quiet", action="store_true", help="No progress bar.")

    p = subparsers.add_parser("eval", parents=[common_parent], help="Measure how well the model and settings read long documents.")
    esub = p.add_subparsers(dest="eval_command", metavar="EVAL")
    esub.required = True

    n = esub.add_parser("needle", parents=[common_parent, shared], help="Needle in a haystack: depth by context length heatmap.")
    n.add_argument("--variant", default="single", choices=("single", "multi", "multikey", "multivalue", "absent"),
                   help="single needle, several needles, several keys, several values, or no needle (answer: not found).")
    n.add_argument("--lengths", default="", help="Comma-separated context lengths in tokens "
                                                 "(default: 1/8, 1/4, 1/2, 1 and 2 times the window).")
    n.add_argument("--depths", default="0,25,50,75,100", help="Comma-separated needle depths in percent of the haystack.")
    n.add_argument("--needle-config", type=Path, default=None, help="needle_config.json (default: the corpus's).")
    n.add_argument("--haystack", type=Path, default=None, help="Folder of .txt files (default: the corpus essays).")
    n.add_argument("--session", default="", help="Use this session's documents as the haystack (read only).")
    n.add_argument("--needle", default="", help="A needle sentence instead of the configured one (single variant).")
    n.add_argument("--question", default="", help="The question that retrieves --needle.")
    n.add_argument("--values", default="", help="Semicolon-separated values a right answer contains.")

    c = esub.add_parser("cuad", parents=[common_parent, shared], help="Clause finding on CUAD-format contracts.")
    c.add_argument("--path", type=Path, default=None, help="CUAD-format folder (default: the corpus's contracts/cuad).")
    c.add_argument("--contracts", default="", help="A number N (first N) or comma-separated contract titles.")
    c.add_argument("--categories", default="", help="Semicolon-separated clause categories (default: all).")
    c.add_argument("--order", choices=("file", "size"), default="file", help="Contract order: as listed, or smallest first.")

    e = esub.add_parser("leval", parents=[common_parent, shared], help="Long-context QA on L-Eval jsonl tasks.")
    e.add_argument("--path", type=Path, default=None, help="A .jsonl task file or a folder of them (default: the corpus's L-Eval).")
    e.add_argument("--tasks", default="", help="Comma-separated task names (file stems) to run.")

    evidence.add_parser(esub, [common_parent])

    lst = esub.add_parser("list", parents=[common_parent], help="List stored evaluation runs.")
    lst.add_argument("--kind", default="", help="Only runs of this kind (needle, cuad, leval).")
    return p


def run(settings: Settings, args) -> int:
    if args.eval_command == "list":
        return _list(settings, args)
    if args.eval_command == "evidence":
        return evidence.run(settings, args, _corpus())
    strategies = [s.strip() for s in (args.strategies or settings.strategy).split(",") if s.strip()]
    if "matrix" in strategies and args.eval_command != "cuad":
        raise QuireError("The matrix strategy is scored on contracts only.", hint="Use it with `app.py eval cuad`.")
    status = 0
    for strategy in strategies:
        status = max(status, run_one(settings, args, strategy))
    return status


def run_one(settings: Settings, args, strategy: str, *, progress=None) -> int:
    kind = args.eval_command
    answer_tokens = args.answer_tokens or (64 if kind == "needle" else settings.max_answer_tokens)
    # Deterministic answers; eval documents are small or one at a time, so ingest reads them in this process.
    settings = settings.replace(temperature=0.0, max_answer_tokens=answer_tokens, workers=1)
    with Quire(settings) as q:
        evaluation, corpus_sha, params = _evaluation(kind, args, q, settings)
        params |= {"strategy": strategy, "answer_tokens": answer_tokens, "seed": settings.seed, "temperature": 0.0}
        run_rec = _open_run(q, kind, strategy, corpus_sha, params, args)
        items = evaluation.plan()
        if args.limit:
            items = items[: args.limit]
        if progress is None and not args.quiet:
            progress = StderrProgress(f"eval {kind} #{run_rec.id} {strategy}")
        runner = Runner(q, run_rec, progress=progress, keep_sessions=args.keep_sessions)
        status = "running"
        try:
            results = runner.execute(evaluation, items)
            status = "done" if len(results) == len(evaluation.plan()) else "partial"
        finally:
            if status == "running":
                q.finish_eval_run(run_rec.id, results={}, summary={}, status="interrupted")
        out_dir = Path(run_rec.out_dir)
        results_json, summary = evaluation.finish(run_rec, results, out_dir)
        q.finish_eval_run(run_rec.id, results=results_json, summary=summary, status=status)
    _report(run_rec, summary, status, out_dir)
    return 1 if results and summary.get("errors") == len(results) else 0


def _open_run(q: Quire, kind: str, strategy: str, corpus_sha: str, params: dict[str, Any], args) -> EvalRunRecord:
    rt = q.runtime()
    wanted = EvalRunRecord(kind=kind, runtime=rt.name, model=rt.model_name, strategy=strategy, window=rt.context_window,
                           corpus_sha=corpus_sha, params=params | {"limit": args.limit, "out": str(args.out or "")})
    if args.resume:
        found = q.eval_run(args.resume)
        if found.kind != kind:
            raise QuireError(f"Run {args.resume} is a {found.kind} run, not {kind}.")
    else:
        found = q.unfinished_eval_run(wanted)
    if found is not None:
        if args.out:
            q.set_eval_out_dir(found.id, str(args.out))
            found.out_dir = str(args.out)
        return found
    run = q.create_eval_run(wanted)
    out_dir = str(args.out or q.settings.home / "evals" / f"{kind}-{run.id}-{strategy}")
    q.set_eval_out_dir(run.id, out_dir)
    return q.eval_run(run.id)


def _evaluation(kind: str, args, q: Quire, settings: Settings):
    if kind == "needle":
        return _needle(args, q)
    if kind == "cuad":
        path = args.path or _corpus() / "contracts" / "cuad"
        ev = CuadEval.from_folder(path, contracts=args.contracts, categories=_split(args.categories, ";"), order=args.order)
        return ev, ev.corpus_sha(), {"path": str(path), "contracts": ev.contract_titles(), "categories": ev.categories}
    if kind == "leval":
        path = args.path or _corpus() / "longcontext" / "leval"
        ev = LEvalEval.from_path(path, tasks=_split(args.tasks, ","))
        return ev, ev.corpus_sha(), {"path": str(path), "tasks": ev.task_names()}
    raise QuireError(f"Unknown evaluation {kind!r}.", hint="Choose needle, cuad, leval or list.")


def _needle(args, q: Quire):
    if args.session:
        source, sha = needle.session_text(q, args.session)
        origin = f"session:{args.session}"
    else:
        folder = args.haystack or _corpus() / "haystack" / "paul_graham_essays"
        source, sha = needle.essays_text(folder)
        origin = str(folder)
    config_path = args.needle_config or _corpus() / "haystack" / "needle_config.json"
    config = needle.load_config(config_path)
    window = q.runtime().context_window
    lengths = [int(x) for x in _split(args.lengths, ",")] or [window // 8, window // 4, window // 2, window, window * 2]
    p = needle.NeedleParams(
        variant=args.variant, lengths=lengths, depths=_depths(args.depths), config=config, needle=args.needle,
        question=args.question, values=_split(args.values, ";"), seed=q.settings.seed,
    )
    params = {"variant": p.variant, "lengths": lengths, "depths": p.depths, "haystack": origin,
              "needle_config": str(config_path), "needle": p.needle, "question": p.question, "values": p.values}
    return needle.NeedleEval(p, source), sha_texts([sha, json.dumps(config, sort_keys=True)]), params


def _depths(spec: str) -> list[float]:
    depths = [float(x) for x in _split(spec, ",")] or [0.0, 25.0, 50.0, 75.0, 100.0]
    if any(not 0 <= d <= 100 for d in depths):
        raise QuireError(f"--depths {spec!r}: each depth must be between 0 and 100 percent.")
    return depths


def _split(value: str, sep: str) -> list[str]:
    return [v.strip() for v in (value or "").split(sep) if v.strip()]


def _report(run, summary: dict, status: str, out_dir: Path) -> None:
    headline = {k: summary.get(k) for k in ("score", "hit_rate", "f1", "page_hit", "items", "errors")
                if summary.get(k) is not None}
    print(f"run {run.id} ({run.kind}, {run.strategy}, {run.model}, window {run.window}): {status} {headline}")
    t = summary.get("timings", {})
    if t.get("answered"):
        print(f"  time to first token {t['ttft_s_mean']:.2f} s mean, prefill {t['prefill_tok_s']} tok/s, "
              f"decode {t['decode_tok_s']} tok/s, {t['wall_s_total']:.0f} s in all")
    if ends := summary.get("answers"):
        print(f"  answers ending verified {ends['verified']:.0%}, quoted only {ends['quoted']:.0%}, "
              f"unsupported {ends['unsupported']:.0%} of {ends['answers']}; the checks took "
              f"{ends['checks_share_of_wall'] if ends['checks_share_of_wall'] is not None else '-'} of the answer time")
    for name in summary.get("files", []):
        print(f"  {out_dir / name}")


def _list(settings: Settings, args) -> int:
    with Quire(settings) as q:
        rows = q.eval_runs(args.kind or None)
    if not rows:
        print("No evaluation runs yet. Start one with `python app.py eval needle --limit 3`.")
    for r in rows:
        score = r.summary.get("score", r.summary.get("f1"))
        print(f"{r.id}\t{r.created_at}\t{r.kind}\t{r.strategy}\t{r.model}\twindow {r.window}\t"
              f"{r.status}\tscore {score if score is not None else '-'}\t{r.plot() or r.out_dir}")
    return 0
