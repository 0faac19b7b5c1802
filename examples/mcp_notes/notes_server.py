"""A small stdio MCP server (official `mcp` SDK): notes kept in one JSON file.

Two tools: `list_notes` (annotated read-only, so the app runs it without asking) and `delete_note`
(annotated destructive, so the app shows a confirmation card first). The file is NOTES_FILE
(default: notes.json next to this script), created with three sample notes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

NOTES = Path(os.environ.get("NOTES_FILE") or Path(__file__).with_name("notes.json"))
SAMPLE = {"groceries": "Milk, eggs, bread", "standup": "Demo the approval cards", "ideas": "An MCP notes agent"}

server = MCPServer("notes")


def _load() -> dict[str, str]:
    if not NOTES.exists():
        NOTES.write_text(json.dumps(SAMPLE, indent=2))
    return json.loads(NOTES.read_text())


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def list_notes() -> str:
    """List the notes: one line each, title and text."""
    return "\n".join(f"{title}: {text}" for title, text in sorted(_load().items())) or "There are no notes."


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
def delete_note(title: str) -> str:
    """Delete one note for good.

    Args:
        title: The note's title, as list_notes shows it.
    """
    notes = _load()
    if title not in notes:
        raise ToolError(f"There is no note called {title!r}.")  # its message reaches the app
    del notes[title]
    NOTES.write_text(json.dumps(notes, indent=2))
    return f"Deleted the note {title!r}; {len(notes)} left."


if __name__ == "__main__":
    server.run("stdio")
