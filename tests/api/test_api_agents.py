"""The REST API with agents of one's own: GET /agents and /agents/{id} in the reference's shape (MCP
tools included, with their gating), and the reference's agent file and an MCP server's gated tool
driven through run / continue."""
from __future__ import annotations

import pytest

from tests.agentfiles import ledger_lines, write_mcp_agent, write_reference_agent
from tests.api.apiclient import DELETE_50, documented, paused
from tests.fake_openai import Turn


@pytest.fixture
def ledger(tmp_path):
    return tmp_path / "ledger.txt"


@pytest.fixture
def app_config(app_config, tmp_path, ledger):
    return {**app_config, "BUILTIN_AGENTS": False,
            "AGENTS": [str(write_reference_agent(tmp_path)), str(write_mcp_agent(tmp_path, ledger))]}


def test_agents_are_listed_in_the_reference_shape_with_their_mcp_tools(api):
    response = api.get("/agents")
    assert response.status_code == 200
    agents = {agent["id"]: agent for agent in response.get_json()}
    assert list(agents) == ["data_manager", "mcp_records"]

    reference = agents["data_manager"]
    assert (reference["name"], reference["model"]["model"]) == ("Data Manager", "gpt-5.2")
    assert [(t["name"], t["requires_confirmation"], t["source"]) for t in reference["tools"]["tools"]] == [
        ("delete_records", True, "python"), ("send_notification", True, "python")]

    mcp = api.get("/agents/mcp_records").get_json()
    assert mcp == agents["mcp_records"]
    tools = {t["name"]: t for t in mcp["tools"]["tools"]}
    assert {name: (t["requires_confirmation"], t["destructive"], t["source"]) for name, t in tools.items()} == {
        "list_tables": (False, False, "mcp"), "delete_records": (True, True, "mcp")}
    assert tools["delete_records"]["parameters"]["properties"]["count"]["maximum"] == 10_000, "the server's schema"
    assert mcp["mcp_servers"][0]["error"] is None
    assert api.get("/agents/nobody").status_code == 404


def test_the_reference_agent_over_the_api_paused_approved_rejected(api, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Deleted."))
    run = paused(api)
    [tool] = run["tools"]
    assert (tool["tool_name"], tool["result"], run["agent_name"]) == ("delete_records", None, "Data Manager")
    done = api.continue_(run["run_id"], documented(tool), stream=False).get_json()
    assert done["status"] == "COMPLETED"
    assert done["tools"][0]["result"] == "Deleted 50 records from users"

    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Kept."))
    run = paused(api)
    kept = api.continue_(run["run_id"], documented(run["tools"][0], confirmed=False), stream=False).get_json()
    assert kept["status"] == "COMPLETED" and kept["tools"][0]["result"] is None
    assert kept["tools"][0]["confirmed"] is False


def test_an_mcp_tool_over_the_api_runs_once_when_approved_and_never_when_rejected(api, fake_model, ledger):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Deleted over MCP."))
    run = paused(api, agent="mcp_records")
    assert ledger_lines(ledger) == []
    done = api.continue_(run["run_id"], documented(run["tools"][0]), agent="mcp_records", stream=False).get_json()
    assert done["tools"][0]["result"] == "Deleted 50 records from users (over MCP)"
    assert ledger_lines(ledger) == ["start users 50", "done users 50"]

    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Left alone."))
    run = paused(api, agent="mcp_records")
    api.continue_(run["run_id"], documented(run["tools"][0], confirmed=False), agent="mcp_records", stream=False)
    assert ledger_lines(ledger) == ["start users 50", "done users 50"], "the rejected call never reached the server"
