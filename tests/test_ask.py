"""The real CPU model answers from a real PDF, with a citation on the right page."""

import subprocess
import sys

import pymupdf
import pytest

from backend.base import Delta
from backend.sweep import Status
from core.errors import QuireError
from quire.api import Answer, Quire

FILLER = (
    "The quarterly operations review covered staffing, facilities and procurement. "
    "Teams reported steady progress and no unusual events were recorded in this period. "
)
FACT = "The vault access code is 7351."


def planted_pdf(path):
    doc = pymupdf.open()
    for page_no in range(3):
        page = doc.new_page()
        text = FILLER * 3 + (FACT + " " if page_no == 1 else "") + FILLER * 2
        page.insert_textbox(pymupdf.Rect(72, 72, 540, 720), text, fontsize=11)
    doc.save(path)
    return path


@pytest.fixture
def q(settings):
    quire = Quire(settings.replace(context_window=2048, max_answer_tokens=48))
    yield quire
    quire.close()


def test_answer_contains_planted_fact_and_cites_its_page(q, tmp_path):
    pdf = planted_pdf(tmp_path / "review.pdf")
    (result,) = q.ingest("audit", [pdf])
    assert result.status == "added", result.message
    events = list(q.ask("audit", "What is the vault access code?"))
    deltas = [e for e in events if isinstance(e, Delta)]
    assert len(deltas) > 1  # streamed
    answer = events[-1]
    assert isinstance(answer, Answer)
    assert "7351" in answer.text
    pages = {c.locator.page for c in answer.turn.citations if c.status == "verified"}
    assert 2 in pages, answer.turn.citations
    assert answer.turn.strategy == "full" and answer.turn.prompt_tokens > 200
    assert answer.turn.meta["support"] == "verified" and answer.turn.warning == ""
    assert answer.evidence and answer.evidence[0]["page"] == 2 and "7351" in answer.evidence[0]["snippet"]
    assert "<mark>vault</mark>" in answer.evidence[0]["html"]


def test_an_answer_that_cites_nothing_is_matched_to_the_passage_it_rests_on(q, tmp_path):
    """The small model often gives the fact without an [S..] id: the check then finds the passage."""
    (result,) = q.ingest("audit", [planted_pdf(tmp_path / "review.pdf")])
    assert result.status == "added", result.message
    answer = q.answer("audit", "What is the vault access code? Answer with the number only.")
    assert "7351" in answer.text
    assert "[S" not in answer.text, "the model cited an id itself: this question no longer exercises the fallback"
    (matched,) = [c for c in answer.turn.citations if c.origin == "matched"]
    assert matched.status == "verified" and matched.locator.page == 2 and "7351" in matched.quote
    assert answer.turn.meta["support"] == "verified"


def test_follow_up_reuses_the_prefix_and_a_new_process_sees_the_turn(q, tmp_path, settings):
    pdf = planted_pdf(tmp_path / "review.pdf")
    q.ingest("audit", [pdf])
    first = q.answer("audit", "What is the vault access code?")
    second = q.answer("audit", "What did the teams report?")
    assert second.turn.cached_tokens > 0.8 * first.turn.prompt_tokens
    assert second.turn.ttft_s < first.turn.ttft_s
    code = (
        "from quire.api import Quire; q=Quire();"
        "t=q.turns('audit'); d=q.documents('audit');"
        "print(len(t), d[0].name, d[0].pages, t[0].citations[0].locator.page if t[0].citations else None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "QUIRE_HOME": str(settings.home)}).stdout.split()
    assert out[:3] == ["2", "review.pdf", "3"]


def test_focus_and_sweep_on_a_corpus_over_the_window(settings, tmp_path):
    q = Quire(settings.replace(context_window=1024, max_answer_tokens=32))
    pdf = planted_pdf(tmp_path / "review.pdf")
    big = tmp_path / "notes.txt"
    big.write_text("\n\n".join(f"Note {i}: " + FILLER for i in range(40)))
    q.ingest("big", [pdf, big])
    focus = q.answer("big", "What is the vault access code?")
    assert focus.turn.strategy == "focus" and focus.turn.meta["narrowed"]
    assert 0 < focus.turn.meta["share_seen"] < 1
    events = list(q.ask("big", "List every note number.", strategy="sweep"))
    statuses = [e for e in events if isinstance(e, Status)]
    assert len(statuses) >= 3  # one per shard, then the reduce pass
    answer = events[-1]
    assert answer.turn.strategy == "sweep" and answer.turn.meta["share_seen"] == 1.0
    q.close()


def test_empty_session_and_empty_question_are_clear_errors(q):
    q.session("empty")
    with pytest.raises(QuireError, match="no documents"):
        q.answer("empty", "anything?")
    with pytest.raises(QuireError, match="empty"):
        q.answer("empty", "   ")


def test_after_one_answer_the_next_says_how_long_its_reading_may_take(q, tmp_path):
    long = tmp_path / "review.txt"
    long.write_text(FILLER * 40 + FACT + "\n")
    q.ingest("eta", [long])
    first = [e for e in q.ask("eta", "What is the vault access code?", strategy="full") if isinstance(e, Status)]
    assert first and first[0].eta_s is None  # nothing timed yet: no estimate rather than a wrong one
    other = tmp_path / "other.txt"
    other.write_text(FILLER * 30 + "The gate code is 1200.\n")
    q.ingest("eta2", [other])  # a corpus the model does not hold: it is read again
    second = [e for e in q.ask("eta2", "What is the gate code?", strategy="full") if isinstance(e, Status)]
    assert second[0].eta_s and second[0].eta_s > 0 and "tokens/s" in second[0].message
