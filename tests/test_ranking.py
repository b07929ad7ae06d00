"""Ranking passages for focus: the embedding rank, its fusion with the lexical one, named documents and
per-document quotas, on real contracts."""

from __future__ import annotations

from collections import Counter

import pytest

from backend.ranking import Embedder, fuse, named_documents
from quire.api import Quire

CROSS = "Which of these agreements can be assigned without consent?"


def test_fusion_rewards_what_both_rankings_put_high():
    assert fuse([1, 2, 3], [3, 1, 4]) == [1, 3, 2, 4]
    assert fuse([5, 6], []) == [5, 6]
    assert fuse([1, 2], [2, 1], weights=[1.0, 3.0])[0] == 2


def test_a_document_is_named_by_its_party_not_by_its_kind(corpus):
    names = dict(enumerate(sorted(p.name for p in (corpus / "contracts" / "cuad" / "pdf").iterdir())))
    pick = lambda q: sorted(names[i].split("_")[0].split(" ")[0] for i in named_documents(q, names))  # noqa: E731
    assert pick("What is the governing law of the iVillage sponsorship agreement?") == ["IVILLAGEINC"]
    assert pick("When does the Ceres collaboration end?") == ["CERES,INC"]
    assert pick("Is there a cap on liability in the Quaker agreement?") == ["Quaker"]
    assert pick("Which agreements can be terminated for convenience?") == []
    assert pick("Does the contract contain a license grant?") == []  # 'license' is in two names, as a kind


def _contracts(q: Quire, corpus, session: str = "deals"):
    pdfs = sorted((corpus / "contracts" / "cuad" / "pdf").iterdir())
    pick = [p for p in pdfs if p.name.startswith(("IVILLAGE", "STARTEC", "GOCALL"))]
    results = q.ingest(session, pick)
    assert all(r.status == "added" for r in results), [r.message for r in results]
    return {r.name: r.tokens for r in results}


def test_the_embedding_rank_finds_a_clause_asked_for_in_other_words(q, corpus):
    _contracts(q, corpus)
    segments = q.segments("deals")
    ranked = Embedder().rank("Which state's rules apply to disputes about this contract?", segments, limit=10)
    texts = {s.id: s.text.lower() for s in segments}
    assert len(ranked) == 10 and len(set(ranked)) == 10
    assert any("governed by" in texts[sid] and "laws of" in texts[sid] for sid in ranked[:5])


@pytest.mark.parametrize("rank", ["lexical", "hybrid"])
def test_a_long_contract_does_not_crowd_the_others_out_of_a_cross_question(settings, corpus, rank):
    base = settings.replace(context_window=2048, workers=1, rank=rank, expand_queries=False)  # the quota alone
    with Quire(base) as q:
        tokens = _contracts(q, corpus)
    long_one = max(tokens, key=tokens.get)
    assert tokens[long_one] > 0.6 * sum(tokens.values())  # STARTEC: 22K of 34K tokens

    def spread(quota: bool, question: str = CROSS) -> Counter:
        with Quire(base.replace(document_quota=quota)) as q:
            ctx = q.assemble("deals", question, strategy="focus")
        assert ctx.narrowed
        return Counter({name: sum(s.tokens for s in ctx.refs.values() if s.document_name == name) for name in tokens})

    shared = spread(True)
    assert all(shared[name] > 0 for name in tokens), shared
    assert shared[long_one] < 0.6 * sum(shared.values()), shared
    if rank == "lexical":  # without the quota, the long contract's many hits fill the window
        alone = spread(False)
        assert alone[long_one] > shared[long_one] and min(alone.values()) == 0, alone
    # A question naming one contract reads that one, quota or not.
    named = spread(True, "What is the governing law of the iVillage agreement?")
    ivillage = next(name for name in tokens if name.startswith("IVILLAGE"))
    assert named[ivillage] == sum(named.values())
