"""The review matrix: quotes checked against their source, cells stored, stopped and resumed, with the real model."""

import os
import signal
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from backend import citations
from backend.clauses import CUAD_CATEGORIES
from backend.matrix import Field, candidates, choose, parse_fields
from core.errors import QuireError
from core.records import MatrixCellRecord
from quire.api import CellDone, MatrixRun, Quire, Status
from quire.cli import main as cli_main
from storage import matrix
from tests.processes import alive

SMALL = (  # the two shortest CUAD contracts of the shared corpus: one or two shards each at a 1K window
    "PRECIGEN,INC_01_22_2020-EX-99.1-JOINT FILING AGREEMENT.PDF",
    "BellringBrandsInc_20190920_S-1_EX-10.12_11817081_EX-10.12_Manufacturing Agreement4.pdf",
)
FIELDS = ["Parties", "Agreement Date"]


def contracts(corpus: Path) -> list[Path]:
    return [corpus / "contracts" / "cuad" / "pdf" / name for name in SMALL]


@pytest.fixture
def mq(settings):
    quire = Quire(settings.replace(context_window=1024, matrix_answer_tokens=40, workers=1))
    yield quire
    quire.close()


def assert_quotes_hold(q: Quire, cells: list[MatrixCellRecord]) -> None:
    """No cell shows a quote as verified that its cited passage does not hold, word for word."""
    segments = q.segments_by_id({c.segment_id for c in cells if c.segment_id})
    for c in cells:
        if c.status in ("verified", "quoted"):
            assert c.segment_id in segments, c
            assert c.quote and c.quote in segments[c.segment_id].text, c
            assert c.locator.page is not None


# -- without the model: quotes against real contract text ---------------------------------------
def test_locate_cuts_the_quote_from_the_source_or_finds_nothing(corpus):
    text = (corpus / "contracts" / "cuad" / "txt" / "PRECIGEN,INC_01_22_2020-EX-99.1-JOINT FILING AGREEMENT.txt").read_text()
    sentence = " ".join(text.split()[20:34])
    found = citations.locate(sentence, text)
    assert found is not None and found in text and citations.normalise(found) == citations.normalise(sentence)
    altered = sentence.upper().replace(" ", "  ")  # case and spacing: the source's own words come back
    found = citations.locate(altered, text)
    assert found is not None and found in text and citations.normalise(found) == citations.normalise(sentence)
    words = sentence.split()
    slipped = " ".join(words[:6] + ["substantially"] + words[6:])  # one word the model added
    found = citations.locate(slipped, text)
    assert found is not None and found in text
    assert citations.locate("This agreement is governed by the laws of the State of Delaware", text) is None
    assert citations.locate("", text) is None


def test_a_reply_is_verified_only_where_its_words_are(mq, corpus):
    mq.ingest("m", contracts(corpus)[:1])
    segments = [s for s in mq.segments("m") if s.kind == "text"]
    refs = {f"S{i + 1}": s for i, s in enumerate(segments)}
    real = " ".join(segments[0].text.split()[:8])
    fld = Field.of("Parties")
    [good] = candidates(f'[S1] the parties "{real}"', refs, fld, 1)
    assert good.status == "verified" and good.quote in segments[0].text and good.ref == "S1"
    off_topic = Field("Zebra migration", "Zebra migration")  # true words that share nothing with the field
    assert choose([good], off_topic).status == "quoted" and choose([good], fld).quote == good.quote
    if len(segments) > 1:  # the right words under the wrong id are attributed to the passage that holds them
        [moved] = candidates(f'[S2] the parties "{real}"', refs, fld, 1)
        assert moved.ref == "S1" and moved.cited == "S2" and moved.status == "verified"
    [made_up] = candidates('[S1] Acme "Acme Corp and Widget Inc agree to merge on Monday"', refs, fld, 1)
    assert made_up.status == "unverified"
    assert candidates("NONE", refs, fld, 1) == []


RESELLER = "HealthcareIntegratedTechnologiesInc_20190812_8-K_EX-10.1_11776966_EX-10.1_Reseller Agreement.pdf"


