"""A stdio MCP server for tests (official SDK), with a ledger of what it really executed.

Tools: `list_tables` (read-only), `delete_records` (destructive; its `count` is 1..10,000 in the
server's input schema). Every execution of delete_records appends "start <table> <count>" to the
file MCP_LEDGER before it acts and "done ..." after, so a test can count real executions. Table
"crash" kills the server mid-call; table "slow" sleeps for a minute first. `--http PORT` serves
streamable HTTP on loopback instead of stdio.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from pydantic import Field

server = MCPServer("test-records", log_level="WARNING")
LEDGER = os.environ.get("MCP_LEDGER")


def _note(line: str) -> None:
    if LEDGER:
        with open(LEDGER, "a") as f:
            f.write(line + "\n")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def list_tables() -> str:
    """List the tables."""
    return "users, orders"


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
def delete_records(table_name: str, count: Annotated[int, Field(ge=1, le=10_000)]) -> str:
    """Delete records from a database table.

    Args:
        table_name: Name of the table
        count: Number of records to delete
    """
    _note(f"start {table_name} {count}")
    if table_name == "crash":
        sys.stdout.flush()
        os._exit(1)
    if table_name == "slow":
        time.sleep(60)
    _note(f"done {table_name} {count}")
    return f"Deleted {count} records from {table_name} (over MCP)"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--http":  # streamable HTTP on 127.0.0.1:<port>/mcp
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
