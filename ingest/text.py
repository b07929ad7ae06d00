"""Plain text and other text formats: .txt .md .rst .log, .csv/.tsv, .json/.jsonl, .html, .eml.

Bytes are decoded with a short, predictable fallback chain (BOMs, UTF-8,
cp1252, latin-1). Prose is cut into paragraph-sized segments that carry their
line range; tables become Markdown tables with the header repeated per chunk.
"""

from __future__ import annotations

import codecs
import csv
import email.policy
import io
import json
import re
from email.parser import BytesParser
from html.parser import HTMLParser
from pathlib import Path

from core.document import Locator, ParsedDocument, Segment
from core.errors import CorruptFile, EmptyFile, UnsupportedFile
from ingest.base import ExtractContext, registry
from ingest.lines import count_many, numbered_segments, split_lines

PARA_CHARS = 3000  # a paragraph longer than this is cut at line, then sentence boundaries
MIN_PARA_CHARS = 200  # shorter paragraphs (headings, list intros) join the next one
TABLE_ROWS = 40
TABLE_CHARS = 4000
WIDE_TABLE = 12  # more columns than this: rows become "column: value" records

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CONTROL = bytes(set(range(32)) - {9, 10, 12, 13, 27})
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


# -- decoding ----------------------------------------------------------------
def decode_bytes(data: bytes) -> tuple[str, str] | None:
    """(text, encoding), or None when the bytes look binary."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                return None
    head = data[:8192]
    if b"\0" in head and (wide := _bomless_utf16(data)):
        return wide
    if b"\0" in head or len(head.translate(None, _CONTROL)) < 0.9 * len(head):
        return None  # NUL bytes, or more than a tenth control characters: not text
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _bomless_utf16(data: bytes) -> tuple[str, str] | None:
    """UTF-16 without a BOM: nearly every other byte of ASCII-heavy text is NUL."""
    head = data[:8192]
    for encoding, zeros in (("utf-16-le", head[1::2]), ("utf-16-be", head[0::2])):
        if len(zeros) > 8 and zeros.count(0) > 0.9 * len(zeros):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                return None
    return None


def read_text(path: Path, name: str) -> tuple[str, str]:
    """The decoded text of a file, refusing empty and binary ones with a message naming it."""
    data = path.read_bytes()
    decoded = decode_bytes(data)
    if decoded is None:
        raise UnsupportedFile(name, "holds binary data, not text.",
                              hint="Check the file type; rename it if its extension is wrong.")
    text, encoding = decoded
    if not text.strip():
        raise EmptyFile(name, "has no text (it is empty or only whitespace).", hint="Nothing to read.")
    return text, encoding


# -- prose ------------------------------------------------------------------
def paragraphs(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line_start, line_end, text) blocks separated by blank lines, 1-based line numbers."""
    blocks: list[tuple[int, int, str]] = []
    start = None
    for i, line in enumerate(lines):
        if line.strip():
            if start is None:
                start = i
        elif start is not None:
            blocks.append((start + 1, i, "\n".join(lines[start:i])))
            start = None
    if start is not None:
        blocks.append((start + 1, len(lines), "\n".join(lines[start:])))
    return blocks


def merge_small(blocks: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    merged: list[tuple[int, int, str]] = []
    pending: tuple[int, int, str] | None = None
    for a, b, text in blocks:
        if pending is not None:
            a, text = pending[0], pending[2] + "\n\n" + text
            pending = None
        if len(text) < MIN_PARA_CHARS:
            pending = (a, b, text)
        else:
            merged.append((a, b, text))
    if pending is not None:
        if merged and len(merged[-1][2]) + len(pending[2]) <= PARA_CHARS:
            a, _, text = merged.pop()
            merged.append((a, pending[1], text + "\n\n" + pending[2]))
        else:
            merged.append(pending)
    return merged


def _split_long(block: tuple[int, int, str], lines: list[str]) -> list[tuple[int, int, str]]:
    a, b, text = block
    if len(text) <= PARA_CHARS:
        return [block]
    if b > a:  # several lines: cut at line boundaries
        out, start, size = [], a, 0
        for n in range(a, b + 1):
            size += len(lines[n - 1]) + 1
            if size > PARA_CHARS and n > start:
                out.extend(_split_long((start, n - 1, "\n".join(lines[start - 1:n - 1])), lines))
                start, size = n, len(lines[n - 1]) + 1
        out.extend(_split_long((start, b, "\n".join(lines[start - 1:b])), lines))
        return out
    return [(a, a, piece) for piece in cut_line(text)]


def cut_line(text: str) -> list[str]:
    """One very long line, cut at sentence ends (or hard, when there are none)."""
    pieces, current = [], ""
    for sentence in _SENTENCE_END.split(text):
        while len(sentence) > PARA_CHARS:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:PARA_CHARS])
            sentence = sentence[PARA_CHARS:]
        if current and len(current) + len(sentence) + 1 > PARA_CHARS:
            pieces.append(current)
            current = ""
        current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return pieces


