"""Jupyter notebooks, alone and inside a codebase: cells as percent-format text, outputs as comments."""

from __future__ import annotations

import base64
import json
import zipfile

import pytest

from core.errors import CorruptFile, EmptyFile
from ingest.code import extract_archive
from ingest.notebook import extract_notebook

PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                                     "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")).decode()


def _notebook() -> dict:
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "language": "python"}, "language_info": {"name": "python"}},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Revenue check\n", "Totals by quarter."]},
            {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "total = 41 + 1\nprint(total)",
             "outputs": [{"output_type": "stream", "name": "stdout", "text": ["42\n"]}]},
            {"cell_type": "code", "execution_count": 2, "metadata": {}, "source": ["plot(total)"],
             "outputs": [{"output_type": "display_data", "metadata": {},
                          "data": {"image/png": PNG, "text/plain": ["<Figure size 640x480>"]}}]},
            {"cell_type": "code", "execution_count": 3, "metadata": {}, "source": "1 / 0",
             "outputs": [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
                          "traceback": ["..."]}]},
        ],
    }


def _lines(doc) -> dict[int, str]:
    rows = {}
    for seg in doc.segments:
        for row in seg.text.split("\n")[1:]:
            number, _, text = row.partition("\t")
            rows[int(number)] = text
    return rows


def test_notebook_cells_and_outputs_become_numbered_text(tmp_path, ctx):
    path = tmp_path / "revenue.ipynb"
    path.write_text(json.dumps(_notebook()))
    doc = extract_notebook(path, ctx)
    text = "\n".join(_lines(doc).values())
    assert "# %% [markdown] cell 1" in text and "# Revenue check" in text
    assert "# %% cell 2\ntotal = 41 + 1\nprint(total)\n# Output:\n# 42" in text
    assert "[image/png output not included]" in text and PNG[:20] not in text  # no base64 in the context
    assert "# ZeroDivisionError: division by zero" in text
    lines = _lines(doc)
    line = next(n for n, t in lines.items() if t == "total = 41 + 1")
    seg = next(s for s in doc.segments if s.locator.line_start <= line <= s.locator.line_end)
    assert seg.locator.path == "revenue.ipynb" and doc.meta["notebook"] is True


def test_notebook_inside_a_codebase_is_read_the_same_way(tmp_path, ctx):
    archive = tmp_path / "proj.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("proj/analysis.ipynb", json.dumps(_notebook()))
        zf.writestr("proj/broken.ipynb", "{not json")
    doc = extract_archive(archive, ctx)
    by_path = {}
    for seg in doc.segments:
        by_path.setdefault(seg.locator.path, []).append(seg.text)
    assert "print(total)" in "".join(by_path["proj/analysis.ipynb"])
    assert "{not json" in "".join(by_path["proj/broken.ipynb"])  # not a notebook: kept as the text it is
    assert doc.meta["languages"]["jupyter"] == 2


@pytest.mark.parametrize("content, error", [(b"", EmptyFile), (b"[1, 2]", CorruptFile), (b"\x89PNG\r\n", CorruptFile)])
def test_bad_notebooks_are_refused_by_name(tmp_path, ctx, content, error):
    path = tmp_path / "bad.ipynb"
    path.write_bytes(content)
    with pytest.raises(error) as info:
        extract_notebook(path, ctx)
    assert "bad.ipynb" in str(info.value)
