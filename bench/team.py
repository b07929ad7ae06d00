"""Team-server benchmark: 8 concurrent askers on two app processes that share one PostgreSQL database, one blob
directory and one remote runtime (llama.cpp's own server on loopback, standing in for an SGLang server).

    .venv/bin/python bench/team.py [--askers 8] [--max-answer-tokens 64]

Prints ``name=value`` lines: ``two_processes_8_askers_s`` (wall time until every one of the 8 concurrent
questions has its stored turn, half sent to each process), beside the baseline measured in the same run,
``one_process_8_in_turn_s`` (the same 8 questions one after another through one process), their ratio, and each
asker's time to its first answer event and to its turn. Everything (the cluster, the runtime, the two app
processes) is started here, on loopback, and removed at the end. Needs PostgreSQL's binaries
(``/usr/lib/postgresql/*/bin``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import Settings  # noqa: E402  (the repository on the path first)
from quire.api import Quire  # noqa: E402
from tests.postgres import Cluster, binaries  # noqa: E402  (the test suite's throwaway cluster and servers)
from tests.servers import start_app, start_llama_server, stop_app  # noqa: E402

MEMO = ("Harbor Logistics Memo\n\nThe warehouse in Tromso stores spare turbine blades for the northern wind farms.\n"
        "The access code for the north gate is PELICAN-42.\nDeliveries arrive every Tuesday before noon. "
        "The night guard is named Ingrid Solberg.\nThe pallet count for order 7781 is nineteen.\n")
QUESTIONS = ["What is the access code for the north gate?", "When do deliveries arrive?",
             "Who is the night guard?", "How many pallets are in order 7781?", "What does the warehouse store?",
             "Where is the warehouse?", "Which wind farms get the blades?", "What is stored in Tromso?"]


def ask(url: str, token: str, question: str) -> dict:
    started = time.perf_counter()
    first, deltas = None, 0
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=900) as c:
        with c.stream("POST", "/api/v1/sessions/memo/ask", json={"question": question}) as response:
            last = None
            for line in response.iter_lines():
                if line.startswith("event: delta"):
                    deltas += 1
                    first = first or time.perf_counter() - started
                if line.startswith("data: "):
                    last = json.loads(line[6:])
    if not last or not last.get("id"):
        raise RuntimeError(f"no stored turn for {question!r}: {last}")
    return {"first_delta_s": round(first or 0, 3), "turn_s": round(time.perf_counter() - started, 3),
            "deltas": deltas, "completion_tokens": last.get("completion_tokens", 0)}


def concurrently(jobs: list[tuple[str, str, str]]) -> tuple[float, list[dict]]:
    results: list[dict | Exception] = [None] * len(jobs)  # type: ignore[list-item]

    def run(i: int) -> None:
        try:
            results[i] = ask(*jobs[i])
        except Exception as exc:  # reported below
            results[i] = exc

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise RuntimeError(f"{len(errors)} askers failed: {errors[0]}")
    return wall, results  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--askers", type=int, default=8)
    parser.add_argument("--max-answer-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    bin_dir = binaries()
    if bin_dir is None:
        print("PostgreSQL's binaries are not installed (/usr/lib/postgresql/*/bin)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="quire-bench-team-"))
    cluster = Cluster(bin_dir).start()
    llama = apps = None
    try:
        url = cluster.database()
        llama, endpoint = start_llama_server(work)
        blobs = work / "blobs"
        homes = [work / "a", work / "b"]
        for home in homes:
            home.mkdir()
        with Quire(Settings(home=homes[0], database_url=url, blob_dir=blobs, workers=1)) as q:
            q.add_user("bench", password="bench password")
            user = q.as_user("bench")
            token = user.create_token("bench")[1]
            (work / "memo.txt").write_text(MEMO)
            user.ingest("memo", [work / "memo.txt"])
        flags = ["--database-url", url, "--blob-dir", str(blobs), "--endpoint", endpoint + "/v1", "--workers", "1",
                 "--max-answer-tokens", str(args.max_answer_tokens)]
        apps = [start_app(home, *flags) for home in homes]
        urls = [u for _, u in apps]
        for u in urls:  # warm: each process connects to the runtime and learns its template once
            ask(u, token, "What is this memo about?")
        questions = [QUESTIONS[i % len(QUESTIONS)] + f" ({i})" for i in range(args.askers)]
        baseline_started = time.perf_counter()
        in_turn = [ask(urls[0], token, q) for q in questions]
        baseline = time.perf_counter() - baseline_started
        wall, each = concurrently([(urls[i % 2], token, q) for i, q in enumerate(questions)])  # the same 8
        with httpx.Client(base_url=urls[1], headers={"authorization": f"Bearer {token}"}, timeout=60) as c:
            stored = len(c.get("/api/v1/sessions/memo/turns").json())
        print(f"askers={args.askers}")
        print(f"two_processes_{args.askers}_askers_s={wall:.2f}")
        print(f"one_process_{args.askers}_in_turn_s={baseline:.2f}")
        print(f"ratio={wall / baseline:.3f}")
        print(f"first_delta_s_median={statistics.median(r['first_delta_s'] for r in each):.2f}")
        print(f"turn_s_median={statistics.median(r['turn_s'] for r in each):.2f} max={max(r['turn_s'] for r in each):.2f}")
        print(f"completion_tokens_median={statistics.median(r['completion_tokens'] for r in each)} "
              f"in_turn={statistics.median(r['completion_tokens'] for r in in_turn)}")
        print(f"in_turn_turn_s_median={statistics.median(r['turn_s'] for r in in_turn):.2f}")
        print(f"turns_stored={stored} expected={2 + 2 * args.askers}")
        return 0 if stored == 2 + 2 * args.askers else 1
    finally:
        for proc, _ in apps or []:
            stop_app(proc)
        if llama is not None:
            stop_app(llama)
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
