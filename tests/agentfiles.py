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
