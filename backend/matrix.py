"""The review matrix: one row per document, one column per field, each cell an answer with its verified quote.

Per document and per field:

1. **Every shard is read.** A document is cut into window-sized shards of its own passages, in reading
   order (``backend.shards.document_shards``, the same cut the sweep makes of a long document, with the same
   ids local to the shard, so the two share each shard's KV state); a shard depends on that document alone,
   so adding a document adds shards and moves none. Each shard is asked each field with a short extraction prompt (:data:`EXTRACT`):
   an answer, the verbatim quote it rests on, and the passage id. The field's question comes last, so the
   runtime's prefix cache keeps the shard for the next field (the shards of a document are read in turn,
   every field of a shard before the next shard).
2. **The quote is checked** against the passage it cites (:func:`backend.citations.locate`, the same
   tolerant match the answer citations use): a cell is ``verified`` only when the words are found there,
   and the quote it shows is then cut from the passage itself, so a verified cell never shows words the
   source does not hold. A quote found in another passage of the same shard is attributed to that passage
   (said in the cell's meta). A quote found nowhere leaves the cell ``unverified``; a quote that is there but
   shares no word with the field is ``quoted``, as an answer's citation would be. A claim that quotes nothing
   and that no passage bears out is no finding at all (SmolLM2 invents "the Civil Law of 2019", or copies the
   prompt's "[id] short answer"): it does not fill the cell, and the reply is kept in the cell's meta.
3. **A second pass** for a field with no verified quote: the document's passages ranked for the field
   (full-text search, best first, as many as half a shard holds, in reading order), asked once more.
4. **Not found** otherwise, with how much of the document was read.

This module computes; :meth:`quire.api.Quire.matrix` stores the cells and resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

from backend import citations, shards
from backend.base import GenerateOptions, Prompt, Runtime, Usage
from backend.clauses import CUAD_CATEGORIES, category
from backend.context import TokenCounter, fitting, ref_id
from backend.expansion import expand
from backend.repetition import collect, generate_guarded
from backend.shards import Shard
from backend.sweep import Status
from core.document import Locator
from core.errors import QuireError
from core.records import MatrixCellRecord, SegmentRecord

# SmolLM2-135M followed this form best of three tried on two CUAD contracts (a three-line ANSWER/QUOTE/PASSAGE
# form looped; the chat prompt's "cite and quote" rambled); a reply in another form is still read (see candidates).
# After the field, not before it as the sweep's instructions are (``shards.READ``): with the sweep's before the
# field, and with both, fewer cells on CUAD 5 x 5 held the expert's clause (span overlap 0.125 and 0.25, against
# 0.375 so). So a field computes about 30 tokens more after the shard's state than a sweep question does.
EXTRACT = (
    'Answer in one line as: [id] short answer "exact words from the passage". '
    "If nothing in the passages answers it, write only: NONE."
)
STOP = ["\n\n"]  # one answer is one line or a few; a blank line ends it
ON_POINT = 2  # of a field's terms a verified quote and its surroundings share (true words beside the point are "quoted")
MIN_QUOTE_WORDS = 3  # a shorter "quote" ("the Company") is found anywhere and proves nothing
SECOND_PASS_SHARE = 0.5  # of the shard budget the ranked passages of the second pass fill (the best few are what it is for; half the prefill)
_LABEL = re.compile(r"^\s*[-*•]?\s*(answer|quote|passage|id)\s*[:\-]\s*", re.IGNORECASE)
_QUOTE = re.compile(r"[\"“]([^\"“”\n]{6,800})[\"”]")


@dataclass(frozen=True)
class Field:
    """A column of the matrix: its name, and the question asked for it."""

    name: str
    question: str

    @classmethod
    def of(cls, text: str) -> "Field":
        """A field from what the user typed: a CUAD category's name brings its description as the question."""
        text = " ".join((text or "").split())
        if not text:
            raise QuireError("A matrix field is empty.", hint="Name each field, e.g. 'Governing law'.")
        found = category(text)
        if found is not None:
            return cls(found.name, found.description)
        return cls(text[:500], text)

    def prompt_text(self) -> str:
        return self.question if self.question == self.name else f"{self.name}. {self.question}"

    def terms(self) -> set[str]:
        """The stems a clause for this field is drafted in: its name's, with the contract wording the name brings
        (``backend.expansion``: "Cap on Liability" brings "shall not exceed", "aggregate"). A CUAD description is
        left out: its words ("party", "obligation", "include") are in any clause."""
        return citations.stems(expand(self.name)) or citations.stems(self.prompt_text())


