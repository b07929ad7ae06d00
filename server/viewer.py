"""The document viewer at ``/viewer``: a cited source opened in the browser, at the cited place.

* PDFs are drawn by PDF.js (vendored in ``server/static/pdfjs``, no CDN) with every page scrollable, zoom,
  page stepping, and the quoted lines marked (``Quire.quote_boxes``; the passage's box when the quote is not
  found). A quote that runs on to the next page is marked on both.
* Code and text files show their lines, numbered once, syntax-highlighted by Pygments, the cited ones marked.
* Images show with their OCR boxes, the cited one marked.

``/viewer?session=S&turn=T&cite=N`` opens citation N of answer T (the answer's citations, then its evidence,
as the Chat tab lists them); ``/viewer?session=S&cell=C`` a matrix cell. Previous/next step through the
answer's citations (or the session's found cells). The request's user is the :class:`server.auth.Gate`'s, and
everything is looked up through ``Quire.as_user``: a session, turn, cell or document they may not read is not
found. Files are served by document or segment id only, from the data directory; no name from a request or a
document reaches a path. Everything a document says is escaped, and the page's Content-Security-Policy runs
only this server's own scripts.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_by_name, get_lexer_for_filename
from pygments.util import ClassNotFound

from core.errors import NotFound, QuireError
from core.records import CitationRecord, DocumentRecord, SegmentRecord, SessionRecord
from quire.api import Quire
from server.errors import status_of
from ui.render import evidence_citations

STATIC = Path(__file__).parent / "static"
FILES = {  # the only files /viewer/static/ serves, by name: nothing from a request reaches a path
    "pdf.min.mjs": (STATIC / "pdfjs" / "pdf.min.mjs", "text/javascript"),
    "pdf.worker.min.mjs": (STATIC / "pdfjs" / "pdf.worker.min.mjs", "text/javascript"),
    "viewer.js": (STATIC / "viewer.js", "text/javascript"),
    "viewer.css": (STATIC / "viewer.css", "text/css"),
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "worker-src 'self' blob:; font-src 'self' data:; frame-ancestors 'self'; base-uri 'none'; form-action 'none'")
HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "same-origin",
           "cache-control": "no-store"}
CODE_CONTEXT = 400  # lines shown around the cited ones in a long file
_NUMBERED = re.compile(r"^(\d+)\t(.*)$")


@dataclass
class Target:
    """One place to show: a citation or a matrix cell, resolved to its segment and document."""

    label: str  # "S3 · lease.pdf · p.2 · verified", plain text
    segment: SegmentRecord | None
    citation: CitationRecord
    why_empty: str = ""  # when there is nothing to open
    data: dict = field(default_factory=dict)


def acting(request: Request) -> Quire:
    return request.app.state.quire.as_user(request.state.quire_user)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        raise NotFound("No such citation.", hint="The link is damaged; open the citation from the answer again.")


# -- what to show -------------------------------------------------------------------------------
def _answer_citations(q: Quire, session: SessionRecord, turn_id: int) -> list[CitationRecord]:
    turn = next((t for t in q.turns(session) if t.id == turn_id), None)
    if turn is None:
        raise NotFound("No such answer.", hint="It may have been removed, or it is not shared with you.")
    return list(turn.citations) + evidence_citations(turn)


def _cell_citations(q: Quire, session: SessionRecord, cell_id: int) -> tuple[list[CitationRecord], int]:
    cells = [c for c in q.matrix_cells(session) if c.segment_id is not None or c.id == cell_id]
    index = next((i for i, c in enumerate(cells) if c.id == cell_id), None)
    if index is None:
        raise NotFound("No such matrix cell.", hint="It may have been removed, or it is not shared with you.")
    citations = [CitationRecord(ref=c.field_name, segment_id=c.segment_id, document_name=c.document_name,
                                locator=c.locator, quote=c.quote, status=c.status, origin="matrix") for c in cells]
    return citations, index


def _status(c: CitationRecord) -> str:
    if c.origin == "evidence":
        return "evidence: a passage to check"
    return c.status.replace("_", " ") + (" (matched)" if c.origin == "matched" else "")


def resolve(q: Quire, session: SessionRecord, c: CitationRecord) -> Target:
    label = " · ".join(p for p in (c.ref, c.document_name, c.locator.place(), _status(c)) if p)
    if c.segment_id is None:
        return Target(label, None, c, "The model cited a passage it was not shown, so there is nothing to open.")
    segment = q.segments_by_id([c.segment_id]).get(c.segment_id)
    if segment is None:
        return Target(label, None, c, "This passage is no longer stored (its document was removed).")
    document = q.document(segment.document_id)
    page = c.locator.page or segment.locator.page
    if page and q.original(document) is not None and document.kind != "image":
        bbox = c.locator.bbox or segment.locator.bbox
        boxes = [{"page": p, "box": list(b), "quote": True} for p, b in q.quote_boxes(document, page, c.quote)]
        if not boxes and bbox:
            boxes = [{"page": page, "box": list(bbox), "quote": False}]
        return Target(label, segment, c, data={"kind": "pdf", "file": f"/viewer/file/{document.id}", "page": page,
                                               "boxes": boxes, "quoted": bool(boxes and boxes[0]["quote"])})
    if document.kind == "image" or segment.kind == "image":
        return _image(q, session, document, segment, c, label)
    return Target(label, segment, c, data={"kind": "text"})


def _image(q: Quire, session: SessionRecord, document: DocumentRecord, segment: SegmentRecord,
           c: CitationRecord, label: str) -> Target:
    parts = [s for s in q.segments(session) if s.document_id == document.id]
    picture = next((s for s in parts if s.kind == "image" and s.image_sha), None)
    if picture is None:
        return Target(label, segment, c, data={"kind": "text"})
    boxes = [{"box": list(s.locator.bbox), "cited": s.id == segment.id} for s in parts if s.locator.bbox]
    size = [document.meta.get("width"), document.meta.get("height")]
    return Target(label, segment, c, data={"kind": "image", "file": f"/viewer/image/{picture.id}", "boxes": boxes,
                                           "size": size if all(size) else None})


# -- text and code ----------------------------------------------------------------------------------
def file_lines(q: Quire, session: SessionRecord, segment: SegmentRecord) -> dict[int, str]:
    """The lines of the cited file by number, put back together from its stored segments (code segments carry
    "N<tab>" prefixes and a "File:" header, which are taken off: the viewer numbers the lines itself)."""
    path = segment.locator.path
    parts = [s for s in q.segments(session) if s.document_id == segment.document_id and s.locator.path == path
             and s.locator.line_start is not None] or [segment]
    lines: dict[int, str] = {}
    for s in parts:
        body = s.text.split("\n")
        if body and body[0].startswith("File: "):
            body = body[1:]
        numbered = [_NUMBERED.match(line) for line in body]
        if body and all(numbered):
            for m in numbered:
                n = int(m.group(1))
                lines[n] = lines.get(n, "") + m.group(2)
        else:
            start = s.locator.line_start or 1
            for i, line in enumerate(body):
                lines.setdefault(start + i, line)
    return lines


def _lexer(segment: SegmentRecord):
    language = segment.meta.get("language") or ""
    try:
        return get_lexer_by_name(language) if language else get_lexer_for_filename(segment.locator.path or "x.txt")
    except ClassNotFound:
        return TextLexer()


def code_html(q: Quire, session: SessionRecord, target: Target) -> str:
    """The file's lines, numbered once and highlighted (Pygments escapes the text), the cited lines marked."""
    segment, cited = target.segment, target.citation.locator
    lines = file_lines(q, session, segment)
    if not lines:
        return '<pre class="q-plain">(no text)</pre>'
    first_cited = cited.line_start or segment.locator.line_start or min(lines)
    last_cited = cited.line_end or (cited.line_start and cited.line_start) or segment.locator.line_end or first_cited
    lo = max(min(lines), first_cited - CODE_CONTEXT)
    hi = min(max(lines), last_cited + CODE_CONTEXT)
    numbers = range(lo, hi + 1)
    text = "\n".join(lines.get(n, "") for n in numbers)
    marked = [n - lo + 1 for n in range(first_cited, last_cited + 1)]
    formatter = HtmlFormatter(linenos="table", linenostart=lo, hl_lines=marked, lineanchors="L", anchorlinenos=False,
                              cssclass="q-code", wrapcode=True)
    return (f'<div class="q-code-wrap" data-first="{first_cited - lo + 1}">'
            + pygments_highlight(text, _lexer(segment), formatter) + "</div>")


