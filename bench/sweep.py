"""Paying for reading once: sweep and matrix runs over the same contracts, first against second. One run prints
``name=value`` lines; each ratio is against the first run measured here, in the same process.

    .venv/bin/python bench/sweep.py [--contracts 5] [--fields 5] [--window 2048] [--home DIR]

- sweep_first_s / sweep_second_s / sweep_ratio: two different sweep questions over the whole session (the
  second finds each shard's KV state in the prefix store, content-keyed; target ratio <= 0.10).
- matrix_first_s / matrix_new_fields_s / matrix_ratio: the review matrix over the contracts with N CUAD
  fields, then with N other fields (each shard's state is loaded, not prefilled, for the new fields).
- matrix_resume_s: the first fields again: every cell is kept, nothing is computed.
- states_mb / states / state_kb_per_1k_tokens: the KV states on disk afterwards (bounded by --prefix-cache-mb).

The contracts are the shared corpus's CUAD PDFs, shortest text first (so a small run is quick).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.settings import Settings  # noqa: E402
from quire.api import CUAD_CATEGORIES, CellDone, MatrixRun, Quire  # noqa: E402

CUAD = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "contracts" / "cuad" / "pdf"
FIRST = ["Governing Law", "Expiration Date", "Anti-Assignment", "Cap on Liability", "Termination for Convenience",
         "Parties", "Agreement Date"]
SECOND = ["Renewal Term", "Notice Period to Terminate Renewal", "Insurance", "Audit Rights", "Exclusivity",
          "Effective Date", "Document Name"]
QUESTIONS = ("List every party named in each agreement.", "Which state's law governs each agreement?")


def _text_size(pdf: Path) -> int:
    """A contract's size as CUAD's plain text has it (a PDF's bytes say little about its words)."""
    txt = pdf.parent.parent / "txt" / f"{pdf.stem}.txt"
    return txt.stat().st_size if txt.is_file() else pdf.stat().st_size


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
    parser.add_argument("--contracts", type=int, default=5)
    parser.add_argument("--fields", type=int, default=5)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--home", type=Path, default=None, help="Data directory (default: a new temporary one).")
    args = parser.parse_args()
    assert {c.name for c in CUAD_CATEGORIES} >= set(FIRST + SECOND)
    home = args.home or Path(tempfile.mkdtemp(prefix="quire-bench-sweep-"))
    pdfs = sorted(CUAD.glob("*"), key=_text_size)[: args.contracts]
    settings = Settings.from_env(home=home, context_window=args.window, threads=args.threads, workers=1,
                                 max_answer_tokens=128)
    with Quire(settings) as q:
        q.ingest("bench", pdfs)
        tokens = q.budget("bench", exact=True).total
        print(f"contracts={len(pdfs)}")
        print(f"corpus_tokens={tokens}")
        print(f"window={q.runtime().context_window}")
        if not args.skip_sweep:
            times = []
            for question in QUESTIONS:
                started = time.perf_counter()
                answer = q.answer("bench", question, strategy="sweep")
                times.append(time.perf_counter() - started)
                print(f"  sweep: {answer.turn.meta.get('shards')} parts, {answer.turn.cached_tokens} of "
                      f"{answer.turn.prompt_tokens} prompt tokens cached", file=sys.stderr)
            print(f"sweep_first_s={times[0]:.1f}")
            print(f"sweep_second_s={times[1]:.1f}")
            print(f"sweep_ratio={times[1] / times[0]:.3f}")
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
    states = [p for p in (settings.cache_dir / "llama-states").glob("*") if p.is_file() and not p.name.startswith(".")]
    size = sum(p.stat().st_size for p in states)
    print(f"states={len(states)}")
    print(f"states_mb={size / 2**20:.1f}")
    print(f"state_kb_per_1k_tokens={size / 1024 / max(tokens / 1000, 1e-9):.0f} (all states over the corpus tokens; "
          "a shard's state also holds its first answer)")


if __name__ == "__main__":
    main()
