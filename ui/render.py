"""Pure formatting for the UI: rows, badges, chat messages and the token gauge.

Everything derived from documents or the model is escaped here: Markdown
(chat, notes) through :func:`md_escape`, HTML (the gauge) through ``html.escape``.
Dataframes and code blocks show plain text and need neither.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from typing import Any, Iterable
from urllib.parse import urlencode

from backend.evidence import highlight
from core.document import Locator
from core.errors import printable
from core.records import CitationRecord

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]#|~$!^])")
_MD_LINE_START = re.compile(r"^(\s*\d*)([-+=.)])", re.MULTILINE)

STATUS_BADGES = {
    "verified": "✓ verified",
    "quoted": "≈ quoted, does not support the claim",
    "unverified": "? unverified, quote not found",
    "missing": "✗ missing, no such passage",
}

DOCUMENT_HEADERS = ["Name", "Kind", "Pages", "Segments", "Tokens", "Text layer", "Warnings"]
WARNING = "⚠"
CITATION_HEADERS = ["Ref", "Document", "Location", "Status", "Quote"]


def md_escape(text: str) -> str:
    """Text shown literally by a Markdown renderer: no markup, links, HTML or math survive, and no
    control character or direction mark (written as its escape)."""
    escaped = _MD_SPECIAL.sub(r"\\\1", printable(text, lines=True))
    escaped = _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped)
    return html.escape(escaped, quote=True)


def shorten(text: str, limit: int = 220) -> str:
    text = " ".join(printable(text, lines=True).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def badge(status: str, origin: str = "model") -> str:
    if origin == "evidence":
        return "evidence: a passage to check"
    label = STATUS_BADGES.get(status, status)
    return label + (" (matched)" if origin == "matched" else "")


# -- documents ---------------------------------------------------------------
def text_layer(meta: dict[str, Any]) -> str:
    """A short summary of how a PDF's text was obtained, from the extractor's metadata."""
    if meta.get("text_layer") not in (None, ""):
        return _layer_name(meta["text_layer"])
    pages = [p for p in meta.get("pages") or [] if isinstance(p, dict) and "text_layer" in p]
    if not pages:
        return ""
    counts = Counter(_layer_name(p["text_layer"]) for p in pages)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{name} {n}" for name, n in counts.most_common())


def _layer_name(value: Any) -> str:
    if value is True:
        return "text"
    if value is False or value is None:
        return "none"
    return str(value)


def document_rows(docs: Iterable) -> list[list[Any]]:
    return [[printable(d.name), d.kind, d.pages or "", d.segments, d.tokens, text_layer(d.meta), warnings_cell(d.warnings)]
            for d in docs]


def warnings_cell(warnings: list[str]) -> str:
    """A warning mark with what went wrong, or nothing."""
    return f"{WARNING} " + " ".join(printable(w).rstrip(".") + "." for w in warnings) if warnings else ""


def readability(d) -> tuple[str, str]:
    """How readable a stored document is, in words: ("readable" | "partly readable" | "not readable", why)."""
    if not d.tokens or not d.segments:
        return "not readable", "no text was found in it"
    if d.warnings:
        return "partly readable", " ".join(printable(w).rstrip(".") + "." for w in d.warnings)
    return "readable", ""


def documents_panel(docs: Iterable) -> str:
    """The session's documents with their status, for the panel beside the chat (Markdown, escaped)."""
    lines = []
    for d in docs:
        status, why = readability(d)
        mark = {"readable": "✓", "partly readable": WARNING, "not readable": "✗"}[status]
        size = f"{plural(d.pages, 'page')}, " if d.pages else ""
        lines.append(f"- {mark} **{md_escape(d.name)}** · {md_escape(status)}"
                     + (f": {md_escape(why)}" if why else "") + f"  \n  <small>{d.kind}, {size}~{d.tokens:,} tokens</small>")
    return "\n".join(lines) or "_No documents yet: drop files below._"