# -- the page -------------------------------------------------------------------------------------
def _link(params: dict, index: int) -> str:
    return "?" + urlencode({**params, "cite": index})


def page_html(q: Quire, session: SessionRecord, citations: list[CitationRecord], index: int, params: dict) -> str:
    target = resolve(q, session, citations[index])
    esc = html.escape
    prev_link = (f'<a class="q-btn" id="q-prev-cite" href="{esc(_link(params, index - 1))}" '
                 f'aria-label="Previous citation">◀ Prev citation</a>' if index > 0 else
                 '<span class="q-btn q-off" aria-disabled="true">◀ Prev citation</span>')
    next_link = (f'<a class="q-btn" id="q-next-cite" href="{esc(_link(params, index + 1))}" '
                 f'aria-label="Next citation">Next citation ▶</a>' if index + 1 < len(citations) else
                 '<span class="q-btn q-off" aria-disabled="true">Next citation ▶</span>')
    kind = target.data.get("kind", "none")
    tools = ""
    if kind == "pdf":
        tools = ('<span class="q-group"><button type="button" id="q-prev-page" aria-label="Previous page">▲</button>'
                 '<label>Page <input id="q-page" type="number" min="1" value="1" aria-label="Page number"></label>'
                 '<span id="q-pages">of ?</span>'
                 '<button type="button" id="q-next-page" aria-label="Next page">▼</button></span>'
                 '<span class="q-group"><button type="button" id="q-zoom-out" aria-label="Zoom out">−</button>'
                 '<span id="q-zoom" aria-live="polite">100%</span>'
                 '<button type="button" id="q-zoom-in" aria-label="Zoom in">+</button></span>')
    quote = target.citation.quote
    if kind == "pdf":
        how = "the quoted lines are marked" if target.data.get("quoted") else (
            "the quote was not found on the page: the whole passage is marked" if quote else "the passage is marked")
    else:
        how = ""
    if kind == "pdf":
        body = '<div id="q-pages-box" class="q-pdf" role="document" aria-label="Document pages"></div>'
    elif kind == "image":
        body = ('<div class="q-image"><div id="q-image-box" class="q-image-box">'
                f'<img id="q-image" alt="{esc(target.citation.document_name)}" src="{esc(target.data["file"])}"></div></div>')
    elif kind == "text":
        body = code_html(q, session, target)
    else:
        body = f'<p class="q-empty">{esc(target.why_empty)}</p>'
    quote_html = f'<blockquote class="q-quote">“{esc(quote)}”</blockquote>' if quote else ""
    data = json.dumps(target.data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(target.label)} · Quire viewer</title>
