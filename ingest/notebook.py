"""Jupyter notebooks (.ipynb) as readable text: each cell's source under a ``# %%`` marker (the
percent format editors understand), its text outputs after it, binary outputs named, not inlined.

Line anchors of a notebook point into this text (its cells in order), which is what the user sees
when a citation opens; the stored JSON is not line-oriented and would cite base64 instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.document import ParsedDocument
from core.errors import CorruptFile, EmptyFile
from ingest.base import ExtractContext, registry
from ingest.lines import numbered_segments

OUTPUT_CHARS = 2000  # text output kept per cell; long logs are cut with a note


class NotNotebook(ValueError):
    pass


def notebook_text(data: bytes) -> str:
    """The notebook as percent-format text; raises NotNotebook for JSON that is no notebook."""
    try:
        nb = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotNotebook(f"not valid JSON ({exc})") from exc
    if not isinstance(nb, dict):
        raise NotNotebook("not a notebook object")
    cells = nb.get("cells")
    if cells is None and isinstance(nb.get("worksheets"), list):  # nbformat 3
        cells = [c for ws in nb["worksheets"] if isinstance(ws, dict) for c in ws.get("cells", [])]
    if not isinstance(cells, list):
        raise NotNotebook("has no cells")
    language = _language(nb)
    out = [f"# Jupyter notebook ({language}), {len(cells)} cells"]
    for number, cell in enumerate(c for c in cells if isinstance(c, dict)):
        kind = cell.get("cell_type", "code")
        source = _text(cell.get("source", cell.get("input", "")))
        marker = "# %%" if kind == "code" else f"# %% [{kind}]"
        out.append(f"{marker} cell {number + 1}")
        out.append(source.rstrip("\n"))
        shown = _outputs(cell.get("outputs") or [])
        if shown:
            out.append("# Output:")
            out.append(shown)
    return "\n".join(out) + "\n"


def _language(nb: dict) -> str:
    meta = nb.get("metadata") if isinstance(nb.get("metadata"), dict) else {}
    info = meta.get("language_info") if isinstance(meta.get("language_info"), dict) else {}
    kernel = meta.get("kernelspec") if isinstance(meta.get("kernelspec"), dict) else {}
    return str(info.get("name") or kernel.get("language") or "python")


def _text(value) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return "" if value is None else str(value)


def _outputs(outputs: list) -> str:
    parts: list[str] = []
    for output in outputs:
        if not isinstance(output, dict):
            continue
        kind = output.get("output_type")
        if kind == "stream":
            parts.append(_text(output.get("text")))
        elif kind == "error":
            parts.append(f"{output.get('ename', 'Error')}: {output.get('evalue', '')}")
        elif kind in ("execute_result", "display_data", "pyout"):
            data = output.get("data") if isinstance(output.get("data"), dict) else output
            if "text/plain" in data or "text" in data:
                parts.append(_text(data.get("text/plain", data.get("text"))))
            binary = sorted(k for k in data if k.startswith("image/") or k in ("png", "jpeg", "svg"))
            if binary:
                parts.append(f"[{', '.join(binary)} output not included]")
    text = "\n".join(p.rstrip("\n") for p in parts if p.strip())
    if len(text) > OUTPUT_CHARS:
        text = text[:OUTPUT_CHARS] + f"\n[... {len(text) - OUTPUT_CHARS:,} more characters of output cut]"
    return "\n".join("# " + line if line else "#" for line in text.split("\n")) if text else ""


@registry.register(".ipynb")
def extract_notebook(path: Path, ctx: ExtractContext) -> ParsedDocument:
    """One notebook on its own: numbered segments of its text, like a source file."""
    name = ctx.display_name or path.name
    data = path.read_bytes()
    if not data.strip():
        raise EmptyFile(name, "is empty.", hint="Nothing to read: check that the upload finished.")
    try:
        text = notebook_text(data)
    except NotNotebook as exc:
        raise CorruptFile(name, f"is not a Jupyter notebook: {exc}.",
                          hint="Save it again from Jupyter, or add it under a .json name.") from exc
    segments = numbered_segments(text, name, ctx, "jupyter")
    return ParsedDocument(name=name, kind="code", segments=segments,
                          meta={"files": 1, "bytes": len(data), "languages": {"jupyter": 1}, "skipped": [],
                                "notebook": True})
