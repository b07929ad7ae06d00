"""The MCP server (``python app.py mcp``, stdio, the official ``mcp`` SDK): Quire's sessions as tools for an
MCP client (Claude Desktop, an IDE), acting as one user: ``--user NAME``, else the local user. What that user
may not see is not found, exactly as in the UI and the REST API (the checks are Quire's).

Tools: ``list_workspaces``, ``search_passages``, ``ask`` (the answer with its checked citations) and
``read_passage`` (a cited passage by its segment id, as ``search_passages`` and ``ask`` give them).
"""

from __future__ import annotations

import functools
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from core.errors import QuireError
from core.settings import Settings
from quire.api import Quire

PASSAGE_CHARS = 1200  # of each search hit; read_passage gives the whole passage


def build(quire: Quire) -> MCPServer:
    """The tools over ``quire`` (already acting as the one user the server serves)."""
    server = MCPServer("quire", instructions="Ask questions across the user's document sessions (workspaces) and "
                                             "get answers whose every citation is checked against the source.")

    def guarded(fn):
        @functools.wraps(fn)  # the SDK reads the tool's parameters from the signature
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except QuireError as exc:  # the one boundary of this front end: a tool error with the message
                raise ToolError(exc.user_message()) from exc

        return call

    @server.tool()
    @guarded
    def list_workspaces() -> list[dict[str, Any]]:
        """The sessions (workspaces) you may read, with their owner, your role and their size."""
        return [{"name": s.qualified, "owner": s.owner, "role": s.role,
                 "documents": s.documents, "tokens": s.tokens, "questions": s.turns} for s in quire.sessions()]

    @server.tool()
    @guarded
    def search_passages(workspace: str, query: str, limit: int = 10) -> list[dict[str, Any]]:
        """Full-text search of a workspace's passages, best first (segment_id opens one with read_passage)."""
        info = quire.session(workspace, create=False)
        ranked = quire.search(info, query, limit=max(1, min(limit, 50)))
        segments = quire.segments_by_id([sid for sid, _ in ranked])
        return [{"segment_id": sid, "score": round(score, 4), "document": segments[sid].document_name,
                 "where": segments[sid].locator.label(), "text": segments[sid].text[:PASSAGE_CHARS]}
                for sid, score in ranked if sid in segments]

    @server.tool()
    @guarded
    def ask(workspace: str, question: str) -> dict[str, Any]:
        """Ask a question about a workspace's documents: the answer, its citations (each checked against its
        passage: verified / quoted / unverified / missing), and a warning when none is verified."""
        turn = quire.answer(quire.session(workspace, create=False), question).turn
        return {"answer": turn.answer, "warning": turn.warning, "turn_id": turn.id,
                "citations": [{"ref": c.ref, "segment_id": c.segment_id, "document": c.document_name,
                               "where": c.locator.label(), "quote": c.quote, "status": c.status,
                               "status_words": c.status_words} for c in turn.citations]}

    @server.tool()
    @guarded
    def read_passage(segment_id: int) -> dict[str, Any]:
        """A passage in full, by the segment id a citation or a search hit gave."""
        segment = quire.segments_by_id([segment_id]).get(segment_id)
        if segment is None:
            raise ToolError(f"No passage {segment_id} that you may read.")
        return {"segment_id": segment.id, "document": segment.document_name, "where": segment.locator.label(),
                "kind": segment.kind, "text": segment.text}

    return server


def serve_stdio(settings: Settings) -> None:
    with Quire(settings) as root:
        quire = root.as_user(root.whoami())  # one user, with that user's rights only (never the operator's)
        build(quire).run("stdio")
