"""The report as Markdown. Document and model text is escaped so it shows literally."""

from __future__ import annotations

import html
import re

from backend.evidence import highlight
from export.report import Report, ReportCitation, ReportTurn
from core.errors import printable

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]#|~$!^])")
_MD_LINE_START = re.compile(r"^(\s*\d*)([-+=.)>])", re.MULTILINE)


def md_escape(text: str, *, line_start: bool = True) -> str:
    """Text a Markdown renderer shows literally: no markup, links, HTML or math survive.

    ``line_start=False`` for text that continues a line, where a leading "1." or "-" is harmless.
    """
    escaped = _MD_SPECIAL.sub(r"\\\1", printable(text, lines=True))
    escaped = _MD_LINE_START.sub(
        lambda m: m.group(0) if m.start() == 0 and not line_start else m.group(1) + "\\" + m.group(2), escaped
    )
    return html.escape(escaped, quote=False)


def _inline(text: str) -> str:
    return md_escape(text, line_start=False)


def render_markdown(report: Report) -> str:
    lines = [f"# Quire report: {_inline(report.session)}", ""]
    lines.append(f"Generated {_inline(report.generated_at)}  ")
    if report.runtimes:
        lines.append(f"Runtime: {_inline(', '.join(report.runtimes))}  ")
    lines.append(f"{len(report.turns)} questions, {report.citation_count} citations")
    lines.append("")
    if report.documents:
        lines += ["## Documents", ""]
        lines += [_document_line(d) for d in report.documents]
        lines.append("")
    if report.matrix:
        lines += _matrix(report)
    for turn in report.turns:
        lines += _turn(turn)
    return "\n".join(lines).rstrip() + "\n"


def _matrix(report: Report) -> list[str]:
    """The review matrix: a section per document, a line per field with its status, quote and place."""
    lines = ["## Review matrix", ""]
    for doc in dict.fromkeys(c.document_name for c in report.matrix):
        lines += [f"### {_inline(doc)}", ""]
        for c in (c for c in report.matrix if c.document_name == doc):
            mark = f" (reviewer: {_inline(c.mark)})" if c.mark else ""
            answer = f": {_inline(_one_line(c.shown_answer, 300))}" if c.shown_answer else ""
            lines.append(f"- **{_inline(c.field_name)}**{answer} - {_inline(c.status_words)}{mark}")
            if c.quote:
                where = f" ({_inline(c.locator.place(long=True))})" if c.segment_id else ""
                lines += ["", _quoted(c.quote, indent="  ") + where]
            lines.append("")
    return lines


def _document_line(d) -> str:
    pages = f", {d.pages} pages" if d.pages else ""
    warned = "".join(f"\n  - ⚠ {_inline(w)}" for w in d.warnings)
    return f"- {_inline(d.name)} ({_inline(d.kind)}{pages}, ~{d.tokens} tokens){warned}"


def _turn(turn: ReportTurn) -> list[str]:
    lines = [f"## Q{turn.number}. {_inline(_one_line(turn.question))}", ""]
    if "\n" in turn.question.strip():
        lines += [_quoted(turn.question), ""]
    if turn.warning:
        lines += [f"> **Warning: {_inline(turn.warning)}**", ""]
    lines += [_answer(turn), "", f"*{_inline(turn.facts())}*", ""]
    if turn.citations:
        lines += ["### Citations", ""]
        for c in turn.citations:
            lines += _citation(c)
    if turn.evidence:
        lines += ["### Evidence (passages to check, the question's words in bold)", ""]
        for e in turn.evidence:
            text = highlight(e.get("snippet", ""), e.get("terms", []), escape=_inline, mark=("**", "**"))
            lines += [f"- **\\[{_inline(e['ref'])}\\]** {_inline(e.get('document', ''))}, "
                      f"{_inline(e.get('place', ''))} - {_inline(e.get('reason', ''))}", "", f"  > {text}", ""]
    return lines


def _answer(turn: ReportTurn) -> str:
    out = []
    for text, citation in turn.answer_parts():
        if citation is None:
            out.append(md_escape(text, line_start=not out))
        else:
            out.append(f"[\\[{_inline(citation.ref)}\\]](#{citation.anchor})")
    return "".join(out).strip() or "*(no answer)*"


def _citation(c: ReportCitation) -> list[str]:
    head = (
        f'- <a id="{c.anchor}"></a>**\\[{_inline(c.ref)}\\]** {_inline(c.document_name)}, '
        f"{_inline(c.location)} - {_inline(c.status_words)}"
    )
    body = _quoted(c.passage, indent="  ") if c.passage else "  *(passage not available)*"
    return [head, "", body, ""]


def _quoted(text: str, indent: str = "") -> str:
    return "\n".join(f"{indent}> {md_escape(line)}" if line.strip() else f"{indent}>" for line in text.splitlines())


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