def parse_fields(fields: str | Sequence[str] = "", categories: str | Sequence[str] = "") -> list[Field]:
    """Fields from free text (one per line or separated by ``;``) and CUAD category names (comma-separated,
    or ``all``), each once, in order. Free text that is only CUAD names with commas between them is those names
    ("Governing Law, Cap on Liability" is two fields; "Term, renewal and notice" stays one)."""
    texts = [piece for text in _split(fields, r"[\n;]") for piece in _names_or_text(text)]
    names = _split(categories, r"[\n,;]")
    if [n.lower() for n in names] == ["all"]:
        names = [c.name for c in CUAD_CATEGORIES]
    unknown = [n for n in names if category(n) is None]
    if unknown:
        raise QuireError(f"Unknown CUAD categories: {', '.join(unknown)}.",
                         hint="Known: " + "; ".join(c.name for c in CUAD_CATEGORIES) + ".")
    out = list(dict.fromkeys(Field.of(t) for t in [*texts, *names]))
    if not out:
        raise QuireError("No fields were given for the matrix.",
                         hint="Type the fields (one per line), or pick CUAD categories.")
    return out


def _names_or_text(text: str) -> list[str]:
    names = _split(text, r",")
    return names if len(names) > 1 and all(category(n) is not None for n in names) else [text]


def _split(value: str | Sequence[str], separators: str) -> list[str]:
    items = re.split(separators, value) if isinstance(value, str) else list(value)
    return [" ".join(i.split()) for i in items if i and i.strip()]


@dataclass
class Candidate:
    """One answer a pass gave for a field, with its checked quote."""

    answer: str
    quote: str  # the source's own words when verified, else what the model wrote
    ref: str
    segment: SegmentRecord | None
    status: str  # verified | unverified
    pass_: int
    cited: str = ""  # the id the model gave, when the quote was found in another passage
    matched: bool = False  # the model quoted nothing: its answer was matched to this passage


@dataclass
class CellDone:
    """A finished cell (stored), or one kept from an earlier run (``reused``)."""

    cell: MatrixCellRecord
    reused: bool = False


@dataclass
class Stopped:
    """The run was stopped (Stop, or the model's stream was cancelled) before the document was done."""

    message: str = "Stopped"


class Memo(Protocol):
    """Where a document's extraction replies are kept while its cells are not yet stored (storage.matrix.ReplyLog):
    a run stopped inside a document and started again reads them instead of asking the model again."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, reply: str) -> None: ...


def reply_key(runtime: Runtime, prompt: Prompt, options: GenerateOptions) -> str:
    """What one reply depends on: the model, the prompt and the sampling (at temperature 0 it is the same reply)."""
    what = [runtime.name, runtime.model_name, prompt.system, [(p.kind, p.text, str(p.image_path or "")) for p in prompt.parts],
            options.max_tokens, options.temperature, options.seed, options.stop, options.repeat_penalty]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()


def _question_part(text: str) -> str:
    return f"{shards.CLOSE}Question: {text}\n{EXTRACT}\n"


def extraction_prompt(shard: Shard, fld: Field) -> Prompt:
    """The prompt asking ``fld`` of one shard: the shard's passages (ids local to the shard), then the field."""
    return shard.prompt(_question_part(fld.prompt_text()))


def candidates(text: str, refs: dict[str, SegmentRecord], fld: Field, pass_: int) -> list[Candidate]:
    """The answers in one extraction reply, each with its quote checked against the passage it cites.

    A reply in the asked form (``[S2] answer "quote"``) gives its quote; a reply that quotes nothing but
    repeats the source's words (3 or more) gives those; a reply that does neither is matched to the
    passage of the shard that supports it (``citations.match_answer``, as an uncited answer is), and the
    passage's best sentence is its quote. Whatever is verified is cut from the passage it is in. A claim
    with no quote that no passage bears out is left out.
    """
    if not text.strip() or text.strip().upper().startswith("NONE"):
        return []
    out = []
    for block in _blocks(text):
        quote_match = _QUOTE.search(block)
        quote = quote_match.group(1).strip() if quote_match else ""
        cited = [r for r, _, _ in citations.parse_refs(block)]
        answer = _answer_of(block, fld)
        if len(citations.normalise(quote).split()) < MIN_QUOTE_WORDS or _echo(quote, fld):
            quote = ""
        if not quote and not answer:
            continue
        if (found := _checked(answer, quote, cited, refs, fld, pass_)) is not None:
            out.append(found)
    return out


def _blocks(text: str) -> list[str]:
    """The reply's non-empty lines that say something (a reply may give one answer per line)."""
    lines = [ln.strip().lstrip("-*• ").strip() for ln in text.splitlines()]
    return [ln for ln in lines if ln and not ln.upper().startswith("NONE")]


