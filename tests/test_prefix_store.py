"""The on-disk store of KV states: bounded, and clean after a kill in the middle of a save."""

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from backend.prefix_store import PrefixStore

ROOT = Path(__file__).resolve().parent.parent


def test_a_save_killed_midway_leaves_a_temporary_the_next_start_removes_and_counts(tmp_path):
    store_dir = tmp_path / "llama-states"
    writer = textwrap.dedent(f"""
        import sys, time
        from backend.prefix_store import PrefixStore
        tmp = PrefixStore({str(store_dir)!r}, 1 << 30).reserve("k" * 40)
        with open(tmp, "wb") as fh:
            fh.write(b"\\0" * (24 << 20))
            fh.flush()
            print(tmp, flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.is_file() and tmp.stat().st_size == 24 << 20
    alive = PrefixStore(store_dir, 1 << 30)  # the writer still runs: its temporary is kept, and counted
    assert tmp.is_file() and alive.stale_removed == 0 and alive.size() == 24 << 20
    proc.send_signal(signal.SIGKILL)  # killed mid-save: the rename never happens
    proc.wait()
    store = PrefixStore(store_dir, 1 << 30)
    assert not tmp.exists()
    assert (store.stale_removed, store.stale_bytes) == (1, 24 << 20)
    assert store.size() == 0


def test_states_are_bounded_with_temporaries_counted(tmp_path):
    store = PrefixStore(tmp_path, max_bytes=3000)
    for key in ("a", "b", "c"):
        tmp = store.reserve(key)
        tmp.write_bytes(b"x" * 1000)
        store.commit(key, tmp)
    assert store.size() == 3000 and store.get("a") is not None
    pending = store.reserve("d")  # a save in progress in this process takes its room
    pending.write_bytes(b"x" * 1000)
    store.evict()
    assert store.size() == 3000 and pending.exists()
    assert sum(store.get(k) is not None for k in "abc") == 2
