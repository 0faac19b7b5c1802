"""An MCP server's tools on real gunicorn servers (gevent workers): the helper-process bridge answers
without blocking the worker, and a worker killed mid-call leaves the call `outcome_unknown`, never a
second call on the server."""
from __future__ import annotations

import time

import pytest

from tests.agentfiles import ledger_lines, write_mcp_agent
from tests.conftest import wait_for
from tests.fake_openai import ToolCall, Turn
from tests.live import Client, LiveServer
from tests.test_faults import FAST_RECOVERY, kill_the_worker_running


@pytest.fixture
def ledger(tmp_path):
    return tmp_path / "mcp-ledger.txt"


@pytest.fixture
def agent_file(tmp_path, ledger):
    folder = tmp_path / "agents"
    folder.mkdir()
    return write_mcp_agent(folder, ledger)


@pytest.fixture
def app_config(app_config, agent_file):
    return {**app_config, "AGENTS": [str(agent_file)]}


@pytest.fixture
def server(app, server_env, agent_file, tmp_path):
    env = {**server_env, **FAST_RECOVERY, "AGENTS": str(agent_file), "MCP_TIMEOUT": "120"}
    server = LiveServer(env, log_path=tmp_path / "gunicorn.log").start()
    yield server
    server.stop()


def mcp_chat(client: Client) -> str:
    response = client.http.post(client.base + "/chats", data={"csrf_token": client._token(), "agent_id": "mcp_records"},
                                allow_redirects=False, timeout=10)
    assert response.status_code == 303, response.text
    return response.headers["Location"].rsplit("/", 1)[-1]


def test_an_approved_mcp_call_runs_once_in_a_gevent_worker(server, harness, fake_model, ledger):
    fake_model.script(Turn(tool_calls=[ToolCall("delete_records", {"table_name": "users", "count": 5})]),
                      Turn(text="Deleted five."))
    client = Client(server.url)
    chat = mcp_chat(client)
    harness.wait(client.send(chat, "delete 5 users"), "paused", timeout=30)
    run_id, call_id = client.pending_call(chat)
    page = client.get(f"/chats/{chat}").text
    assert "Records over MCP" in page and "The server marks this tool as destructive." in page
    assert ledger_lines(ledger) == []

    assert client.post(f"/runs/{run_id}/calls/{call_id}/approve").status_code == 200
    assert harness.wait(run_id, "completed", "failed", timeout=30).status == "completed"
    assert harness.calls(run_id)[0].result == "Deleted 5 records from users (over MCP)"
    assert ledger_lines(ledger) == ["start users 5", "done users 5"]


def test_a_worker_killed_mid_mcp_call_leaves_outcome_unknown_and_never_calls_again(server, harness, fake_model,
                                                                                  ledger):
    fake_model.script(Turn(tool_calls=[ToolCall("delete_records", {"table_name": "slow", "count": 1})]),
                      Turn(text="This must not be reached."))
    client = Client(server.url)
    chat = mcp_chat(client)
    harness.wait(client.send(chat, "delete slowly"), "paused", timeout=30)
    run_id, call_id = client.pending_call(chat)

    assert client.post(f"/runs/{run_id}/calls/{call_id}/approve").status_code == 200
    wait_for(lambda: ledger_lines(ledger) == ["start slow 1"], timeout=30, message="the server to start the call")
    assert harness.calls(run_id)[0].status == "executing", "committed before the call went out"
    kill_the_worker_running(harness, run_id)

    assert harness.wait(run_id, "failed", timeout=20).error.startswith("Interrupted")
    time.sleep(2)  # several recovery sweeps later…
    [call] = harness.calls(run_id)
    assert call.status == "outcome_unknown"
    assert ledger_lines(ledger) == ["start slow 1"], "never sent again"
    page = " ".join(client.get(f"/chats/{chat}").text.split())
    assert "It was not run again" in page and "This must not be reached." not in page
