"""Agent files as a self-hoster writes them, for tests: the reference's (Agno's) HITL example with
only its imports changed, and one whose tools come from an MCP server (tests/mcp_server.py)."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The reference's documented example, which the benchmark runs as is (bench/reference/).
REFERENCE_EXAMPLE = HERE.parent / "bench" / "reference" / "hitl_confirmation.py"


def _reference_agent() -> str:
    """The reference's agent file as a self-hoster brings it here: its tools and agent unchanged, only
    the import line changed, and without the lines that set up its own database and server."""
    example = REFERENCE_EXAMPLE.read_text()
    tools_and_agent = example[example.index("@tool("):example.index("agent_os = AgentOS(")]
    return ("from app.sdk import Agent, tool, OpenAIResponses\n\n\n"
            + tools_and_agent.replace("    db=db,\n", "").rstrip() + "\n")


REFERENCE_AGENT = _reference_agent()

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


# The approval options of issue 12 (items 4-6) as an agent file states them; every tool that runs
# appends a line to the ledger file, so a test sees exactly what ran.
RULES_AGENT = '''\
from app.sdk import Agent, tool

LEDGER = {ledger!r}


def _record(line):
    with open(LEDGER, "a") as ledger:
        ledger.write(line + "\\n")


def more_than_100(arguments, run_context):
    return arguments["count"] > 100


def broken_rule(arguments, run_context):
    raise RuntimeError("this rule has a bug")


@tool(requires_confirmation=more_than_100)
def purge_events(count: int) -> str:
    """Purge the oldest events (asks only for more than 100).

    Args:
        count: How many events.
    """
    _record(f"purge_events {{count}}")
    return f"Purged {{count}} events."


@tool(requires_confirmation=broken_rule)
def compact_table(table_name: str) -> str:
    """Compact a table (its rule raises: the call must ask).

    Args:
        table_name: Which table.
    """
    _record(f"compact_table {{table_name}}")
    return f"Compacted {{table_name}}."


@tool(requires_confirmation=True)
def archive_table(table_name: str) -> str:
    """Archive a table (asks; may be allowed always).

    Args:
        table_name: Which table.
    """
    _record(f"archive_table {{table_name}}")
    return f"Archived {{table_name}}."


@tool(requires_confirmation=True, approvers="admin")
def reset_password(email: str) -> str:
    """Reset someone's password (only an admin may approve).

    Args:
        email: Whose.
    """
    _record(f"reset_password {{email}}")
    return f"Reset the password of {{email}}."


@tool(requires_confirmation=True, approval_timeout={timeout})
def export_table(table_name: str) -> str:
    """Export a table (its approval expires after a few seconds).

    Args:
        table_name: Which table.
    """
    _record(f"export_table {{table_name}}")
    return f"Exported {{table_name}}."


agent = Agent(
    name="Rules",
    id="rules",
    description="Tools with approval rules.",
    tools=[purge_events, compact_table, archive_table, reset_password, export_table],
    instructions=["You maintain tables."],
)
'''


def write_rules_agent(folder: Path, ledger: Path, timeout: float = 2) -> Path:
    path = folder / "rules_agent.py"
    path.write_text(RULES_AGENT.format(ledger=str(ledger), timeout=timeout))
    return path
