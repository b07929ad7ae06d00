"""The MCP server as a real subprocess (`app.py mcp`), driven by the official MCP SDK's stdio client."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from core.settings import Settings
from quire.api import Quire
from tests.servers import ROOT, SMALL_MODEL
from tests.test_accounts import PASSWORD, seed

FACT = "The pallet count for order 7781 is nineteen."


@pytest.fixture
def team(tmp_path):
    home = tmp_path / "home"
    with Quire(Settings(home=home)) as root:
        root.add_user("alice", password=PASSWORD)
        root.add_user("bob", password=PASSWORD)
        seed(root.as_user("alice"), "deals", "Shipping note\n\n" + FACT + "\n")
    return home


def _tools(home, user: str, calls: list[tuple[str, dict]]) -> list:
    async def run():
        params = StdioServerParameters(command=sys.executable, args=["app.py", "mcp", "--user", user, *SMALL_MODEL],
                                       cwd=str(ROOT), env={**os.environ, "QUIRE_HOME": str(home)})
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            listed = {t.name for t in (await session.list_tools()).tools}
            assert {"list_workspaces", "search_passages", "ask", "read_passage"} <= listed
            return [await session.call_tool(name, arguments) for name, arguments in calls]

    return asyncio.run(asyncio.wait_for(run(), 600))


def _data(result):
    assert not result.is_error, result.content
    if result.structured_content is not None:
        content = result.structured_content
        return content.get("result", content)
    return json.loads(result.content[0].text)


def test_mcp_acts_as_one_user_with_that_users_rights(team):
    alice = _tools(team, "alice", [("list_workspaces", {}), ("search_passages", {"workspace": "deals",
                                                                               "query": "pallet count"}),
                                   ("ask", {"workspace": "deals", "question": "How many pallets are in order 7781?"})])
    [workspace] = _data(alice[0])
    assert (workspace["name"], workspace["role"]) == ("deals", "owner")
    [hit] = _data(alice[1])
    assert FACT in hit["text"]
    answered = _data(alice[2])
    assert answered["turn_id"] and "citations" in answered and answered["answer"]
    bob = _tools(team, "bob", [("list_workspaces", {}), ("search_passages", {"workspace": "alice/deals",
                                                                            "query": "pallet"}),
                               ("ask", {"workspace": "deals", "question": "How many pallets?"}),
                               ("read_passage", {"segment_id": hit["segment_id"]})])
    assert _data(bob[0]) == []
    for refused in bob[1:]:
        assert refused.is_error and FACT not in json.dumps([c.model_dump() for c in refused.content])
    assert "No session named" in refused_text(bob[1]) and "No passage" in refused_text(bob[3])


def refused_text(result) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)