<link rel="stylesheet" href="/viewer/static/viewer.css"><link rel="stylesheet" href="/viewer/static/code.css"></head>
<body data-kind="{esc(kind)}">
<header class="q-bar" role="toolbar" aria-label="Viewer">
<span class="q-title" id="q-title">{esc(target.label)}</span>
<span class="q-group">{prev_link}<span class="q-count" id="q-count">{index + 1} / {len(citations)}</span>{next_link}</span>
{tools}
</header>
<div class="q-note">{esc(how)}{quote_html}</div>
<main id="q-main">{body}</main>
<script type="application/json" id="q-data">{data}</script>
<script type="module" src="/viewer/static/viewer.js"></script>
</body></html>"""


def _error_page(exc: QuireError) -> HTMLResponse:
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Not available</title>'
            f'<link rel="stylesheet" href="/viewer/static/viewer.css"></head><body><p class="q-empty">'
            f'{html.escape(exc.message)} {html.escape(exc.hint or "")}</p></body></html>')
    return HTMLResponse(body, status_code=status_of(exc), headers=HEADERS)


def _inside(path: Path | None, root: Path) -> Path:
    """``path`` when it is a file under ``root`` (the data directory's blobs), else NotFound."""
    if path is None or not path.resolve().is_relative_to(root.resolve()) or not path.is_file():
        raise NotFound("No such file.", hint="Its document may have been removed.")
    return path


def build(quire: Quire) -> FastAPI:
    """The viewer's routes, mounted at ``/viewer`` by ``server.app`` behind the Gate."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.quire = quire
    blobs = quire.settings.blob_dir

    @app.exception_handler(QuireError)
    async def quire_error(request: Request, exc: QuireError) -> Response:
        return _error_page(exc)

    @app.get("/")
    def viewer(request: Request, session: str = "", turn: str | None = None, cell: str | None = None,
               cite: str | None = None) -> HTMLResponse:
        q = acting(request)
        info = q.session(session, create=False)
        if cell is not None:
            citations, index = _cell_citations(q, info, _int(cell))
            params = {"session": session, "cell": cell}
            if cite is not None:
                index = _int(cite)
        else:
            citations = _answer_citations(q, info, _int(turn) or 0)
            index, params = _int(cite) or 0, {"session": session, "turn": turn}
        if not 0 <= index < len(citations):
            raise NotFound("No such citation.", hint="Open the citation from the answer again.")
        return HTMLResponse(page_html(q, info, citations, index, params), headers=HEADERS)

    @app.get("/file/{document_id}")
    def original(request: Request, document_id: int) -> FileResponse:
        q = acting(request)
        document = q.document(document_id)
        if document.kind == "image" or not (document.blob_sha or ""):
            raise NotFound("No such file.", hint="Only a kept PDF is opened here.")
        path = _inside(q.original(document), blobs)
        return FileResponse(path, media_type="application/pdf", headers=HEADERS | {"cache-control": "private"})

    @app.get("/image/{segment_id}")
    def image(request: Request, segment_id: int) -> FileResponse:
        q = acting(request)
        segment = q.segments_by_id([segment_id]).get(segment_id)
        if segment is None or not segment.image_sha:
            raise NotFound("No such image.", hint="Its document may have been removed.")
        return FileResponse(_inside(q.image(segment.image_sha), blobs), headers=HEADERS | {"cache-control": "private"})

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name == "code.css":
            css = HtmlFormatter(style="default").get_style_defs(".q-code")
            dark = HtmlFormatter(style="monokai").get_style_defs("body.q-dark .q-code")
            return Response(css + "\n" + dark, media_type="text/css", headers={"cache-control": "max-age=3600"})
        if name not in FILES:
            raise NotFound("No such file.")
        path, media = FILES[name]
        return FileResponse(path, media_type=media, headers={"cache-control": "max-age=3600",
                                                             "x-content-type-options": "nosniff"})

    return app