def test_true_words_of_another_clause_are_quoted_not_verified(mq, corpus):
    """A quote is verified only when it is about its field: SmolLM2 quoted this contract's survival clause for Cap
    on Liability, Anti-Assignment and Termination for Convenience alike, each time with an answer echoing the
    field. The words are the contract's, so the cell shows them, as quoted; the cap clause itself is verified."""
    mq.ingest("r", [corpus / "contracts" / "cuad" / "pdf" / RESELLER])
    refs = {f"S{i + 1}": s for i, s in enumerate(s for s in mq.segments("r") if s.kind == "text")}

    def ref_of(words: str) -> str:
        return next(r for r, s in refs.items() if citations.locate(words, s.text))

    survival = "Upon termination of this Agreement, the provisions in Sections 1, 6.5, 7, 8, 9, 10, 11"
    cap = "IN NO EVENT SHALL SUPPLIER BE LIABLE UNDER, OR OTHERWISE IN CONNECTION WITH, THIS AGREEMENT"
    fld = Field.of("Cap on Liability")
    [echo] = candidates(f'[{ref_of(survival)}] the cap on liability is limited "{survival}"', refs, fld, 1)
    assert echo.status == "verified" and echo.quote in refs[echo.ref].text  # the words are there ...
    assert choose([echo], fld).status == "quoted"  # ... and say nothing of a cap, whatever the answer says
    [real] = candidates(f'[{ref_of(cap)}] no indirect damages "{cap}"', refs, fld, 1)
    assert choose([echo, real], fld) == real and real.status == "verified"


def test_fields_from_free_text_and_cuad_categories():
    assert len(CUAD_CATEGORIES) == 41
    fields = parse_fields("Governing law; Can either party terminate for convenience?", "Cap on Liability")
    assert [f.name for f in fields] == ["Governing Law", "Can either party terminate for convenience?", "Cap on Liability"]
    assert "law governs" in fields[0].question and fields[1].question == fields[1].name
    assert len(parse_fields("", "all")) == 41
    typed = parse_fields("Governing Law, Cap on Liability;Term, renewal and notice")  # commas between CUAD names
    assert [f.name for f in typed] == ["Governing Law", "Cap on Liability", "Term, renewal and notice"]
    with pytest.raises(QuireError, match="Unknown CUAD categories: Nonsense"):
        parse_fields("", "Nonsense")
    with pytest.raises(QuireError):
        parse_fields("", "")


def test_cells_round_trip_and_keep_the_reviewers_marks(mq, corpus):
    mq.ingest("m", contracts(corpus)[:1])
    info = mq.session("m")
    [doc] = mq.documents(info)
    seg = mq.segments(info)[0]
    cell = MatrixCellRecord(session_id=info.id, document_id=doc.id, field_name="Parties", question="Who signed?",
                            status="verified", answer="Ares", quote=seg.text[:20], segment_id=seg.id,
                            locator=seg.locator, read_tokens=300, total_tokens=320, meta={"pass": 1})
    cell_id = matrix.save_cell(mq._database(), cell)
    [stored] = mq.matrix_cells(info)
    assert (stored.id, stored.document_name, stored.quote, stored.locator, stored.meta) == (
        cell_id, doc.name, seg.text[:20], seg.locator, {"pass": 1})
    edited = mq.mark_cell(cell_id, "edited", "Ares Trading SA")
    assert edited.shown_answer == "Ares Trading SA" and edited.mark == "edited"
    matrix.save_cell(mq._database(), MatrixCellRecord(**(vars(cell) | {"answer": "Merck", "status": "not_found"})))
    [again] = mq.matrix_cells(info)
    assert again.id == cell_id and again.answer == "Merck" and again.mark == "edited" and again.edit == "Ares Trading SA"
    assert "not found (read 300 of 320 tokens, 94% of the document)" == again.status_words
    with pytest.raises(QuireError):
        mq.mark_cell(cell_id, "maybe")


# -- with the real model ---------------------------------------------------------------------------
def test_matrix_stops_keeps_what_is_done_and_resumes(mq, corpus):
    mq.ingest("m", contracts(corpus))
    first_doc, second_doc = mq.documents("m")

    with closing(mq.matrix("m", FIELDS)) as events:  # closed before its first model call: nothing stored
        assert isinstance(next(events), Status)
    assert mq.matrix_cells("m") == []

    seen: list = []
    for event in mq.matrix("m", FIELDS):
        seen.append(event)
        if isinstance(event, CellDone) and len([e for e in seen if isinstance(e, CellDone)]) == len(FIELDS):
            mq.stop()  # Stop once the first document's row is done: the run ends before the next model call
    run = seen[-1]
    assert isinstance(run, MatrixRun) and run.stopped and run.done == 2 and run.total == 4
    progress = [e for e in seen if isinstance(e, Status)]
    assert progress and all(0 <= e.done <= e.total == 4 for e in progress)
    kept = mq.matrix_cells("m")
    assert {(c.document_id, c.field_name) for c in kept} == {(first_doc.id, f) for f in FIELDS}
    for c in kept:
        assert c.read_tokens > 0 and c.total_tokens >= c.read_tokens and c.meta["model_calls"] >= 1
        assert c.status in ("verified", "quoted", "unverified", "not_found") and c.status_words

    resumed = list(mq.matrix("m", FIELDS))
    assert all(0 <= e.done <= e.total == 4 for e in resumed if isinstance(e, Status))  # never past the total
    reused = [e.cell for e in resumed if isinstance(e, CellDone) and e.reused]
    fresh = [e.cell for e in resumed if isinstance(e, CellDone) and not e.reused]
    assert sorted((c.id, c.created_at, c.answer) for c in reused) == sorted((c.id, c.created_at, c.answer) for c in kept)
    assert {(c.document_id, c.field_name) for c in fresh} == {(second_doc.id, f) for f in FIELDS}
    assert resumed[-1] == MatrixRun(4, 4, 2, False, resumed[-1].wall_s)
    cells = mq.matrix_cells("m")
    assert len(cells) == 4
    assert_quotes_hold(mq, cells)


