"""The MCP bridge's process handling (app/agent/mcp.py): a slow call times out readably, a helper that
dies is replaced on the next need, and closing stops the helper and its stdio server."""
from __future__ import annotations

import os
import signal
import time

import pytest

from app.agent.mcp import MCPTools
from app.agent.tools import ToolError
from tests.agentfiles import HERE, PYTHON, ledger_lines


@pytest.fixture
def ledger(tmp_path):
    return tmp_path / "ledger.txt"


@pytest.fixture
def server(ledger):
    tools = MCPTools(command=PYTHON, args=[str(HERE / "mcp_server.py")], env={"MCP_LEDGER": str(ledger)}, timeout=1)
    yield tools
    tools.close()


def test_a_call_that_takes_too_long_fails_readably_and_is_not_sent_again(server, ledger):
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"did not answer in 1 s; the call was not sent again, but it may have"):
        server.call("delete_records", {"table_name": "slow", "count": 1})
    assert time.monotonic() - started < 8
    assert ledger_lines(ledger) == ["start slow 1"]
    assert server.call("list_tables", {}) == "users, orders", "the server still serves other calls"


def test_a_helper_that_died_is_replaced_on_the_next_need(server):
    server.load()
    first = server._bridge.process
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    deadline = time.monotonic() + 5
    while server._bridge.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.call("list_tables", {}) == "users, orders"
    assert server._bridge.process.pid != first.pid


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def test_closing_stops_the_helper_and_its_server(server):
    server.load()
    helper = server._bridge.process
    [mcp_server] = children(helper.pid)
    server.close()
    assert helper.poll() is not None
    for pid in (helper.pid, mcp_server):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_approval_options_apply_to_the_servers_gated_tools(ledger):
    tools = MCPTools(command=PYTHON, args=[str(HERE / "mcp_server.py")], env={"MCP_LEDGER": str(ledger)},
                     approvers="admin", allow_always=False, approval_timeout=60)
    try:
        by_name = {tool.name: tool for tool in tools.load()}
    finally:
        tools.close()
    gated = by_name["delete_records"]
    assert (gated.requires_confirmation, gated.approvers, gated.allow_always, gated.approval_timeout) == (
        True, "admin", False, 60)
