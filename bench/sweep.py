"""Paying for reading once: sweep and matrix runs over the same contracts, first against second. One run prints
``name=value`` lines; each ratio is against a run measured here, in the same process, on the same corpus.

    .venv/bin/python bench/sweep.py [--corpus-tokens 20000] [--contracts 5] [--fields 5] [--window 2048]
                                    [--kv-cache-type f16|q8_0] [--home DIR]

Sweep, on the shortest CUAD contracts that together hold about --corpus-tokens:
- sweep_first_s / sweep_second_s / sweep_ratio: two different sweep questions over the whole session; the
  second loads each shard's KV state (content-keyed on disk) instead of reading it (target ratio <= 0.10).
- warm_s: a fresh data directory, the shards prepared as an upload would prepare them in the background
  (``--warm-shards``; here waited for), then sweep_warmed_first_s, the first question after it, and
  sweep_warmed_ratio against sweep_first_s (target <= 0.25).
Matrix, on the first --contracts of them:
- matrix_first_s / matrix_new_fields_s / matrix_ratio: N CUAD fields, then N other fields (each shard's state
  is loaded, not prefilled, for the new fields).
- matrix_resume_s: the first fields again: every cell is kept, nothing is computed.
Disk:
- states / states_mb: the KV states on disk afterwards (bounded by --prefix-cache-mb);
  state_kb_per_1k_tokens: the prepared states' bytes over the tokens they hold (each shard with the
  system text and passage tags it is sent with).

The contracts are the shared corpus's CUAD PDFs, shortest text first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.settings import Settings  # noqa: E402
from quire.api import CUAD_CATEGORIES, CellDone, MatrixRun, Quire  # noqa: E402

CORPUS = Path(os.environ.get("QUIRE_CORPUS", Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"))
CUAD = CORPUS / "contracts" / "cuad" / "pdf"
FIRST = ["Governing Law", "Expiration Date", "Anti-Assignment", "Cap on Liability", "Termination for Convenience",
         "Parties", "Agreement Date"]
SECOND = ["Renewal Term", "Notice Period to Terminate Renewal", "Insurance", "Audit Rights", "Exclusivity",
          "Effective Date", "Document Name"]
QUESTIONS = ("List every party named in each agreement.", "Which state's law governs each agreement?")


def _text_size(pdf: Path) -> int:
    """A contract's size as CUAD's plain text has it (a PDF's bytes say little about its words)."""
    txt = pdf.parent.parent / "txt" / f"{pdf.stem}.txt"
    return txt.stat().st_size if txt.is_file() else pdf.stat().st_size


def pick(corpus_tokens: int, at_least: int) -> list[Path]:
    """The shortest contracts that together hold about ``corpus_tokens`` (4 characters a token), at least N."""
    chosen, size = [], 0
    for pdf in sorted(CUAD.glob("*"), key=_text_size):
        if size >= corpus_tokens * 4 and len(chosen) >= at_least:
            break
        chosen.append(pdf)
        size += _text_size(pdf)
    return chosen


def timed_sweeps(q: Quire, session: str, questions) -> list[float]:
    times = []
    for question in questions:
        started = time.perf_counter()
        answer = q.answer(session, question, strategy="sweep")
        times.append(time.perf_counter() - started)
        print(f"  sweep: {answer.turn.meta.get('shards')} parts, {answer.turn.cached_tokens} of "
              f"{answer.turn.prompt_tokens} prompt tokens cached, {answer.turn.completion_tokens} tokens written, "
              f"{times[-1]:.1f} s", file=sys.stderr, flush=True)
    return times


def state_files(settings: Settings) -> list[Path]:
    return [p for p in (settings.cache_dir / "llama-states").glob("*.llstate") if p.is_file()]


def timed_matrix(q: Quire, session: str, fields: list[str]) -> tuple[float, MatrixRun]:
    started = time.perf_counter()
    run = None
    for event in q.matrix(session, fields):
        if isinstance(event, MatrixRun):
            run = event
        elif isinstance(event, CellDone) and not event.reused:
            print(f"  cell {event.cell.document_name[:40]} / {event.cell.field_name}: {event.cell.status}",
                  file=sys.stderr, flush=True)
    return time.perf_counter() - started, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-tokens", type=int, default=20000)
    parser.add_argument("--contracts", type=int, default=5, help="Contracts of the matrix part.")
    parser.add_argument("--fields", type=int, default=5)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--kv-cache-type", default="f16", choices=("f16", "q8_0"))
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-matrix", action="store_true")
    parser.add_argument("--home", type=Path, default=None, help="Data directory (default: a new temporary one).")
    args = parser.parse_args()
    assert {c.name for c in CUAD_CATEGORIES} >= set(FIRST + SECOND)
    home = args.home or Path(tempfile.mkdtemp(prefix="quire-bench-sweep-"))
    pdfs = pick(args.corpus_tokens, args.contracts)
    base = Settings.from_env(home=home / "cold", context_window=args.window, threads=args.threads, workers=1,
                             kv_cache_type=args.kv_cache_type)
    print(f"window={args.window}")
    print(f"kv_cache_type={args.kv_cache_type}")
    if not args.skip_sweep:
        with Quire(base) as q:
            q.ingest("bench", pdfs)
            tokens = q.budget("bench", exact=True).total
            print(f"sweep_contracts={len(pdfs)}")
            print(f"corpus_tokens={tokens}")
            times = timed_sweeps(q, "bench", QUESTIONS)
        print(f"sweep_first_s={times[0]:.1f}")
        print(f"sweep_second_s={times[1]:.1f}")
        print(f"sweep_ratio={times[1] / times[0]:.3f}")
        warmed = base.replace(home=home / "warmed")
        with Quire(warmed) as q:
            q.ingest("bench", pdfs)
            started = time.perf_counter()
            w = q.warm("bench", wait=True)
            print(f"warm_s={time.perf_counter() - started:.1f} ({w.done} of {w.total} shards)")
            prepared = state_files(warmed)
            size = sum(p.stat().st_size for p in prepared)
            held = sum(len(q.runtime().state_tokens(p)) for p in q.shard_prompts("bench"))  # tokens the states hold
            [warm_first] = timed_sweeps(q, "bench", QUESTIONS[:1])
        print(f"sweep_warmed_first_s={warm_first:.1f}")
        print(f"sweep_warmed_ratio={warm_first / times[0]:.3f}")
        print(f"state_kb_per_1k_tokens={size / 1024 / max(held / 1000, 1e-9):.0f} ({len(prepared)} prepared "
              f"states, {size / 2**20:.1f} MiB, holding {held} tokens: the shards with their prompt text)")
    if not args.skip_matrix:
        settings = base.replace(home=home / "matrix")
        with Quire(settings) as q:
            q.ingest("bench", pdfs[: args.contracts])
            first_s, first = timed_matrix(q, "bench", FIRST[: args.fields])
            new_s, new = timed_matrix(q, "bench", SECOND[: args.fields])
            resume_s, resumed = timed_matrix(q, "bench", FIRST[: args.fields])
            print(f"matrix_cells={first.total}")
            print(f"matrix_first_s={first_s:.1f}")
            print(f"matrix_new_fields_s={new_s:.1f}")
            print(f"matrix_ratio={new_s / first_s:.3f}")
            print(f"matrix_resume_s={resume_s:.2f} (reused {resumed.reused} of {resumed.total})")
            cells = q.matrix_cells("bench")
            print(f"matrix_verified={sum(c.status == 'verified' for c in cells)} of {len(cells)}")
        states = state_files(settings)
        print(f"states={len(states)}")
        print(f"states_mb={sum(p.stat().st_size for p in states) / 2**20:.1f}")


if __name__ == "__main__":
    main()
