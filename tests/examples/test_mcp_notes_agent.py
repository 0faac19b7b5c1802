"""examples/mcp_notes: the bundled stdio MCP server's read-only tool runs at once, its destructive one
asks first; both work through the MCP bridge."""
from __future__ import annotations

import json

import pytest

from app.agent.mcp import MCPTools
from app.agent.tools import ToolArgumentError, ToolContext, ToolError
from examples.mcp_notes.agent import HERE
from tests.agentfiles import PYTHON


@pytest.fixture
def notes(tmp_path):
    path = tmp_path / "notes.json"
    server = MCPTools(command=PYTHON, args=[str(HERE / "notes_server.py")], env={"NOTES_FILE": str(path)})
    yield server, path
    server.close()


def test_the_read_only_tool_runs_at_once_and_the_destructive_one_asks_first(notes):
    server, path = notes
    tools = {t.name: t for t in server.load()}
    assert {name: (t.requires_confirmation, t.destructive, t.source) for name, t in tools.items()} == {
        "list_notes": (False, False, "mcp"), "delete_note": (True, True, "mcp")}
    assert tools["delete_note"].preview(ToolContext(), {"title": "x"}) == \
        "The server marks this tool as destructive."

    assert tools["list_notes"].run(ToolContext(), {}).splitlines()[0] == "groceries: Milk, eggs, bread"
    assert tools["delete_note"].run(ToolContext(), {"title": "ideas"}) == "Deleted the note 'ideas'; 2 left."
    assert sorted(json.loads(path.read_text())) == ["groceries", "standup"]
    with pytest.raises(ToolError, match="There is no note called 'ideas'"):
        tools["delete_note"].run(ToolContext(), {"title": "ideas"})
    with pytest.raises(ToolArgumentError, match="title: expected a string"):
        tools["delete_note"].validate({"title": 3})


def test_include_exclude_and_forced_confirmation(tmp_path):
    args = dict(command=PYTHON, args=[str(HERE / "notes_server.py")], env={"NOTES_FILE": str(tmp_path / "n.json")})
    only_list = MCPTools(**args, include_tools=["list_notes"], requires_confirmation_tools=["list_notes"])
    no_delete = MCPTools(**args, exclude_tools=["delete_note"])
    try:
        [listed] = only_list.load()
        assert (listed.name, listed.requires_confirmation) == ("list_notes", True)
        assert [t.name for t in no_delete.load()] == ["list_notes"]
    finally:
        only_list.close()
        no_delete.close()


def test_a_server_that_cannot_start_gives_no_tools_and_says_why(tmp_path):
    broken = MCPTools(command=PYTHON, args=[str(tmp_path / "missing_server.py")])
    try:
        assert broken.load() == ()
        assert broken.last_error.startswith("Could not start the MCP server")
        with pytest.raises(ToolError, match="Could not start the MCP server"):
            broken.call("anything", {})
    finally:
        broken.close()