def gauge_html(budget) -> str:
    """An escaped HTML bar: corpus tokens against what the window leaves for documents."""
    room = max(budget.window - budget.answer_reserve, 1)
    share = budget.total / room
    width = min(share, 1.0) * 100
    if not budget.documents:
        state, note = "empty", "No documents yet: add files in the Documents tab."
    elif budget.fits:
        state, note = "fits", "Fits: every question sees the whole corpus."
    else:
        state, note = "narrowed", (
            f"Too big for one pass ({share:.1f}× the room): each question sees the passages most relevant to it."
        )
    label = (
        f"{budget.total:,} of {room:,} tokens "
        f"({budget.window:,}-token window, {budget.answer_reserve:,} kept for the answer)"
    )
    return (
        f'<div class="quire-gauge quire-gauge-{state}" role="meter" aria-valuemin="0" '
        f'aria-valuemax="{room}" aria-valuenow="{budget.total}" aria-label="Corpus tokens">'
        f'<div class="quire-gauge-label">{html.escape(label)}</div>'
        f'<div class="quire-gauge-track"><div class="quire-gauge-fill" style="width:{width:.1f}%"></div></div>'
        f'<div class="quire-gauge-note">{html.escape(note)}</div></div>'
    )


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def ingest_report(results: Iterable) -> str:
    lines = []
    for r in results:
        warned = f" {md_escape(warnings_cell(r.warnings))}" if r.warnings else ""
        if r.status == "added":
            size = f"{plural(r.pages, 'page')}, " if r.pages else ""
            mark = WARNING if r.warnings else "✓"
            lines.append(f"- {mark} **{md_escape(r.name)}**: added ({size}{plural(r.segments, 'segment')}, "
                         f"~{r.tokens:,} tokens){warned}")
        elif r.status == "duplicate":
            lines.append(f"- = **{md_escape(r.name)}**: {md_escape(r.message or 'already stored')}{warned}")
        elif r.status == "cancelled":
            lines.append(f"- ■ **{md_escape(r.name)}**: cancelled")
        else:
            lines.append(f"- ✗ {md_escape(r.message or r.name + ': failed')}")
    return "\n".join(lines)


# -- answers -------------------------------------------------------------------
def citation_rows(citations: Iterable) -> list[list[str]]:
    return [
        [c.ref, printable(c.document_name), printable(c.locator.place()), badge(c.status, c.origin),
         shorten(c.quote, 300)]
        for c in citations
    ]


def evidence_citations(turn) -> list[CitationRecord]:
    """The answer's evidence as entries the viewer opens like citations (``origin="evidence"``)."""
    return [CitationRecord(ref=e["ref"], segment_id=e.get("segment_id"), document_name=e.get("document", ""),
                           locator=Locator.from_dict(e.get("locator")), quote=e.get("snippet", ""), status="",
                           origin="evidence") for e in turn.evidence]


def meta_line(turn) -> str:
    m = turn.meta or {}
    used, total = m.get("segments_used"), m.get("segments_total")
    seen = f"saw {used}/{total} passages ({float(m.get('share_seen') or 0):.0%} of the corpus)" if total else ""
    parts = [
        turn.strategy,
        seen,
        f"{turn.prompt_tokens:,} prompt tokens ({turn.cached_tokens:,} cached)",
        f"first token {turn.ttft_s:.2f} s",
        f"total {turn.total_s:.2f} s",
    ]
    return " · ".join(p for p in parts if p)


VIEWER = "/viewer/"  # server.viewer's page (a citation of an answer: ?session=&turn=&cite=)
_FENCE = re.compile(r"^```([\w+#.-]{0,20})[ \t]*\n(.*?)\n```[ \t]*$", re.MULTILINE | re.DOTALL)
_ESCAPED_REFS = re.compile(r"\\\[((?:[A-Z]\d+)(?:\s*,\s*[A-Z]\d+)*)\\\]")  # \[S1\] or \[S1, S2\] once escaped
META_SUMMARY = "How this was answered"


def viewer_url(session: str, turn_id: int, index: int = 0) -> str:
    """The viewer's page for citation ``index`` of the answer (its citations first, then its evidence)."""
    return VIEWER + "?" + urlencode({"session": session, "turn": turn_id, "cite": index})


def answer_body(text: str) -> str:
    """The model's text for Markdown: escaped, except that fenced code blocks stay code blocks (a code block
    shows its text literally, so it needs no escaping, and Gradio highlights it by its language)."""
    out, at = [], 0
    for m in _FENCE.finditer(text):
        out.append(md_escape(text[at:m.start()]))
        out.append(f"```{m.group(1)}\n{printable(m.group(2), lines=True)}\n```")
        at = m.end()
    out.append(md_escape(text[at:]))
    return "".join(out)


def marker(ref: str, session: str, turn_id: int, index: int) -> str:
    """A citation as a small link that opens it in the viewer."""
    ref = md_escape(ref)
    return f'[{ref}]({viewer_url(session, turn_id, index)} "Open {ref} in the viewer")'


