"""The Settings tab: the active settings, read-only, with each one's help text."""

from __future__ import annotations

import gradio as gr

from core.settings import Settings

SECRET_FIELDS = {"api_key", "database_url"}  # a database URL may hold its password


def settings_rows(settings: Settings) -> list[list[str]]:
    rows = []
    for name, value, help_text in settings.describe():
        shown = ("•" * 8 if value else "") if name in SECRET_FIELDS else str(value)
        rows.append([f"--{name.replace('_', '-')}", shown, help_text])
    return rows


def build(settings: Settings, runtime_name: str) -> None:
    gr.Markdown(
        f"Runtime: **{runtime_name}**. These are the settings this server started with; change them with "
        "command-line flags (`python app.py --help`) or `QUIRE_*` environment variables, then restart."
    )
    gr.Dataframe(
        value=settings_rows(settings), headers=["Flag", "Value", "What it does"], interactive=False,
        wrap=True, column_count=3, label="Active settings", column_widths=["20%", "20%", "60%"], max_height=700,
    )