def _answer_of(block: str, fld: Field) -> str:
    """The line's answer: without ids, quotes and labels, and without a leading echo of the field's question
    ("The two or more parties who signed the contract: Merck KGaA" -> "Merck KGaA")."""
    text = _LABEL.sub("", citations.without_refs(block))
    text = " ".join(_QUOTE.sub(" ", text).split()).strip(' "“”:;,')
    head, sep, tail = text.partition(":")
    if sep and tail.strip() and citations.stem_support(head, fld.prompt_text()) >= 0.5:
        text = tail.strip()
    return text[:300]


def _echo(quote: str, fld: Field) -> bool:
    """Whether the "quote" only repeats the field or the instructions."""
    q = citations.normalise(quote)
    return bool(q) and (q in citations.normalise(fld.prompt_text()) or q in citations.normalise(EXTRACT))


def _checked(answer: str, quote: str, cited: list[str], refs: dict[str, SegmentRecord], fld: Field,
             pass_: int) -> Candidate | None:
    ref = next((r for r in cited if r in refs), cited[0] if cited else "")
    seg = refs.get(ref)
    texts = [(r, s) for r, s in refs.items() if s.kind == "text"]
    if seg is not None:
        texts.sort(key=lambda rs: rs[0] != ref)  # the cited passage first
    if quote:
        for other, oseg in texts:
            if found := citations.locate(quote, oseg.text):  # another id: attributed where the words are
                return Candidate(answer, found, other, oseg, "verified", pass_, cited="" if other == ref else ref)
        return Candidate(answer, quote, ref, seg, "unverified", pass_)
    if len(citations.normalise(answer).split()) >= MIN_QUOTE_WORDS and not _echo(answer, fld):
        for other, oseg in texts:
            if found := citations.locate(answer, oseg.text):  # the answer is the source's own words
                return Candidate(answer, found, other, oseg, "verified", pass_, cited="" if other == ref else ref)
    matched = citations.match_answer(answer, dict(texts), fld.prompt_text())
    if matched is not None and matched.status == "verified" and (found := citations.locate(matched.quote, refs[matched.ref].text)):
        return Candidate(answer, found, matched.ref, refs[matched.ref], "verified", pass_, cited=ref, matched=True)
    return None  # a claim that quotes nothing and that no passage bears out: not a finding (the reply stays in meta)


def relevance(c: Candidate, fld: Field) -> int:
    """How many of the field's terms the candidate's quote and its surroundings in the source share. The model's
    own answer does not count: it echoes the field whatever it quotes ("the initial term expires on [date]")."""
    around = citations.around(c.quote, c.segment.text) if c.segment is not None and c.quote else ""
    return len(fld.terms() & citations.stems(f"{c.quote} {around}"))


def on_point(c: Candidate, fld: Field) -> bool:
    """Whether a found quote is about the field: it shares :data:`ON_POINT` of the field's terms (all, when the
    field has fewer). A clause on survival shares only "termination" with "Termination for Convenience"."""
    return relevance(c, fld) >= min(ON_POINT, len(fld.terms()))


def choose(found: Sequence[Candidate], fld: Field) -> Candidate | None:
    """The best candidate: verified before unverified, then the most relevant to the field, then the first."""
    if not found:
        return None
    ranked = sorted(enumerate(found), key=lambda ic: (ic[1].status != "verified", -relevance(ic[1], fld), ic[0]))
    best = ranked[0][1]
    if best.status == "verified" and not on_point(best, fld):
        # true words, beside the point (SmolLM2 copies a sentence of the passage whatever is asked): like an
        # answer's citation, "quoted", not verified; it keeps its place so the reviewer sees what was found
        best = dataclasses.replace(best, status="quoted")
    return best