def _markers(body: str, refs: dict[str, int], session: str | None, turn_id: int) -> str:
    """``[S1]`` in the escaped answer as small links that open that citation in the viewer."""
    if not session or not turn_id or not refs:
        return body

    def link(m: re.Match) -> str:
        names = [r.strip() for r in m.group(1).split(",")]
        if not all(r in refs for r in names):
            return m.group(0)
        return "".join(marker(r, session, turn_id, refs[r]) for r in names)
    return _ESCAPED_REFS.sub(link, body)


def limited_to(turn) -> str:
    names = (turn.meta or {}).get("documents") or []
    return "Limited to " + ", ".join(printable(n) for n in names) if names else ""


def answer_markdown(turn, session: str | None = None) -> str:
    """The assistant message: the answer (its citations as markers that open the viewer, with ``session``),
    its sources, its evidence, then how it was produced, folded until asked for."""
    refs: dict[str, int] = {}
    for i, c in enumerate(turn.citations):
        refs.setdefault(c.ref, i)
    body = answer_body(turn.answer) if turn.answer.strip() else "_(the model gave no answer)_"
    marked = _markers(body, refs, session, turn.id)
    if marked == body and session and turn.id and turn.citations:  # cited nowhere in the text (matched): after it
        marked += " " + "".join(marker(c.ref, session, turn.id, i)
                                for i, c in enumerate(turn.citations) if c.segment_id is not None)
    body = marked
    if (turn.meta or {}).get("finish_reason") == "cancelled":
        body += "\n\n**■ Stopped** — the answer was cut short here."
    lines = [f"**⚠ {md_escape(turn.warning)}**", "", body] if turn.warning else [body]
    if limited := limited_to(turn):
        lines = [f"_{md_escape(limited)}_", "", *lines]
    if turn.citations:
        lines += ["", "**Sources**"]
        for i, c in enumerate(turn.citations):
            quote = f" — “{md_escape(shorten(c.quote, 160))}”" if c.quote else ""
            ref = (marker(c.ref, session, turn.id, i) if session and turn.id and c.segment_id is not None
                   else f"**{md_escape(c.ref)}**")
            lines.append(f"- {ref} {md_escape(c.document_name)} · {md_escape(c.locator.place())} · "
                         f"{badge(c.status, c.origin)}{quote}")
    if turn.evidence:
        lines += ["", "**Evidence** (passages to check, the question's words marked)"]
        for e in turn.evidence:
            text = highlight(e.get("snippet", ""), e.get("terms", []), escape=md_escape)
            lines.append(f"- **{md_escape(e['ref'])}** {md_escape(e.get('document', ''))} · "
                         f"{md_escape(e.get('place', ''))} · {md_escape(e.get('reason', ''))}: “{text}”")
    notes = [html.escape(printable(str(n))) for n in (turn.meta or {}).get("notes") or []]
    meta = "<br>".join([html.escape(meta_line(turn)), *notes])
    lines += ["", f'<details class="quire-meta"><summary>{META_SUMMARY}</summary>{meta}</details>']
    return "\n".join(lines)


def user_message(question: str) -> dict[str, str]:
    return {"role": "user", "content": md_escape(question)}


def history(turns: Iterable, session: str | None = None) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    for turn in turns:
        messages.append(user_message(turn.question))
        messages.append({"role": "assistant", "content": answer_markdown(turn, session)})
    return messages


WARM_HINT = ("Reads every shard once now, in the background, so the first sweep or matrix question loads what was "
             "read instead of reading it (a question asked meanwhile goes first).")
_WARM_STATES = {"queued": "waiting to start", "warming": "preparing", "paused": "paused while a question is answered",
                "done": "ready", "stopped": "stopped", "off": "not prepared", "failed": "failed"}


def warming_line(status) -> str:
    """One line on preparing a session's shards (a ``quire.api.Warming``, or None before it started)."""
    if status is None:
        return WARM_HINT
    line = f"**Shards: {_WARM_STATES.get(status.state, status.state)}**"
    if status.total:
        line += f" · {status.done} of {status.total} kept"
    if status.state == "done" and status.computed:
        line += f" · {status.computed} read in {status.seconds:.0f} s"
    if status.state in ("off", "failed") and status.message:
        line += f" · {md_escape(status.message)}"
    return line
