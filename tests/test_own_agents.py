"""Bring your own agents: the reference's agent file (imports changed only) and an MCP server's tools,
loaded through AGENTS and gated like the built-in tools, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest

from tests.agentfiles import ledger_lines, write_mcp_agent, write_reference_agent
from tests.fake_openai import ToolCall, Turn

DELETE_50 = ToolCall("delete_records", {"table_name": "users", "count": 50})


@pytest.fixture
def ledger(tmp_path):
    return tmp_path / "mcp-ledger.txt"


@pytest.fixture
def app_config(app_config, tmp_path, ledger):
    """The reference's Data Manager replaces the built-in one; an MCP agent sits beside it."""
    folder = tmp_path / "agents"
    folder.mkdir()
    return {**app_config, "BUILTIN_AGENTS": False, "MCP_TIMEOUT": 20.0,
            "AGENTS": [str(write_reference_agent(folder)), str(write_mcp_agent(folder, ledger))]}


# -- the reference's agent file --------------------------------------------------------------------------

def test_the_reference_agents_gated_tool_pauses_then_runs_once_when_approved(harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Done: 50 deleted."))
    owner, chat = harness.chat()
    run_id = harness.send(chat, "Delete 50 old records from the users table")
    [call] = harness.calls(harness.wait(run_id).id)
    assert (harness.run(run_id).status, call.status, call.result) == ("paused", "pending", None), "nothing ran"

    harness.decide(owner, run_id, call.id, approve=True)
    assert harness.wait(run_id).status == "completed"
    [call] = harness.calls(run_id)
    assert (call.status, call.result) == ("done", "Deleted 50 records from users")
    outputs = [o for r in fake_model.requests for o in r.tool_outputs()]
    assert outputs == [(call.call_id, "Deleted 50 records from users")], "ran once, read once"


def test_the_reference_agents_rejected_tool_never_runs(harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Fine, I left them."))
    owner, chat = harness.chat()
    run_id = harness.send(chat, "Delete 50 old records from the users table")
    [call] = harness.calls(harness.wait(run_id, "paused").id)
    harness.decide(owner, run_id, call.id, approve=False, reason="keep them")
    assert harness.wait(run_id).status == "completed"
    [call] = harness.calls(run_id)
    assert (call.status, call.result) == ("rejected", None)
    assert fake_model.requests[-1].tool_outputs() == [(call.call_id, "Rejected by the user: keep them")]


def test_the_reference_agents_instructions_and_schema_reach_the_model(harness, fake_model):
    fake_model.script(Turn(text="Hello."))
    _, chat = harness.chat()
    harness.wait(harness.send(chat, "hi"))
    body = fake_model.requests[-1].body
    assert body["model"] == "gpt-5.2", "the agent's model id"
    assert body["instructions"].startswith("You help users manage data operations")
    assert "Use markdown to format your answers." in body["instructions"]
    [delete] = [t for t in body["tools"] if t["name"] == "delete_records"]
    assert delete["description"] == "Delete records from a database table."
    assert delete["parameters"]["properties"]["count"] == {"description": "Number of records to delete",
                                                           "type": "integer"}


# -- MCP tools --------------------------------------------------------------------------------------------

def mcp_chat(harness):
    return harness.chat(agent_id="mcp_records")


def test_a_destructive_mcp_tool_pauses_and_runs_once_on_the_server_when_approved(harness, fake_model, ledger):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Deleted over MCP."))
    owner, chat = mcp_chat(harness)
    run_id = harness.send(chat, "delete 50 users")
    [call] = harness.calls(harness.wait(run_id).id)
    assert (harness.run(run_id).status, call.status) == ("paused", "pending")
    assert call.preview == "The server marks this tool as destructive."
    assert ledger_lines(ledger) == [], "nothing ran while paused"

    harness.decide(owner, run_id, call.id, approve=True)
    assert harness.wait(run_id).status == "completed"
    [call] = harness.calls(run_id)
    assert (call.status, call.result) == ("done", "Deleted 50 records from users (over MCP)")
    assert ledger_lines(ledger) == ["start users 50", "done users 50"], "ran exactly once"


def test_a_rejected_mcp_tool_never_reaches_the_server(harness, fake_model, ledger):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Left alone."))
    owner, chat = mcp_chat(harness)
    run_id = harness.send(chat, "delete 50 users")
    [call] = harness.calls(harness.wait(run_id, "paused").id)
    harness.decide(owner, run_id, call.id, approve=False)
    assert harness.wait(run_id).status == "completed"
    assert harness.calls(run_id)[0].status == "rejected"
    assert ledger_lines(ledger) == []


def test_a_read_only_mcp_tool_runs_without_a_card(harness, fake_model):
    fake_model.script(Turn(tool_calls=[ToolCall("list_tables", {})]), Turn(text="Two tables."))
    _, chat = mcp_chat(harness)
    run_id = harness.send(chat, "which tables?")
    assert harness.wait(run_id).status == "completed"
    [call] = harness.calls(run_id)
    assert (call.status, call.decided_by, call.result) == ("done", "auto", "users, orders")


def test_arguments_outside_the_servers_schema_fail_before_a_card(harness, fake_model, ledger):
    fake_model.script(Turn(tool_calls=[ToolCall("delete_records", {"table_name": "users", "count": 10**12})]),
                      Turn(text="Too many."))
    _, chat = mcp_chat(harness)
    run_id = harness.send(chat, "delete everything")
    assert harness.wait(run_id).status == "completed", "never paused"
    [call] = harness.calls(run_id)
    assert call.status == "failed" and "count: 1000000000000 is greater than the maximum of 10000" in call.error
    assert ledger_lines(ledger) == []


def test_a_server_crashing_mid_call_fails_the_call_readably_and_the_run_goes_on(harness, fake_model, ledger):
    fake_model.script(Turn(tool_calls=[ToolCall("delete_records", {"table_name": "crash", "count": 1})]),
                      Turn(text="The server fell over."),
                      Turn(tool_calls=[DELETE_50]), Turn(text="Worked after the restart."))
    owner, chat = mcp_chat(harness)
    run_id = harness.send(chat, "crash it")
    [call] = harness.calls(harness.wait(run_id, "paused").id)
    harness.decide(owner, run_id, call.id, approve=True)
    assert harness.wait(run_id, timeout=30).status == "completed", "the run goes on"
    [call] = harness.calls(run_id)
    assert call.status == "failed"
    assert "stopped during the call" in call.error and "not run again" in call.error
    assert fake_model.requests[-1].tool_outputs() == [(call.call_id, f"Error: {call.error}")]
    assert ledger_lines(ledger) == ["start crash 1"]

    # The next need starts the server again.
    run_id = harness.send(chat, "now delete 50 users")
    [call] = harness.calls(harness.wait(run_id, "paused").id)
    harness.decide(owner, run_id, call.id, approve=True)
    assert harness.wait(run_id, timeout=30).status == "completed"
    assert harness.calls(run_id)[0].status == "done", harness.calls(run_id)[0].error
    assert ledger_lines(ledger) == ["start crash 1", "start users 50", "done users 50"]
