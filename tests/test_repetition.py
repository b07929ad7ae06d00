"""Degenerate output is stopped: the loop guard on text, the sweep's findings each once, and the real model."""

from pathlib import Path
from typing import Iterator

from backend import sweep
from backend.base import Delta, Event, GenerateOptions, Part, Prompt, Runtime, Usage
from backend.repetition import CANCEL_PIECES, FINISH_REASON, RepetitionGuard, collect, generate_guarded
from core.document import Locator
from core.records import SegmentRecord
from quire.api import Quire

LOOP_LINE = '- [S4] The fax test page is for testing purposes only "TEST PAGE"\n'


def fed(pieces) -> RepetitionGuard:
    guard = RepetitionGuard()
    for piece in pieces:
        if guard.feed(piece):
            break
    return guard


def test_a_line_repeated_is_cut_to_one():
    guard = fed([LOOP_LINE] * 18)
    assert guard.looping and guard.kept == LOOP_LINE.strip()


def test_a_run_of_words_repeated_is_cut_where_it_began():
    text = "The governing law is " + "the law of the State of New York and " * 5
    guard = fed(w + " " for w in text.split())
    assert guard.looping and guard.kept == "The governing law is the law of the State of New York and"
    assert fed(w + " " for w in ("It is " + "yes " * 30).split()).kept == "It is yes"


def test_an_ordinary_answer_and_a_varied_list_are_left_alone():
    answer = ('The licence ends on 31 December 2025 [S1] "terminate on December 31, 2025".\n'
              "- Acme: may terminate for convenience [S3]\n- Beta: may terminate for convenience [S7]\n"
              "- Gamma: may not terminate for convenience [S9]\n")
    guard = fed([answer[i:i + 7] for i in range(0, len(answer), 7)])
    assert not guard.looping and guard.kept == answer


def seg(i, text):
    return SegmentRecord(id=i, document_id=1, document_name="fax.pdf", ordinal=i, kind="text", text=text,
                         locator=Locator(page=1))


def test_sweep_findings_are_kept_once_and_beside_the_point_ones_dropped():
    refs = {"S4": seg(4, "TEST PAGE. This fax test page is for testing purposes only."),
            "S5": seg(5, "Either party may terminate this Agreement for convenience on 30 days notice.")}
    answer = ('- [S5] either party may terminate "terminate this Agreement for convenience"\n' * 3
              + '- [S4] it can be ended "This fax test page is for testing purposes only"\n')
    found = sweep.findings_from(answer, refs, "Which agreements can be terminated for convenience?")
    assert found == ['- [S5] either party may terminate "terminate this Agreement for convenience"']
    assert sweep.dedupe(["- a [S1]", "- A  [S1].", "- a [S2]"]) == ["- a [S1]", "- a [S2]"]


def test_the_real_model_stops_when_it_loops(settings, corpus, tmp_path):
    """SmolLM2 at temperature 0 and no repetition penalty repeats "The parties are iVillage and FMM." on this
    prompt (measured: 200 tokens, 3/4 of them copies); the guard stops it at the second copy."""
    contract = next((corpus / "contracts" / "cuad" / "txt").glob("IVILLAGE*")).read_text()[:3500]
    path = Path(tmp_path / "sponsorship.txt")
    path.write_text(contract)
    with Quire(settings.replace(context_window=2048, max_answer_tokens=200, repeat_penalty=1.0)) as q:
        q.ingest("loop", [path])
        answer = q.answer("loop", "List every obligation of iVillage.", strategy="full")
    turn = answer.turn
    assert turn.meta["finish_reason"] == FINISH_REASON, turn.answer
    assert turn.completion_tokens < 200
    assert not fed([turn.answer + "\n"]).looping  # what is stored has no copies
    assert "stopped" in turn.meta


