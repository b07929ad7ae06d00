"""Evidence beside every answer, and answers that no citation supports carrying their warning everywhere."""

from __future__ import annotations

import export
from backend import citations
from backend.evidence import highlight, question_terms, top_passages
from core.records import CitationRecord, TurnRecord
from storage import repo
from ui import render

QUESTION = "What is the governing law of the sponsorship agreement?"


def test_highlight_escapes_the_text_and_marks_the_question_words():
    text = 'The <b>laws</b> of "New York" govern & bind.'
    out = highlight(text, question_terms("Which law governs?"))
    assert out == 'The &lt;b&gt;<mark>laws</mark>&lt;/b&gt; of &quot;New York&quot; <mark>govern</mark> &amp; bind.'
    assert question_terms(QUESTION) == ["governing", "law", "sponsorship"]


def _sponsorship(q, corpus):
    pdf = next((corpus / "contracts" / "cuad" / "pdf").glob("IVILLAGE*"))
    (result,) = q.ingest("deal", [pdf])
    assert result.status == "added", result.message
    segments = q.segments("deal")
    return {f"S{i + 1}": s for i, s in enumerate(segments)}


def test_retrieval_puts_the_governing_law_clause_first_on_a_real_contract(q, corpus):
    shown = _sponsorship(q, corpus)
    ranked = [sid for sid, _ in q.search("deal", QUESTION, limit=50)]
    evidence = top_passages(QUESTION, shown, [], ranked)
    assert len(evidence) == 3 and all(e["reason"] == "ranked by retrieval" for e in evidence)
    first = evidence[0]
    assert "governed by" in first["snippet"].lower() and first["page"]
    assert "<mark>governed</mark>" in first["html"] or "<mark>laws</mark>" in first["html"]
    # a verified citation comes before what retrieval ranked
    cited = [CitationRecord(ref="S2", segment_id=shown["S2"].id, document_name="x", status="verified")]
    assert top_passages(QUESTION, shown, cited, ranked)[0]["reason"] == "cited (verified)"


def test_an_unsupported_answer_is_stored_and_shown_with_its_warning(q, db, corpus):
    shown = _sponsorship(q, corpus)
    answer = "The governing law is the Federal Trade Commission Consumer Protection Act of 1977."
    checked = citations.check(answer, shown, QUESTION)
    support = citations.verdict(checked.citations, shown, QUESTION)
    assert support == "unsupported" and not any(c.status == "verified" for c in checked.citations)
    ranked = [sid for sid, _ in q.search("deal", QUESTION, limit=50)]
    meta = {"support": support, "warning": citations.WARNINGS[support],
            "evidence": top_passages(QUESTION, shown, checked.citations, ranked)}
    turn = TurnRecord(question=QUESTION, answer=answer, strategy="focus", meta=meta, citations=checked.citations)
    repo.save_turn(db, q.session("deal").id, turn)
    (stored,) = q.turns("deal")
    assert stored.warning == "Not supported by the documents — check the passages below."
    assert stored.evidence and stored.evidence[0]["segment_id"] == meta["evidence"][0]["segment_id"]

    md = render.answer_markdown(stored)
    assert md.startswith("**⚠ Not supported by the documents — check the passages below.**")
    assert "**Evidence**" in md and "<mark>" in md
    report = export.build_report(q, "deal")
    html = export.render_html(report)
    assert '<p class="warning">Warning: Not supported by the documents — check the passages below.</p>' in html
    assert "Evidence (passages to check)" in html and "<mark>" in html
    text = export.render_markdown(report)
    assert "> **Warning: Not supported by the documents — check the passages below.**" in text
    assert "### Evidence" in text
