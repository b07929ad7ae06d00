"""PNG plots of evaluation results (matplotlib, headless Agg backend, imported only when drawing)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def heatmap(
    path: Path,
    scores: Sequence[Sequence[float | None]],
    depths: Sequence[float],
    lengths: Sequence[int],
    *,
    title: str,
) -> Path:
    """The classic needle-in-a-haystack layout: depth (rows, 0% at top) by context length (columns),
    red (0) through yellow to green (1); cells not measured stay grey."""
    from matplotlib.colors import LinearSegmentedColormap
    import numpy as np

    plt = _pyplot()
    data = np.array([[np.nan if v is None else v for v in row] for row in scores], dtype=float)
    cmap = LinearSegmentedColormap.from_list("needle", ["#F0496E", "#EBB839", "#0CD79F"]).with_extremes(bad="#DDDDDD")
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(lengths) + 2.5), max(3.0, 0.5 * len(depths) + 1.8)))
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(lengths)), [_k(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:g}%" for d in depths])
    ax.set_xlabel("Context length (tokens)")
    ax.set_ylabel("Needle depth")
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="black")
    fig.colorbar(im, ax=ax, label="Score")
    return _save(plt, fig, ax, title, path)


def bars(path: Path, labels: Sequence[str], values: Sequence[float | None], *, title: str, xlabel: str) -> Path:
    """Horizontal bars, one per row of a table (e.g. F1 per clause category)."""
    plt = _pyplot()
    vals = [0.0 if v is None else float(v) for v in values]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.35 * len(labels) + 1.2)))
    ax.barh(range(len(labels)), vals, color="#3B82F6")
    ax.set_yticks(range(len(labels)), [str(label)[:40] for label in labels])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    for i, v in enumerate(vals):
        ax.text(min(v + 0.01, 0.92), i, f"{v:.2f}", va="center", fontsize=8)
    return _save(plt, fig, ax, title, path)


def _save(plt, fig, ax, title: str, path: Path) -> Path:
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _k(n: int) -> str:
    return f"{n / 1024:g}K" if n % 1024 == 0 else (f"{n / 1000:g}k" if n % 1000 == 0 else str(n))