class Scripted(Runtime):
    """Streams a fixed reply a few characters at a time and counts what it sent; one that ``stops`` ends its stream
    on cancel() with a Usage, as the embedded runtimes do, and one that does not must be closed."""

    name = "scripted"

    def __init__(self, settings, reply: str, stops: bool = True) -> None:
        super().__init__(settings)
        self.reply, self.stops, self.sent, self.finished, self.cancelled = reply, stops, 0, False, False

    @property
    def context_window(self) -> int:
        return 2048

    def cancel(self) -> None:
        self.cancelled = True

    def generate(self, prompt: Prompt, options: GenerateOptions) -> Iterator[Event]:
        for i in range(0, len(self.reply), 5):
            if self.cancelled and self.stops:
                yield Usage(prompt_tokens=10, completion_tokens=i // 5, cached_tokens=7, finish_reason="cancelled")
                return
            self.sent = i + 5
            yield Delta(self.reply[i:i + 5])
        self.finished = True
        yield Usage(prompt_tokens=10, completion_tokens=len(self.reply) // 5, cached_tokens=7, finish_reason="stop")


def read(rt: Scripted, refs, question):
    return sweep.read_part(rt, Prompt("", [Part("text", "q")]), GenerateOptions(max_tokens=160), refs, question)


def test_a_map_reply_is_ended_after_two_lines_with_no_verified_finding(settings):
    """The map pass stops a reply once two lines in a row hold no verified finding (an invented quote, or true
    words beside the question), or when it starts with NONE; a verified one between misses keeps it going. The
    lines read are kept as findings as before (an unverified one too: the reduce pass and its checks judge)."""
    refs = {"S4": seg(4, "TEST PAGE. This fax test page is for testing purposes only."),
            "S5": seg(5, "Either party may terminate this Agreement for convenience on 30 days notice.")}
    question = "Which agreements can be terminated for convenience?"
    good = '- [S5] either party may terminate "terminate this Agreement for convenience"\n'
    invented = ['- [S5] it ends "on the first day of every leap year"\n',
                '- [S4] it can be ended "This fax test page is for testing purposes only"\n',
                '- [S5] notice "ninety days written notice by courier"\n']
    read_lines = invented[0] + good + invented[1] + invented[2]
    reply = read_lines + good.replace("either", "any") + "- more\n" * 30

    rt = Scripted(settings, reply)
    text, usage = read(rt, refs, question)
    assert rt.cancelled and not rt.finished and rt.sent <= len(read_lines) + 5  # the model stopped writing there
    assert text == read_lines.rstrip("\n")
    assert sweep.findings_from(text, refs, question) == [invented[0].strip(), good.strip(), invented[2].strip()]
    assert usage.finish_reason == "stop" and usage.details["ended"] and usage.cached_tokens == 7  # the runtime's count

    deaf = Scripted(settings, reply, stops=False)  # cancel() does nothing: the stream is closed a few pieces on
    text, usage = read(deaf, refs, question)
    assert not deaf.finished and deaf.sent <= len(read_lines) + 5 * (CANCEL_PIECES + 2)
    assert text == read_lines.rstrip("\n") and usage.details["ended"]

    none = Scripted(settings, "NONE\n" + good * 4)
    assert read(none, refs, question)[0] == "NONE" and not none.finished

    whole = Scripted(settings, good + good.replace("either", "any"))
    text, usage = read(whole, refs, question)
    assert whole.finished and not whole.cancelled and text == whole.reply
    assert usage.finish_reason == "stop" and "ended" not in usage.details


def test_a_map_reply_out_of_the_asked_form_ends_at_its_first_line_that_no_passage_bears_out(settings):
    """A line that cites no passage and quotes nothing (SmolLM2's numbered lists, the question restated with an
    invented law) ends the reply at once instead of after a second such line; an uncited line that a passage of
    the shard bears out (found by matching) is a finding and the reply goes on."""
    refs = {"S1": seg(1, "This Agreement shall be governed by the laws of the State of Florida."),
            "S2": seg(2, "Either party may terminate this Agreement on 30 days written notice.")}
    question = "Which state's law governs each agreement?"
    junk = "1. The law that governs each agreement is the Federal Trade Commission Act of 1970.\n"
    after = ('- [S1] governed by "the laws of the State of Florida"\n'
             '- [S1] the Agreement "shall be governed by the laws of the State of Florida"\n')
    rt = Scripted(settings, junk + after)
    text, usage = read(rt, refs, question)
    assert rt.cancelled and rt.sent <= len(junk) + 5 and text == junk.strip() and usage.details["ended"]

    matched = "1. This agreement is governed by the laws of the State of Florida.\n"
    rt = Scripted(settings, matched + after)
    text, _ = read(rt, refs, question)
    assert not rt.cancelled and text == matched + after  # read to its end: every line checked out
    assert sweep.findings_from(matched, refs, question)  # the uncited line is a finding, its passage matched


def test_an_answer_the_guard_stops_tells_the_runtimes_own_usage(settings):
    """The guard cancels the runtime and takes the Usage it sends (the prompt tokens it had cached: a shard's state
    loaded shows there); a runtime that goes on is closed a few pieces later, and the Usage is measured here."""
    prompt, options = Prompt("", [Part("text", "q")]), GenerateOptions(max_tokens=400)
    rt = Scripted(settings, LOOP_LINE * 18)
    text, usage = collect(generate_guarded(rt, prompt, options))
    assert rt.cancelled and not rt.finished and text == LOOP_LINE.strip()
    assert usage.finish_reason == FINISH_REASON and usage.cached_tokens == 7 and usage.details["stopped"]
    assert usage.completion_tokens == rt.count_tokens(rt.reply[:rt.sent])  # what was written, copies and all

    deaf = Scripted(settings, LOOP_LINE * 18, stops=False)
    text, usage = collect(generate_guarded(deaf, prompt, options))
    assert not deaf.finished and deaf.sent < len(deaf.reply) and text == LOOP_LINE.strip()
    assert usage.finish_reason == FINISH_REASON and usage.cached_tokens == 0 and usage.prompt_tokens > 0
