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