def prose_blocks(text: str) -> list[tuple[int, int, str]]:
    lines = split_lines(text)
    blocks = merge_small(paragraphs(lines))
    return [piece for block in blocks for piece in _split_long(block, lines)]


def prose_segments(blocks, name: str, ctx: ExtractContext, **meta) -> list[Segment]:
    counts = count_many([body for _, _, body in blocks], ctx)
    return [Segment("text", body, Locator(path=name, line_start=a, line_end=b), tokens=n, meta=dict(meta))
            for (a, b, body), n in zip(blocks, counts)]


def text_document(name: str, segments: list[Segment], **meta) -> ParsedDocument:
    if not segments:
        raise EmptyFile(name, "has no text to read.", hint="Nothing to read.")
    return ParsedDocument(name=name, kind="text", segments=segments, meta=meta)


@registry.register(".txt", ".md", ".markdown", ".rst", ".log", ".text")
def extract_text(path: Path, ctx: ExtractContext) -> ParsedDocument:
    name = ctx.display_name or path.name
    text, encoding = read_text(path, name)
    fmt = "markdown" if name.lower().endswith((".md", ".markdown")) else "text"
    segments = prose_segments(prose_blocks(text), name, ctx, format=fmt)
    return text_document(name, segments, encoding=encoding, lines=len(split_lines(text)))


