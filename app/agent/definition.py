"""What an agent is: a name and id, instructions, its tools (local functions and MCP servers) and,
optionally, which model it talks to. Agent authors import these through `app.sdk`.

The constructors take the reference's (Agno's) argument names. An argument of the reference that
this app does not support raises `DefinitionError` naming the file and line of the call, so a copied
agent file never runs with a setting silently dropped.

This module knows nothing of Flask, HTTP or HTML.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from app.agent.tools import DefinitionError, Tool, caller_location, tool

if TYPE_CHECKING:
    from app.agent.mcp import MCPTools

__all__ = ["Agent", "ModelSpec", "OpenAIChat", "OpenAIResponses"]

MARKDOWN_NOTE = "<additional_information>\n- Use markdown to format your answers.\n</additional_information>"


def _refuse(kind: str, unsupported: dict[str, Any], depth: int = 3) -> None:
    if unsupported:
        option = next(iter(unsupported))
        raise DefinitionError(f"{caller_location(depth)}: {kind}({option}=...) is not supported here; "
                              f"remove it (see README, \"Write your own agent\").")


class ModelSpec:
    """Which model an agent asks for; the key and server come from the app's OPENAI_* settings."""
    api = "responses"

    def __init__(self, id: str | None = None, **unsupported: Any):  # noqa: A002 - the reference's name
        _refuse(type(self).__name__, unsupported)
        self.id = id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"


class OpenAIResponses(ModelSpec):
    """The OpenAI Responses API (`/responses`)."""
    api = "responses"


class OpenAIChat(ModelSpec):
    """Chat Completions (`/chat/completions`): OpenAI, or a compatible server (Ollama, vLLM...)."""
    api = "chat"


class Agent:
    """An agent: `Agent(name=..., id=..., model=..., tools=[...], instructions=[...], markdown=True)`.

    - `id` defaults to the name in snake case; it names the agent in URLs and the API.
    - `tools`: functions decorated with `@tool` (plain functions become ungated tools) and `MCPTools`.
    - `instructions`: a string or a list of strings (one per line).
    - `model`: `OpenAIResponses(id=...)` or `OpenAIChat(id=...)`; None uses the app's model.
    """

    def __init__(self, *, name: str | None = None, id: str | None = None,  # noqa: A002
                 model: ModelSpec | None = None, tools: Iterable[Any] = (),
                 instructions: str | list[str] | None = None, description: str | None = None,
                 markdown: bool = False, **unsupported: Any):
        _refuse("Agent", unsupported)
        where = caller_location(2)
        if not name and not id:
            raise DefinitionError(f"{where}: Agent needs a name (or an id).")
        self.name = name or id
        self.id = id or re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", self.id):
            raise DefinitionError(f"{where}: Agent id {self.id!r} must be 1-80 letters, digits, '_', '-' or '.'.")
        if model is not None and not isinstance(model, ModelSpec):
            raise DefinitionError(f"{where}: Agent(model=...) must be OpenAIResponses(...) or OpenAIChat(...), "
                                  f"got {type(model).__name__}.")
        self.model = model
        self.description = description or ""
        self.markdown = markdown
        lines = [instructions] if isinstance(instructions, str) else list(instructions or [])
        text = "\n".join(str(line) for line in lines)
        self.instructions = f"{text}\n\n{MARKDOWN_NOTE}" if markdown else text
        self.location = where
        self.demo: Callable | None = None  # an offline script (DemoModel) for when no model key is set
        self.suggestions: tuple[str, ...] = ()  # example messages a new chat offers

        from app.agent.mcp import MCPTools
        self.local_tools: tuple[Tool, ...] = ()
        self.mcp: tuple[MCPTools, ...] = ()
        local, servers = [], []
        for item in tools or ():
            if isinstance(item, Tool):
                local.append(item)
            elif isinstance(item, MCPTools):
                servers.append(item)
            elif callable(item):
                local.append(tool(item))
            else:
                raise DefinitionError(f"{where}: Agent(tools=[...]) takes @tool functions and MCPTools, "
                                      f"got {type(item).__name__}.")
        names = [t.name for t in local]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DefinitionError(f"{where}: agent {self.id!r} has more than one tool named {', '.join(duplicates)}.")
        self.local_tools, self.mcp = tuple(local), tuple(servers)

    @property
    def tools(self) -> tuple[Tool, ...]:
        """Every tool known now: the local ones, then each MCP server's that has been listed. Never
        blocks (safe inside a transaction); `load_tools()` starts the servers."""
        found = list(self.local_tools)
        taken = {t.name for t in found}
        for server in self.mcp:
            for t in server.listed():
                if t.name not in taken:
                    found.append(t)
                    taken.add(t.name)
        return tuple(found)

    def load_tools(self) -> tuple[Tool, ...]:
        """Every tool, starting MCP servers and listing their tools where not done yet. Blocks while a
        server starts: call it with no database transaction open (a model turn does, before its request)."""
        for server in self.mcp:
            server.load()
        return self.tools

    def warm_tools(self) -> None:
        """Have the MCP servers list their tools in the background (pages that show the tools)."""
        for server in self.mcp:
            server.warm()

    def tool(self, name: str) -> Tool | None:
        """The tool called `name`, or None (e.g. the model made a name up)."""
        local = next((t for t in self.local_tools if t.name == name), None)
        return local or next((t for t in self.tools if t.name == name), None)

    def __repr__(self) -> str:
        return f"Agent(id={self.id!r}, name={self.name!r})"
