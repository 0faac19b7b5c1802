"""Agent files as a self-hoster writes them, for tests: the reference's (Agno's) HITL example with
only its imports changed, and one whose tools come from an MCP server (tests/mcp_server.py)."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The reference's agent file; the only change is the import line.
REFERENCE_AGENT = '''\
from app.sdk import Agent, tool, OpenAIResponses


@tool(requires_confirmation=True)
def delete_records(table_name: str, count: int) -> str:
    """Delete records from a database table.

    Args:
        table_name: Name of the table
        count: Number of records to delete

    Returns:
        str: Confirmation message
    """
    return f"Deleted {count} records from {table_name}"


@tool(requires_confirmation=True)
def send_notification(recipient: str, message: str) -> str:
    """Send a notification to a user.

    Args:
        recipient: Email or username of the recipient
        message: Notification message

    Returns:
        str: Confirmation message
    """
    return f"Sent notification to {recipient}: {message}"


agent = Agent(
    name="Data Manager",
    id="data_manager",
    model=OpenAIResponses(id="gpt-5.2"),
    tools=[delete_records, send_notification],
    instructions=["You help users manage data operations"],
    markdown=True,
)
'''

MCP_AGENT = '''\
import sys

from app.sdk import Agent, MCPTools

agent = Agent(
    name="Records over MCP",
    id="mcp_records",
    description="Deletes records through an MCP server.",
    tools=[MCPTools(command=sys.executable, args=[{server!r}], env={{"MCP_LEDGER": {ledger!r}}}{options})],
    instructions=["You manage records through the MCP server's tools."],
)
'''


def write_reference_agent(folder: Path) -> Path:
    path = folder / "hitl_confirmation.py"
    path.write_text(REFERENCE_AGENT)
    return path


def write_mcp_agent(folder: Path, ledger: Path, options: str = "") -> Path:
    path = folder / "mcp_agent.py"
    path.write_text(MCP_AGENT.format(server=str(HERE / "mcp_server.py"), ledger=str(ledger),
                                     options=f", {options}" if options else ""))
    return path


def ledger_lines(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


PYTHON = sys.executable