# -- tables -----------------------------------------------------------------
def _cell(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ").strip()


def md_row(cells: list[str], width: int) -> str:
    cells = (cells + [""] * width)[:width]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table_rows(text: str, delimiter: str, name: str) -> list[tuple[int, int, list[str]]]:
    """(first line, last line, cells) of each non-blank row; quoted cells may span lines."""
    if csv.field_size_limit() < len(text):
        csv.field_size_limit(len(text) + 1)  # one cell may hold a whole contract
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, last = [], 0
    try:
        for row in reader:
            if any(c.strip() for c in row):
                rows.append((last + 1, reader.line_num, row))
            last = reader.line_num
    except csv.Error as exc:
        raise CorruptFile(name, f"is not a well-formed table near line {reader.line_num} ({exc}).",
                          hint="Check the quoting, or rename it to .txt to read it as plain text.") from exc
    return rows


@registry.register(".csv", ".tsv")
def extract_table(path: Path, ctx: ExtractContext) -> ParsedDocument:
    """Markdown tables of up to ``TABLE_ROWS`` rows with the header repeated; wide tables as records."""
    name = ctx.display_name or path.name
    text, encoding = read_text(path, name)
    delimiter = "\t" if name.lower().endswith(".tsv") else _sniff_delimiter(text)
    rows = _table_rows(text, delimiter, name)
    if not rows:
        raise EmptyFile(name, "has no rows.", hint="Nothing to read.")
    header, body = rows[0], rows[1:]
    width = max(len(r[2]) for r in rows)
    if width > WIDE_TABLE:
        render, head = (lambda row, n: _record(header[2], row, n)), ""
    else:
        render, head = (lambda row, n: md_row(row, width)), md_row(header[2], width) + "\n|" + " --- |" * width
    chunks = list(_table_chunks(head, body, render, header[0]))
    counts = count_many([c[-1] for c in chunks], ctx)
    segments = [
        Segment("text", chunk, Locator(path=name, line_start=a, line_end=b), tokens=n,
                meta={"format": "records" if width > WIDE_TABLE else "table", "rows": [first, last]})
        for (a, b, first, last, chunk), n in zip(chunks, counts)
    ]
    return text_document(name, segments, encoding=encoding, rows=len(body), columns=width)


def _record(header: list[str], row: list[str], number: int) -> str:
    """One row of a wide table as ``column: value`` lines (empty cells left out)."""
    names = header + [f"column {i + 1}" for i in range(len(header), len(row))]
    cells = [f"- {_cell(k)}: {_cell(v)}" for k, v in zip(names, row) if v.strip()]
    return f"Row {number}:\n" + "\n".join(cells)


def _table_chunks(head: str, body, render, header_line: int):
    """(first line, last line, first row, last row, text) per chunk of rows, ``head`` repeated."""
    if not body:
        yield header_line, header_line, 0, 0, head or "(no rows)"
        return
    start = 0
    while start < len(body):
        parts, size, end = [], len(head), start
        while end < len(body) and len(parts) < TABLE_ROWS:
            part = render(body[end][2], end + 1)
            if parts and size + len(part) > TABLE_CHARS:
                break
            parts.append(part)
            size += len(part) + 1
            end += 1
        text = "\n".join(parts) if not head else head + "\n" + "\n".join(parts)
        yield body[start][0], body[end - 1][1], start + 1, end, text
        start = end


def _sniff_delimiter(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


# -- JSON -------------------------------------------------------------------
@registry.register(".json", ".jsonl", ".ndjson")
def extract_json(path: Path, ctx: ExtractContext) -> ParsedDocument:
    """JSON as numbered lines; minified JSON is pretty-printed first (line numbers then follow that form)."""
    name = ctx.display_name or path.name
    text, encoding = read_text(path, name)
    reformatted = False
    if not name.lower().endswith((".jsonl", ".ndjson")) and max(map(len, split_lines(text))) > 500:
        try:
            text, reformatted = json.dumps(json.loads(text), indent=2, ensure_ascii=False), True
        except ValueError:
            pass  # not valid JSON: keep the text as it is
    segments = numbered_segments(text, name, ctx, language="json")
    return text_document(name, segments, encoding=encoding, reformatted=reformatted)


# -- HTML -------------------------------------------------------------------
class _HtmlText(HTMLParser):
    """Visible text of an HTML page as blocks that keep their source line range; scripts and styles dropped."""

    BLOCK = frozenset("""p div br li ul ol dl dt dd h1 h2 h3 h4 h5 h6 tr table thead tbody section article
        header footer nav aside main pre blockquote hr title figure figcaption form fieldset details summary""".split())
    SKIP = frozenset("script style noscript template svg canvas iframe object".split())

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[int, int, str]] = []
        self.parts: list[str] = []
        self.start = self.end = 0
        self.skip = 0

    def handle_starttag(self, tag, attrs) -> None:
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self.flush()
            if tag == "li":
                self.parts.append("- ")
            elif len(tag) == 2 and tag[0] == "h" and tag[1].isdigit():
                self.parts.append("#" * int(tag[1]) + " ")
        elif tag in ("td", "th") and self.parts:
            self.parts.append(" | ")

    def handle_startendtag(self, tag, attrs) -> None:
        if tag not in self.SKIP:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.flush()

    def handle_data(self, data: str) -> None:
        if self.skip or not data:
            return
        line = self.getpos()[0]
        stripped = data.lstrip()
        if stripped:
            if not self.start:
                self.start = line + data[: len(data) - len(stripped)].count("\n")
            self.end = line + data.rstrip().count("\n")
        self.parts.append(data)

    def flush(self) -> None:
        text = " ".join("".join(self.parts).split())
        if text.strip(" -#|"):
            self.blocks.append((self.start or self.end, self.end, text))
        self.parts, self.start = [], 0


def html_blocks(text: str) -> list[tuple[int, int, str]]:
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    parser.flush()
    blocks = merge_small(parser.blocks)
    return [(a, b, piece) for a, b, body in blocks for piece in (cut_line(body) if len(body) > PARA_CHARS else [body])]


@registry.register(".html", ".htm", ".xhtml")
def extract_html(path: Path, ctx: ExtractContext) -> ParsedDocument:
    name = ctx.display_name or path.name
    text, encoding = read_text(path, name)
    segments = prose_segments(html_blocks(text), name, ctx, format="html")
    return text_document(name, segments, encoding=encoding)


# -- e-mail -----------------------------------------------------------------
_HEADERS = ("From", "To", "Cc", "Date", "Subject")


def _part_text(part) -> str:
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):  # unknown charset or broken transfer encoding
        content = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    if isinstance(content, bytes):
        content = (decode_bytes(content) or ("",))[0]
    if not isinstance(content, str):
        return ""
    if part.get_content_type() == "text/html":
        return "\n\n".join(block for _, _, block in html_blocks(content))
    return content


def _attachments(msg) -> list:
    return [p for p in msg.iter_attachments() if not p.is_multipart()] if msg.is_multipart() else []


@registry.register(".eml")
def extract_eml(path: Path, ctx: ExtractContext) -> ParsedDocument:
    """Headers, the body text, and the text of text attachments; other attachments are listed."""
    name = ctx.display_name or path.name
    with open(path, "rb") as fh:
        msg = BytesParser(policy=email.policy.default).parse(fh)
    attachments = _attachments(msg)
    listing = [f"{a.get_filename() or 'unnamed'} ({a.get_content_type()})" for a in attachments]
    head = "\n".join(f"{h}: {msg[h]}" for h in _HEADERS if msg[h])
    if listing:
        head += "\nAttachments: " + ", ".join(listing)
    segments = [Segment("text", head, Locator(path=name), tokens=ctx.count_tokens(head), meta={"format": "email-headers"})] if head else []
    body = msg.get_body(preferencelist=("plain", "html"))
    if body is not None:
        segments += prose_segments(prose_blocks(_part_text(body)), name, ctx, format="email")
    for part in attachments:
        if part.get_content_maintype() == "text":
            label = f"{name}/{part.get_filename() or 'attachment'}"
            segments += prose_segments(prose_blocks(_part_text(part)), label, ctx, format="attachment")
    return text_document(name, segments, attachments=listing)
