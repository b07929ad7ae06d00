"""``app.py eval evidence``: the questions load from the corpus, a hit is judged right, and focus is measured."""

from __future__ import annotations

from dataclasses import replace

from core.document import Locator
from core.records import SegmentRecord
from evals import evidence
from quire.api import Quire


def seg(text: str, page: int) -> SegmentRecord:
    return SegmentRecord(id=page, document_id=1, document_name="d.pdf", ordinal=page, kind="text", text=text,
                         locator=Locator(page=page))


def test_questions_load_with_their_evidence(corpus):
    fb = evidence.financebench_items(corpus / "financebench")
    cuad = evidence.cuad_items(corpus / "contracts" / "cuad")
    assert len(fb) == 63 and all(item.pages and item.document.is_file() for item in fb)
    assert len(cuad) > 250 and all(item.spans and item.document.is_file() for item in cuad)
    law = next(item for item in cuad if item.key.endswith("__Governing Law"))
    assert law.question == "Which state/country's law governs the interpretation of the contract?"


def test_a_hit_is_the_evidence_page_or_the_clause_span():
    page = evidence.Item("financebench", "k", None, "q", pages={48})
    assert evidence.score(page, [seg("x", 47), seg("y", 48)]) == 1.0 and evidence.score(page, [seg("x", 47)]) == 0.0
    span = "This Agreement shall be governed by the laws of the State of New York, without regard to conflicts."
    clause = evidence.Item("cuad", "k", None, "q", spans=[span])
    assert evidence.score(clause, [seg("Section 9. THIS AGREEMENT shall be governed by the laws of the State of New "
                                       "York, without regard to conflicts. Section 10.", 3)]) == 1.0
    assert evidence.score(clause, [seg("Section 10. Notices shall be in writing.", 4)]) == 0.0


def test_focus_is_measured_on_a_real_contract(settings, corpus):
    items = [i for i in evidence.cuad_items(corpus / "contracts" / "cuad") if i.document.name.startswith("IVILLAGE")]
    with Quire(settings.replace(context_window=2048, workers=1)) as q:
        rows = evidence.measure(q, items[:4], progress=lambda m: None)
    assert len(rows) == 4 and all(r["narrowed"] and 0 < r["share_seen"] < 0.5 for r in rows)
    summary = evidence.summary(rows)["cuad"]
    assert summary["questions"] == 4 and 0 <= summary["recall"] <= 1


def test_a_question_is_expanded_with_the_words_statements_and_contracts_use():
    from backend.expansion import expand

    q = "What is the FY2018 capex for 3M, from the cash flow statement?"
    assert expand(q).startswith(q)
    assert "purchases of property plant equipment" in expand(q) and "operating activities" in expand(q)
    law = expand("What is the governing law?")
    assert law.startswith("What is the governing law?") and "governed by" in law and "laws of the state" in law
    assert "assignment" in expand("Can the agreement be assigned?") and "consent" in expand("Can it be assigned?")
    assert expand("What did the teams report?") == "What did the teams report?"


def test_cross_document_questions_and_the_held_out_halves(corpus):
    cross = evidence.cuad_cross_items(corpus / "contracts" / "cuad")
    assert cross and all(len(i.documents) >= 2 and len(i.spans_by_document) >= 2 for i in cross)
    assert all(i.question.startswith("Which of these agreements: ") for i in cross)
    everything = evidence.load_items(corpus, "financebench,cuad,cuad-cross")
    a = evidence.load_items(corpus, "financebench,cuad,cuad-cross", half="a")
    b = evidence.load_items(corpus, "financebench,cuad,cuad-cross", half="b")
    assert len(a) + len(b) == len(everything) and a and b
    singles = lambda items: {i.document.name for i in items if not i.documents}  # noqa: E731
    assert singles(a) and singles(b) and not singles(a) & singles(b)  # no document is in both halves


def test_a_cross_question_scores_the_share_of_documents_whose_clause_was_sent():
    law = "This Agreement shall be governed by the laws of the State of New York, without regard to conflicts."
    item = evidence.Item("cuad-cross", "k", None, "q", spans_by_document={"a.pdf": [law], "b.pdf": [law]})
    sent = seg("Section 9. " + law, 3)
    assert evidence.score(item, [sent]) == 0.0  # the passage is d.pdf's, not a.pdf's or b.pdf's
    assert evidence.score(item, [replace(sent, document_name="a.pdf")]) == 0.5
    assert evidence.score(item, [replace(sent, document_name="a.pdf"), replace(sent, document_name="b.pdf")]) == 1.0
