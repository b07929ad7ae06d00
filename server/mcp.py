"""The MCP server (``python app.py mcp``): Quire's tools over stdio for an MCP client, acting as one user
(``--user``; none: the local user)."""

from __future__ import annotations

from core.settings import Settings


def serve_stdio(settings: Settings) -> None:
    raise NotImplementedError