def run_document(
    segments: Sequence[SegmentRecord],
    fields: Sequence[Field],
    runtime: Runtime,
    *,
    counter: TokenCounter,
    options: GenerateOptions,
    shard_tokens: int,
    rank: Callable[[Field], Sequence[int]] = lambda f: [],
    stopped: Callable[[], bool] = lambda: False,
    label: str = "",
    memo: Memo | None = None,
) -> Iterator[Status | MatrixCellRecord | Stopped]:
    """Read one document for ``fields``: Status events, then one cell per field (not yet stored), or Stopped.

    ``segments`` are the document's own, in reading order; ``rank`` gives a field's best passages of the
    document (segment ids, best first) for the second pass; ``stopped`` is asked before each model call;
    ``memo`` keeps each reply as it comes and gives back those of an earlier, stopped run.
    """
    started = time.perf_counter()
    parts = shards.document_shards(segments, counter, shard_tokens)
    text = [seg for part in parts for seg in part.passages]  # what is read: the readable passages, long ones in pieces
    found: dict[str, list[Candidate]] = {f.name: [] for f in fields}
    replies: dict[str, list[str]] = {f.name: [] for f in fields}  # kept in the cell's meta, for review
    options = dataclasses.replace(options, stop=options.stop or STOP)
    usages: list[Usage] = []
    kept: list[str] = []  # replies of an earlier, stopped run, read back from the memo
    steps = len(parts) * len(fields)

    def ask(shard: Shard, fld: Field, pass_no: int) -> list[Candidate] | None:
        """Model calls: the field asked of this shard (in halves if the field does not fit); its candidates,
        or None when it was stopped."""
        got: list[Candidate] = []
        for part, prompt in shards.fit(shard, lambda p: extraction_prompt(p, fld), runtime, options.max_tokens):
            key = reply_key(runtime, prompt, options) if memo is not None else ""
            reply = memo.get(key) if memo is not None else None
            if reply is None:
                reply, usage = collect(generate_guarded(runtime, prompt, options))
                if usage.finish_reason == "cancelled":
                    return None
                usages.append(usage)
                if memo is not None:
                    memo.put(key, reply)
            else:
                kept.append(reply)
            replies[fld.name].append(reply[:400])
            got += candidates(reply, part.refs(), fld, pass_no)
        return got

    for k, shard in enumerate(parts):
        for j, fld in enumerate(fields):
            yield Status(f"{label}part {k + 1} of {len(parts)}: {fld.name}", k * len(fields) + j, steps)
            if stopped():  # asked after the news, so a Stop pressed on it takes effect before this call
                yield Stopped()
                return
            got = ask(shard, fld, 1)
            if got is None:
                yield Stopped()
                return
            found[fld.name] += got
    read_tokens = sum(counter(ref_id(i), s) for i, s in enumerate(text))  # pieces counted as read
    read_ids = {s.id for s in text}
    unread = [s for s in segments if s.id not in read_ids]  # images and empty passages: counted, not read
    total_tokens = read_tokens + sum(counter(f"X{i}", s) for i, s in enumerate(unread))
    for fld in fields:
        best = choose(found[fld.name], fld)
        second = None
        if text and (best is None or best.status != "verified"):  # quoted or unverified: a second look
            yield Status(f"{label}second pass: {fld.name}", steps, steps)
            if stopped():
                yield Stopped()
                return
            chosen = _ranked_shard(text, rank(fld), counter, shard_tokens)
            if chosen:
                got = ask(chosen, fld, 2)
                if got is None:
                    yield Stopped()
                    return
                second = choose(got, fld)
                if second is not None and (best is None or second.status == "verified"
                                           or (second.status == "quoted" and best.status == "unverified")):
                    best = second
        cell = _cell(fld, best, found[fld.name], read_tokens, total_tokens, len(parts), second is not None,
                     usages, time.perf_counter() - started, runtime)
        if kept:
            cell.meta["replies_kept"] = len(kept)  # of the document's, read back from a stopped run
        cell.meta["replies"] = replies[fld.name][:8]
        yield cell


def _ranked_shard(text: Sequence[SegmentRecord], ranked_ids: Sequence[int], counter: TokenCounter,
                  limit: int) -> Shard | None:
    """The document's passages ranked for the field, best first, as many as one shard holds; in reading order."""
    position: dict[int, list[int]] = {}
    for i, seg in enumerate(text):
        position.setdefault(seg.id, []).append(i)  # a long passage's pieces all count
    order = [i for sid in ranked_ids for i in position.get(sid, [])]
    if not order:
        return None
    n = fitting((counter(ref_id(k), text[i]) for k, i in enumerate(order)), int(limit * SECOND_PASS_SHARE))
    return Shard(tuple(text[i] for i in sorted(order[: max(n, 1)])))


def _cell(fld: Field, best: Candidate | None, all_found: list[Candidate], read_tokens: int, total_tokens: int,
          shards: int, second_pass: bool, usages: list[Usage], wall_s: float, runtime: Runtime) -> MatrixCellRecord:
    meta = {
        "shards": shards, "second_pass": second_pass, "candidates": len(all_found),
        "model_calls": len(usages), "prompt_tokens": sum(u.prompt_tokens for u in usages),
        "cached_tokens": sum(u.cached_tokens for u in usages), "wall_s": round(wall_s, 3),
        "runtime": runtime.name, "model": runtime.model_name,
    }
    common = dict(session_id=0, document_id=0, field_name=fld.name, question=fld.question,
                  read_tokens=read_tokens, total_tokens=total_tokens)
    if best is None:
        return MatrixCellRecord(**common, status="not_found", meta=meta)
    seg = best.segment
    meta |= {"pass": best.pass_, "ref": best.ref}
    if best.cited:
        meta["cited"] = best.cited  # the model gave another id; the quote is in this passage
    if best.matched:
        meta["matched"] = True  # the model quoted nothing: the passage that supports its answer, and its best sentence
    return MatrixCellRecord(
        **common, status=best.status, answer=best.answer, quote=best.quote,
        segment_id=seg.id if seg is not None else None, locator=seg.locator if seg is not None else Locator(),
        meta=meta,
    )
