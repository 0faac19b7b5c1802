"""MCPTools(url=...): a streamable-HTTP MCP server on loopback, through the same bridge and gating;
and a server that is down makes the call fail readably."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from app.agent.mcp import MCPTools
from app.agent.tools import ToolContext, ToolError
from tests.agentfiles import HERE, ledger_lines
from tests.live import free_port


@pytest.fixture
def http_server(tmp_path):
    port = free_port()
    ledger = tmp_path / "ledger.txt"
    process = subprocess.Popen([sys.executable, str(HERE / "mcp_server.py"), "--http", str(port)],
                               env={"PATH": "/usr/bin:/bin", "MCP_LEDGER": str(ledger)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield url, ledger
    process.terminate()
    process.wait(timeout=10)


def test_a_streamable_http_server_s_tools_are_gated_and_called_once(http_server):
    url, ledger = http_server
    tools = MCPTools(url=url)
    try:
        listed = {t.name: t for t in tools.load()}
        assert {n: (t.requires_confirmation, t.destructive) for n, t in listed.items()} == {
            "list_tables": (False, False), "delete_records": (True, True)}
        assert listed["delete_records"].run(ToolContext(), {"table_name": "users", "count": 3}) == \
            "Deleted 3 records from users (over MCP)"
        assert ledger_lines(ledger) == ["start users 3", "done users 3"]
    finally:
        tools.close()


def test_a_server_that_is_down_fails_the_call_readably():
    tools = MCPTools(url=f"http://127.0.0.1:{free_port()}/mcp")
    try:
        assert tools.load() == ()
        assert tools.last_error.startswith("Could not start the MCP server")
        with pytest.raises(ToolError, match="Could not start the MCP server"):
            tools.call("delete_records", {"table_name": "users", "count": 1})
    finally:
        tools.close()
