"""The report as one self-contained HTML file: inline CSS, no scripts, every text escaped."""

from __future__ import annotations

from html import escape as _html_escape

from backend.evidence import highlight
from core.records import MatrixCellRecord
from export.report import Report, ReportCitation, ReportTurn
from core.errors import printable

STATUSES = ("verified", "quoted", "unverified", "missing")
NO_PASSAGE = "<p class=\"meta\">(passage not available)</p>"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans", sans-serif; max-width: 52rem;
       margin: 2rem auto; padding: 0 1rem; color: #1f2328; line-height: 1.5; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-top: 1px solid #d0d7de; padding-top: 1rem; }
h3 { font-size: 1rem; color: #57606a; }
.meta, .facts { color: #57606a; font-size: .9rem; }
.answer p { margin: .5rem 0; }
a.ref { text-decoration: none; font-weight: 600; color: #0969da; }
ol.citations { padding-left: 1.2rem; }
ol.citations li { margin-bottom: .8rem; }
blockquote { margin: .3rem 0 0 0; padding: .3rem .8rem; border-left: 4px solid #d0d7de;
             background: #f6f8fa; white-space: pre-wrap; }
.badge { font-size: .75rem; font-weight: 600; padding: .05rem .4rem; border-radius: .6rem; }
.badge.verified { background: #dafbe1; color: #116329; }
.badge.quoted { background: #fff1e5; color: #953800; }
.badge.unverified { background: #fff8c5; color: #7d4e00; }
.warning { background: #ffebe9; color: #a40e26; font-weight: 600; padding: .4rem .8rem; border-radius: .4rem; }
.badge.missing { background: #ffebe9; color: #a40e26; }
.origin { color: #57606a; font-size: .8rem; }
table.docs { border-collapse: collapse; font-size: .9rem; }
table.docs td, table.docs th { border: 1px solid #d0d7de; padding: .2rem .5rem; text-align: left; }
table.docs td.warn { color: #7d4e00; }
table.matrix { border-collapse: collapse; font-size: .85rem; width: 100%; }
table.matrix td, table.matrix th { border: 1px solid #d0d7de; padding: .3rem .4rem; text-align: left; vertical-align: top; }
table.matrix blockquote { font-size: .8rem; }
.badge.not_found { background: #eaeef2; color: #57606a; }
"""


def escape(text: str) -> str:
    """HTML-escaped, with control characters and direction marks written as their escapes."""
    return _html_escape(printable(text, lines=True))


def render_html(report: Report) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>Quire report: {escape(report.session)}</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n{report_body(report)}</body>\n</html>\n"
    )


def report_body(report: Report) -> str:
    """The report's markup without page chrome; the PDF renderer lays out the same body."""
    parts = [f"<h1>Quire report: {escape(report.session)}</h1>", _meta(report)]
    if report.documents:
        parts.append(_documents(report))
    if report.matrix:
        parts.append(_matrix(report.matrix))
    parts += [_turn(t) for t in report.turns]
    if not report.turns and not report.matrix:
        parts.append("<p class=\"meta\">No questions were asked in this session yet.</p>")
    return "\n".join(parts) + "\n"


def _meta(report: Report) -> str:
    bits = [f"Generated {escape(report.generated_at)}"]
    if report.runtimes:
        bits.append(f"Runtime: {escape(', '.join(report.runtimes))}")
    bits.append(f"{len(report.turns)} questions, {report.citation_count} citations")
    return f"<p class=\"meta\">{'<br>'.join(bits)}</p>"


def _documents(report: Report) -> str:
    rows = "".join(
        f"<tr><td>{escape(d.name)}</td><td>{escape(d.kind)}</td><td>{d.pages or ''}</td><td>{d.tokens}</td>"
        f"<td class=\"warn\">{'<br>'.join('⚠ ' + escape(w) for w in d.warnings)}</td></tr>"
        for d in report.documents
    )
    return (
        "<h3>Documents</h3>\n<table class=\"docs\"><tr><th>Name</th><th>Kind</th><th>Pages</th><th>Tokens</th>"
        f"<th>Warnings</th></tr>{rows}</table>"
    )


def _matrix(cells: list[MatrixCellRecord]) -> str:
    """One row per document, one column per field; each cell its answer, status, quote and place."""
    fields = list(dict.fromkeys(c.field_name for c in cells))
    documents = list(dict.fromkeys(c.document_name for c in cells))
    spot = {(c.document_name, c.field_name): c for c in cells}
    head = "".join(f"<th>{_text(f)}</th>" for f in fields)
    rows = []
    for doc in documents:
        tds = "".join(_matrix_cell(spot.get((doc, f))) for f in fields)
        rows.append(f"<tr><th>{escape(doc)}</th>{tds}</tr>")
    verified = sum(c.status == "verified" for c in cells)
    return (f"<h2 id=\"matrix\">Review matrix</h2>\n<p class=\"meta\">{len(documents)} documents, {len(fields)} fields, "
            f"{verified} of {len(cells)} cells verified</p>\n"
            f"<table class=\"matrix\"><tr><th>Document</th>{head}</tr>{''.join(rows)}</table>")


def _matrix_cell(c: MatrixCellRecord | None) -> str:
    if c is None:
        return "<td></td>"
    badge = f"<span class=\"badge {c.status if c.status in ('verified', 'quoted', 'unverified', 'not_found') else 'unverified'}\">" \
            f"{escape(c.status_words)}</span>"
    mark = f" <span class=\"origin\">reviewer: {escape(c.mark)}</span>" if c.mark else ""
    answer = f"<p>{escape(c.shown_answer)}</p>" if c.shown_answer else ""
    where = f"<span class=\"origin\">{escape(c.locator.place(long=True))}</span>" if c.segment_id else ""
    quote = f"<blockquote>{escape(c.quote)}</blockquote>" if c.quote else ""
    return f"<td>{answer}{badge}{mark}{quote}{where}</td>"


def _turn(turn: ReportTurn) -> str:
    parts = [
        f"<h2 id=\"q{turn.number}\">Q{turn.number}. {_text(turn.question)}</h2>",
        *([f"<p class=\"warning\">Warning: {escape(turn.warning)}</p>"] if turn.warning else []),
        f"<div class=\"answer\">{_answer(turn)}</div>",
        f"<p class=\"facts\">{escape(turn.facts())}</p>",
    ]
    if turn.citations:
        items = "\n".join(_citation(c) for c in turn.citations)
        parts.append(f"<h3>Citations</h3>\n<ol class=\"citations\">\n{items}\n</ol>")
    if turn.evidence:
        items = "\n".join(_evidence(e) for e in turn.evidence)
        parts.append(f"<h3>Evidence (passages to check)</h3>\n<ol class=\"citations\">\n{items}\n</ol>")
    return "\n".join(parts)


def _answer(turn: ReportTurn) -> str:
    out = []
    for text, citation in turn.answer_parts():
        if citation is None:
            out.append(escape(text))
        else:
            out.append(f"<a class=\"ref\" href=\"#{citation.anchor}\">{escape(citation.ref.join('[]'))}</a>")
    paragraphs = [p.strip() for p in "".join(out).split("\n\n")]
    body = "".join(f"<p>{p.replace(chr(10), '<br>')}</p>" for p in paragraphs if p)
    return body or "<p class=\"meta\">(no answer)</p>"


def _citation(c: ReportCitation) -> str:
    status = c.status if c.status in STATUSES else "unverified"
    passage = f"<blockquote>{escape(c.passage)}</blockquote>" if c.passage else NO_PASSAGE
    return (
        f"<li id=\"{c.anchor}\"><b>{escape(c.ref.join('[]'))}</b> {escape(c.document_name)}, {escape(c.location)} "
        f"<span class=\"badge {status}\">{escape(c.status_words)}</span>{passage}</li>"
    )


def _evidence(e: dict) -> str:
    text = highlight(e.get("snippet", ""), e.get("terms", []))  # escaped, the question's words in <mark>
    return (f"<li><b>{escape(str(e.get('ref', '')).join('[]'))}</b> {escape(e.get('document', ''))}, "
            f"{escape(e.get('place', ''))} <span class=\"origin\">{escape(e.get('reason', ''))}</span>"
            f"<blockquote>{text}</blockquote></li>")


def _text(text: str) -> str:
    return escape(" ".join((text or "").split()))

