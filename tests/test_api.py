"""The API's own contracts with a runtime that needs no model: streams that are abandoned, plugins from the CLI."""

from __future__ import annotations

import threading
from contextlib import closing

from core.settings import Settings
from quire.api import Answer, Delta, Quire, runtime_choices
from quire.cli import main
from tests.fake_runtime import EchoRuntime, install_plugin

NOTE = "Shipping note\n\nThe pallet count for order 7781 is nineteen.\n"


def _session(q: Quire, tmp_path) -> str:
    path = tmp_path / "shipping.txt"
    path.write_text(NOTE)
    (result,) = q.ingest("s", [path])
    assert result.ok
    return "s"


def _within(seconds: float, call):
    """Run ``call`` on a thread; fail instead of hanging when it blocks (a lock nobody released)."""
    out: dict = {}
    worker = threading.Thread(target=lambda: out.setdefault("value", call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still blocked after {seconds} s"
    return out.get("value")


def test_a_stream_abandoned_half_way_frees_the_model_for_the_next_question(settings, tmp_path):
    runtime = EchoRuntime(settings)
    with Quire(settings.replace(workers=1), runtime=runtime) as q:
        session = _session(q, tmp_path)
        stream = q.ask(session, "How many pallets?")
        assert isinstance(next(e for e in stream if isinstance(e, Delta)), Delta)  # half-way: one word read
        stream.close()  # the reader goes away
        assert not runtime.busy.locked()  # the runtime's stream was closed with it, not left to the collector
        answer = _within(10, lambda: q.answer(session, "How many pallets, again?"))
        assert isinstance(answer, Answer) and "nineteen" in answer.text
        assert [c.status for c in answer.turn.citations] == ["verified"]
        with closing(q.ask(session, "And once more?")) as events:  # the way the UI and the CLI read a stream
            for event in events:
                break
        assert _within(10, lambda: q.answer(session, "Last one?")).turn.runtime == "echo"
    with Quire(settings) as q:  # only the answers read to the end were stored
        assert [t.question for t in q.turns("s")] == ["How many pallets, again?", "Last one?"]


def test_a_runtime_registered_by_a_plugin_works_from_the_cli(settings, tmp_path, monkeypatch, capsys):
    install_plugin(tmp_path / "site", monkeypatch)
    assert "echo" in runtime_choices()
    note = tmp_path / "shipping.txt"
    note.write_text(NOTE)
    assert main(["ingest", str(note), "--session", "s", "--workers", "1"]) == 0
    assert main(["--runtime", "echo", "ask", "--session", "s", "How many pallets?"]) == 0
    out = capsys.readouterr().out
    assert "nineteen" in out and "[S1] shipping.txt" in out
    monkeypatch.setenv("QUIRE_RUNTIME", "echo")  # the environment names it the same way
    with Quire(Settings.from_env()) as q:
        assert q.answer("s", "Again?").turn.runtime == "echo"
