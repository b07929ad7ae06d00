"""Ranking a session's passages for a question: the lexical rank, fused with a small embedding model.

The lexical rank (the database's full-text search, bm25 over Porter stems, with the query expanded
by :mod:`backend.expansion`) finds the words of a question. An embedding rank finds passages that
say the same thing in other words ("governed by the laws of" for "which law applies"). Both are
fused by reciprocal rank (:func:`fuse`), which needs no score calibration between them.

The embedding model is WordLlama's ``l2_supercat`` at 256 dimensions (MIT licence): its weights
(16 MB) and tokenizer ship inside the ``wordllama`` wheel, so nothing is downloaded at run time,
and it embeds about 2,500 passages a second on one CPU core. Larger sentence encoders
(sentence-transformers, fastembed, model2vec) fetch their weights from a model hub at first use,
which Quire cannot rely on. Its gain over lexical alone is measured by ``app.py eval evidence``, and
it is small and unsteady (see EMBEDDING_WEIGHT): a static word-vector model knows that "governs"
and "law" belong together, but bm25 with Porter stems and the query expansion finds those passages
already, and the model's votes for passages that merely sound legal push real hits out. So the
default rank is lexical, and ``--rank hybrid`` is there for corpora where wording varies more.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from core.errors import QuireError
from core.records import SegmentRecord

RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al. 2009): 1 / (k + rank)
# The embedding rank's weight in the fusion, against 1 for the lexical rank. `app.py eval evidence --half a`
# at 8K, evidence recall CUAD / CUAD across documents / FinanceBench, lexical with quotas 93.6 / 61.8 / 82.3%;
# fused with weight 1: 89.6 / 61.3 / 76.5; 0.5: 89.6 / 61.5 / 76.5; 0.25: 91.2 / 64.3 / 88.2; 0.1: 92.0 / 63.9 / 82.3.
EMBEDDING_WEIGHT = 0.25
EMBED_CHARS = 2000  # characters of a passage embedded (WordLlama averages token vectors; more adds little)
CACHE_PASSAGES = 200_000  # passage vectors kept in memory (256 float32 each: about 200 MB at most)


def fuse(*rankings: Sequence[int], k: int = RRF_K, weights: Sequence[float] | None = None) -> list[int]:
    """Ids ordered by their summed reciprocal rank over ``rankings`` (each best first)."""
    weights = weights or [1.0] * len(rankings)
    score: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        for position, sid in enumerate(ranking):
            score[sid] = score.get(sid, 0.0) + weight / (k + position + 1)
    return sorted(score, key=lambda sid: -score[sid])


class Embedder:
    """WordLlama's bundled model, loaded on first use; passage vectors remembered by segment id."""

    def __init__(self, cache_passages: int = CACHE_PASSAGES) -> None:
        self._model = None
        self._lock = threading.RLock()
        self._vectors: OrderedDict[int, np.ndarray] = OrderedDict()
        self._limit = cache_passages

    def _load(self):
        if self._model is None:
            try:
                import wordllama  # noqa: PLC0415 - a third-party model, loaded only when asked for
            except ImportError as exc:
                raise QuireError("The embedding rank needs the wordllama package.",
                                 hint="Run `pip install -r requirements.txt`, or use --rank lexical.") from exc
            # The wheel ships the weights and the tokenizer; pointing the cache at the package finds both
            # without a download (WordLlama looks for its own tokenizer under the wrong folder name).
            self._model = wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
        return self._model

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``texts``, one row each."""
        with self._lock:
            model = self._load()
            return _unit(np.asarray(model.embed([t[:EMBED_CHARS] for t in texts]), dtype=np.float32))

    def rank(self, question: str, segments: Iterable[SegmentRecord], limit: int = 500) -> list[int]:
        """Ids of the text ``segments`` most similar to ``question``, best first."""
        segments = [s for s in segments if s.kind == "text" and s.text.strip()]
        if not segments:
            return []
        missing = [s for s in segments if s.id not in self._vectors]
        if missing:
            found = self.vectors([s.text for s in missing])
            with self._lock:
                for seg, vec in zip(missing, found):
                    self._vectors[seg.id] = vec
        with self._lock:
            rows = []
            for s in segments:
                vec = self._vectors.get(s.id)
                if vec is None:  # evicted by another thread's question meanwhile
                    vec = self._vectors[s.id] = self.vectors([s.text])[0]
                self._vectors.move_to_end(s.id)
                rows.append(vec)
            while len(self._vectors) > self._limit:
                self._vectors.popitem(last=False)
        scores = np.stack(rows) @ self.vectors([question])[0]
        order = np.argsort(-scores)[:limit]
        return [segments[i].id for i in order]


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


_GENERIC = frozenset(
    "agreement agreements contract contracts document documents file files page pages section clause clauses "
    "party parties which what where when whose there these those this that with from into under between each "
    "every their about does have will shall would could should other than pdf docx txt exhibit".split()
)


def named_documents(question: str, names: dict[int, str]) -> set[int]:
    """Ids of the documents (``names``: id -> file name) the question names.

    A document is named by a word of four letters or more, not a generic one like "agreement", that
    is part of its name with the punctuation removed and of few other names (a third of the
    session's at most), and that is either capitalised in the question ("the Prolong agreement" for
    ``PROLONGINTERNATIONALCORP_..._SPONSORSHIP AGREEMENT.pdf``) or part of the name's lead, before
    its first digit or separator (the party, in most filings' names). So "a license grant" does not
    name ``..._Content License Agreement.pdf``, and "iVillage" names ``IVILLAGEINC_03_17_1999-...``."""
    full = {did: _squash(name) for did, name in names.items()}
    lead = {did: _squash(re.split(r"[\d_\-–—]", name, maxsplit=1)[0]) for did, name in names.items()}
    most = max(1, len(names) // 3)
    named: set[int] = set()
    for position, word in enumerate(_WORDS.findall(question)):
        low = word.lower()
        if len(low) < 4 or low in _GENERIC:
            continue
        proper = (word[0].isupper() and position > 0) or (word.isupper() and len(word) > 1)
        hits = {did for did in names if low in (full[did] if proper else lead[did])}
        if 0 < len(hits) <= most:
            named |= hits
    return named


_WORDS = re.compile(r"[^\W_]+", re.UNICODE)


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())
