"""An agent whose tools come from a small bundled stdio MCP server (notes_server.py, official `mcp`
SDK): `list_notes` is annotated read-only and runs at once; `delete_note` is annotated destructive and
stops for approval.

    AGENTS=examples.mcp_notes.agent scripts/run
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from app.sdk import Agent, MCPTools

HERE = Path(__file__).resolve().parent

agent = Agent(
    name="Notes (MCP)",
    id="mcp_notes",
    description="Lists and deletes notes through a bundled MCP server; deleting asks first.",
    tools=[MCPTools(command=sys.executable, args=[str(HERE / "notes_server.py")],
                    env={"NOTES_FILE": os.environ.get("NOTES_FILE") or str(Path("instance") / "notes.json")})],
    instructions=["You help the user manage their notes with the notes server's tools."],
    markdown=True,
)
