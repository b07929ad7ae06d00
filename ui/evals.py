"""The Evaluations tab: runs of ``python app.py eval ...`` with their scores and plots."""

from __future__ import annotations

import json

import gradio as gr
from PIL import Image

from quire.api import Quire
from ui.errors import user_errors

HEADERS = ["Run", "Kind", "When", "Runtime", "Model", "Strategy", "Window", "Status", "Score"]


def _score(summary: dict) -> str:
    for key in ("score", "mean_score", "accuracy", "f1", "mean_f1", "metric"):
        if isinstance(summary.get(key), (int, float)):
            return f"{summary[key]:.3f}"
    return ""


def run_rows(quire: Quire) -> list[list]:
    return [
        [r.id, r.kind, r.created_at, r.runtime, r.model, r.strategy, r.window, r.status, _score(r.summary)]
        for r in quire.eval_runs()
    ]


def run_detail(quire: Quire, run_id) -> tuple[Image.Image | None, str]:
    if run_id in (None, ""):
        return None, ""
    run = quire.eval_run(int(run_id)).to_dict()
    image = Image.open(run["plot"]).convert("RGB") if run["plot"] else None
    summary = {k: v for k, v in run["summary"].items() if k != "plots"}
    text = f"Run {run['id']} ({run['kind']}, {run['strategy']}, window {run['window']}) in {run['out_dir'] or 'no folder'}\n\n"
    return image, text + json.dumps(summary, indent=2, default=str)[:20000]


def _picked_run(evt: gr.SelectData):
    return evt.row_value[0] if evt.row_value else None


class EvalsTab:
    def __init__(self, quire: Quire) -> None:
        self.quire = quire

    def build(self) -> gr.Dataframe:
        gr.Markdown(
            "How well does this model read long documents? Run `python app.py eval needle|cuad|leval ...` "
            "(see `python app.py eval --help`); each run is stored here with its plot."
        )
        refresh = gr.Button("Refresh", size="sm")
        table = gr.Dataframe(headers=HEADERS, interactive=False, label="Evaluation runs", wrap=True)
        pick = gr.Number(label="Run to show", precision=0)
        with gr.Row():
            plot = gr.Image(label="Plot", type="pil", interactive=False)
            detail = gr.Code(label="Summary", language="json")
        refresh.click(user_errors(lambda: run_rows(self.quire)), None, table, api_name="eval_runs")
        table.select(_picked_run, None, pick, api_visibility="private")
        pick.change(user_errors(lambda rid: run_detail(self.quire, rid)), pick, [plot, detail], api_name="eval_run")
        self.table = table
        return table

    def rows(self) -> list[list]:
        return run_rows(self.quire)
