"""Concurrent askers: one question holds the model at a time, and each waiting one hears its place in line
and the expected wait, in the API and in the chat."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest

from backend.base import Delta, Event, GenerateOptions, Prompt, Runtime, Usage
from quire.api import Answer, Quire, Waiting

ANSWER_S = 0.6


class SlowModel(Runtime):
    """A runtime that takes ANSWER_S to answer, and records when it was busy."""

    name = "slow"

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.busy: list[tuple[float, float]] = []

    @property
    def context_window(self) -> int:
        return 8192

    def generate(self, prompt: Prompt, options: GenerateOptions) -> Iterator[Event]:
        start = time.monotonic()
        time.sleep(ANSWER_S)
        yield Delta("The boiler serial number is QX-4471 [S1].")
        self.busy.append((start, time.monotonic()))
        yield Usage(prompt_tokens=100, completion_tokens=10)


@pytest.fixture
def q(settings, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("The boiler serial number is QX-4471.\n")
    model = SlowModel(settings)
    with Quire(settings.replace(workers=1), runtime=model) as quire:
        quire.ingest("s", [note])
        quire.model = model
        yield quire


def _ask_together(q, n: int) -> list[list]:
    events: list[list] = [[] for _ in range(n)]

    def ask(i: int) -> None:
        for event in q.ask("s", f"What is the serial number? ({i})"):
            events[i].append((time.monotonic(), event))

    threads = []
    for i in range(n):
        threads.append(threading.Thread(target=ask, args=(i,)))
        threads[-1].start()
        time.sleep(0.1)  # they join the line in this order
    for t in threads:
        t.join(timeout=60)
    return events


def test_waiting_askers_hear_their_place_and_the_expected_wait(q):
    events = _ask_together(q, 3)
    assert all(isinstance(e[-1][1], Answer) for e in events)  # all answered
    waits = [[ev for _, ev in e if isinstance(ev, Waiting)] for e in events]
    assert waits[0] == []  # the first had the model at once
    assert [w.place for w in waits[1]] == [1]
    assert [w.place for w in waits[2]][:2] == [2, 1]
    assert waits[1][0].expected_s is None and "no estimate yet" in waits[1][0].message  # nothing timed yet
    timed = waits[2][-1]  # told after the first answer: one answer's time, less what the current one took
    assert timed.place == 1 and timed.expected_s is not None and 0 < timed.expected_s <= ANSWER_S + 0.5
    assert timed.message.startswith("Waiting for the model: next in line; expected wait about ")
    # one at a time, first come first served
    spans = sorted(q.model.busy)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    finished = [e[-1][0] for e in events]
    assert finished == sorted(finished)


def test_an_asker_who_gives_up_leaves_the_line(q):
    first = q.ask("s", "What is the serial number?")
    assert next(first).message.startswith("Reading")  # holds the model now
    waiting = q.ask("s", "And again?")
    told = next(waiting)
    assert isinstance(told, Waiting) and told.place == 1
    waiting.close()  # the browser went away
    third = q.ask("s", "Once more?")
    assert next(third).place == 1  # the one who left is not ahead of it
    list(first)
    assert isinstance(list(third)[-1], Answer)


def test_the_chat_shows_a_waiting_asker_its_place(q):
    from ui.chat import ChatTab

    tab = ChatTab(q)
    holder = q.ask("s", "What is the serial number?")
    next(holder)
    shown = []
    for update in tab.ask("s", "When does it end?"):
        shown.append(update[0][-1]["content"])
        if "Waiting" in shown[-1]:
            break
    assert any("Waiting for the model: next in line" in text for text in shown), shown
    list(holder)
