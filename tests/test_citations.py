from backend import citations
from core.document import Locator
from core.records import SegmentRecord


def seg(i, text, page=1):
    return SegmentRecord(id=i, document_id=1, document_name="contract.pdf", ordinal=i, kind="text", text=text,
                         locator=Locator(page=page, bbox=(0, 0, 10, 10)), tokens=10)


SHOWN = {
    "S1": seg(1, "This Agreement shall terminate on December 31, 2025 unless renewed by both parties.", 1),
    "S2": seg(2, "The licensee shall pay a royalty of 7 percent of net sales each quarter.", 2),
}


def test_planted_true_quote_is_verified():
    answer = 'The royalty is 7 percent [S2] "a royalty of 7 percent of net sales".'
    checked = citations.check(answer, SHOWN)
    (c,) = checked.citations
    assert (c.ref, c.status, c.origin, c.locator.page) == ("S2", "verified", "model", 2)


def test_fabricated_quote_is_unverified():
    answer = 'The royalty is 12 percent [S2] "a royalty of twelve percent of gross revenue".'
    (c,) = citations.check(answer, SHOWN).citations
    assert c.status == "unverified"


def test_unknown_id_is_flagged_missing():
    checked = citations.check("It terminates on December 31, 2025 [S9] [S1].", SHOWN)
    assert checked.unknown_refs == ["S9"]
    statuses = {c.ref: c.status for c in checked.citations}
    assert statuses["S9"] == "missing" and statuses["S1"] == "verified"


def test_grouped_refs_are_all_read():
    refs = [r for r, _, _ in citations.parse_refs("Both apply [S1, S2]. Also [s2].")]
    assert refs == ["S1", "S2", "S2"]


def test_uncited_answer_is_matched_to_its_source():
    checked = citations.check("The agreement terminates on December 31, 2025.", SHOWN)
    (c,) = checked.citations
    assert c.origin == "matched" and c.ref == "S1" and c.status == "verified"
    assert "December 31, 2025" in c.quote


def test_unsupported_answer_gets_no_matched_citation():
    assert citations.check("Bananas are yellow.", SHOWN).citations == []


def test_tolerant_quote_matching():
    src = "The  Supplier shall deliver\nthe Goods within thirty (30) days."
    assert citations.quote_in_source("supplier shall deliver the goods within thirty (30) days", src)
    assert citations.quote_in_source("The Supplier shall deliver the Goods within thirty 30 day", src)
    assert not citations.quote_in_source("The Buyer may cancel the order at any time", src)


# -- verified means supported, not only quoted ----------------------------------------------
FAX = seg(3, "This is a fax test page. If you can read this, the fax machine works.", 3)
TERMINATION = seg(4, "Either party may terminate this Agreement for convenience upon thirty (30) days written notice.", 4)


def test_true_quote_of_an_unrelated_passage_is_quoted_not_verified():
    shown = {"S3": FAX, "S4": TERMINATION}
    question = "Which of these agreements can be terminated for convenience?"
    (c,) = citations.check('The agreement ends at will [S3] "If you can read this, the fax machine works".', shown,
                           question).citations
    assert c.status == "quoted"
    (good,) = citations.check('Either party may end it for convenience [S4] "terminate this Agreement for convenience".',
                              shown, question).citations
    assert good.status == "verified"


def test_a_wrong_figure_beside_a_true_quote_is_quoted():
    answer = 'The royalty is 12 percent [S2] "a royalty of 7 percent of net sales".'
    (c,) = citations.check(answer, SHOWN, "What royalty does the licensee pay?").citations
    assert c.status == "quoted"


def test_a_full_stop_inside_a_quote_does_not_cut_the_claim():
    shown = {"S1": seg(1, "Licensor: Acme Inc. of Delaware grants the licence.", 1)}
    answer = 'The licensor is Acme [S1] "Acme Inc. of Delaware grants the licence".'
    (c,) = citations.check(answer, shown, "Who is the licensor?").citations
    assert c.status == "verified" and c.quote == "Acme Inc. of Delaware grants the licence"


def test_verdict_warns_when_nothing_is_verified():
    question = "When does the agreement terminate?"
    verified = citations.check('It ends on December 31, 2025 [S1] "terminate on December 31, 2025".', SHOWN, question)
    assert citations.verdict(verified.citations, SHOWN, question) == "verified"
    invented = citations.check("It is governed by the FTC Consumer Protection Act of 1977.", SHOWN, question)
    assert citations.verdict(invented.citations, SHOWN, question) == "unsupported"
    off = citations.check("New York law governs.", SHOWN, "Which state's law governs?")
    assert citations.verdict(off.citations, SHOWN, "Which state's law governs?") == "no_evidence"
    assert citations.WARNINGS["unsupported"].startswith("Not supported by the documents")


def test_support_rule_measured_on_cuad_clauses(corpus):
    """The rule, measured: a true quote of the clause asked about against a true quote of another clause
    of the same contract (the fax-page case). 58% against 13% (AROUND=100; 63%/19% at 200, 44%/5% when
    only the claim's own words may name the topic)."""
    import json
    import random
    from pathlib import Path

    cuad = corpus / "contracts" / "cuad"
    rng = random.Random(0)
    right = wrong = right_ok = wrong_ok = 0
    for doc in json.loads((cuad / "cuad_qa_subset.json").read_text())["data"]:
        text = (cuad / "txt" / Path(doc["txt"]).name).read_text(errors="replace")
        spans = []
        for qa in doc["qas"]:
            a = next((a for a in qa["answers"] if a["answer_start"] >= 0 and 8 <= len(a["text"]) <= 380
                      and '"' not in a["text"]), None)
            if a:
                spans.append((qa["category"], a))

        def status(question, a):
            at = a["answer_start"]
            passage = seg(1, text[max(0, at - 500): at + len(a["text"]) + 500])
            return citations.check(f'The contract says "{a["text"]}" [S1].', {"S1": passage}, question).citations[0].status

        for category, a in spans:
            question = f"What does the contract say about {category.lower()}?"
            right += 1
            right_ok += status(question, a) == "verified"
            others = [o for c, o in spans if c != category and abs(o["answer_start"] - a["answer_start"]) > 2000]
            if others:
                wrong += 1
                wrong_ok += status(question, rng.choice(others)) == "verified"
    assert right > 200 and wrong > 200
    assert right_ok / right >= 0.55 and wrong_ok / wrong <= 0.15, (right_ok, right, wrong_ok, wrong)