def test_a_run_stopped_inside_a_document_reads_its_replies_back_when_resumed(mq, corpus):
    mq.ingest("r", contracts(corpus)[:1])
    (doc,) = mq.documents("r")
    steps = 0
    for event in mq.matrix("r", FIELDS):
        if isinstance(event, Status) and ": part " in event.message:
            steps += 1
            if steps == 2:  # the first field of the first shard is answered: Stop before the second model call
                mq.stop()
    assert event.stopped and event.done == 0 and mq.matrix_cells("r") == []
    logs = list((mq.settings.cache_dir / "matrix-replies").glob("*.jsonl"))
    assert len(logs) == 1 and len(logs[0].read_text().splitlines()) == 1  # the one reply given before Stop

    resumed = [e for e in mq.matrix("r", FIELDS) if isinstance(e, CellDone)]
    assert len(resumed) == len(FIELDS) and not any(e.reused for e in resumed)
    for e in resumed:
        assert e.cell.meta["replies_kept"] == 1  # read back, not asked again
    assert not logs[0].exists()  # the row is stored: its replies are gone
    assert_quotes_hold(mq, mq.matrix_cells("r"))


def test_cli_prints_each_row_and_resumes(settings, corpus, capsys):
    args = ["--context-window", "1024", "--matrix-answer-tokens", "40", "--workers", "1", "--threads", "2"]
    assert cli_main(["ingest", str(contracts(corpus)[0]), "--session", "cli", *args]) == 0
    assert cli_main(["matrix", "--session", "cli", "--categories", "Document Name", *args]) == 0
    out = capsys.readouterr()
    [line] = [ln for ln in out.out.splitlines() if ln.startswith("PRECIGEN")]
    assert "\tDocument Name\t" in line and ("verified" in line or "not found" in line)
    assert "1 of 1 cells (0 kept from an earlier run)" in out.err and "1 field: Document Name" in out.err
    assert cli_main(["matrix", "--session", "cli", "--categories", "Document Name", *args]) == 0
    again = capsys.readouterr()
    assert "kept from an earlier run" in again.out and "1 of 1 cells (1 kept" in again.err
    with Quire(settings) as q:
        assert_quotes_hold(q, q.matrix_cells("cli"))


def test_sigterm_stops_the_cli_as_ctrl_c_does_and_the_next_run_resumes(settings, corpus):
    """A background job ignores SIGINT, so ``kill`` (SIGTERM) is how a script stops a long run: the command ends
    at once with 130, says what it kept, leaves no model process behind, and the next run picks up."""
    root = Path(__file__).resolve().parent.parent
    args = ["--context-window", "1024", "--matrix-answer-tokens", "40", "--workers", "1", "--threads", "2"]
    env = {**os.environ, "QUIRE_HOME": str(settings.home)}
    assert cli_main(["ingest", *map(str, contracts(corpus)), "--session", "t", *args]) == 0
    run = [sys.executable, "app.py", "matrix", "--session", "t", "--categories", "Parties,Agreement Date", *args]
    proc = subprocess.Popen(run, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the first model call has begun
        if ": part 1 of " in line:
            break
    children = [int(c) for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped: 0 cells stored in this run; run it again to resume" in err
    assert children and not any(alive(c) for c in children)  # the model's worker went with it
    done = subprocess.run(run, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "4 of 4 cells (0 kept from an earlier run)" in done.stderr
    with Quire(settings) as q:
        assert len(q.matrix_cells("t")) == 4


def test_a_claim_that_quotes_nothing_and_is_borne_out_nowhere_fills_no_cell(mq, corpus):
    mq.ingest("m", contracts(corpus)[:1])
    segments = [s for s in mq.segments("m") if s.kind == "text"]
    refs = {f"S{i + 1}": s for i, s in enumerate(segments)}
    fld = Field.of("Governing Law")
    assert candidates("The law governing the interpretation of the contract is the Civil Law of 2019.", refs, fld, 1) == []
    assert candidates("The answer is: [id] short answer .", refs, fld, 1) == []
    [quoted] = candidates('[S1] Delaware "governed by the laws of the State of Delaware"', refs, fld, 1)
    assert quoted.status == "unverified"  # a quote the source lacks is shown, as unverified
