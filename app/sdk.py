"""Everything an agent author imports. An agent file written for the reference (Agno) runs here with
its imports replaced by::

    from app.sdk import Agent, MCPTools, OpenAIChat, OpenAIResponses, tool

- `Agent(name=..., id=..., model=..., tools=[...], instructions=[...], description=..., markdown=True)`
  (app.agent.definition.Agent). `model` is optional: without it the agent uses the app's OPENAI_* model.
- `@tool` / `@tool(requires_confirmation=True, name=..., description=..., preview=..., editable=...,
  requires_user_input=..., user_input_fields=[...], external_execution=...)`
  (app.agent.tools.tool): arguments from type hints (pydantic: `Annotated[int, Field(ge=1)]`,
  `Literal[...]`, enums) and the Google-style docstring (`Args:`), validated before a card is shown.
  A parameter `run_context: RunContext` receives the account, session and run ids and is not shown
  to the model. Raise (e.g. `ToolError("why")`) to report a failure; return text or JSON-able data.
  Approval options: `requires_confirmation` may be a rule `(arguments, run_context) -> bool`;
  `approvers="admin"`, `allow_always=False`, `approval_timeout=<seconds>` (app.agent.rules).
- `OpenAIResponses(id=...)`, `OpenAIChat(id=...)`: which API and model id; the key and server come
  from OPENAI_API_KEY / OPENAI_BASE_URL.
- `MCPTools(command=..., args=[...], env={...})` or `MCPTools(url=...)`, with `include_tools`,
  `exclude_tools`, `requires_confirmation_tools` (app.agent.mcp.MCPTools): an MCP server's tools, each
  needing confirmation unless the server marks it read-only.

Arguments of the reference that this app does not support stop start-up with one line naming the file,
the line and the argument.
"""
from pydantic import Field

from app.agent.definition import Agent, OpenAIChat, OpenAIResponses
from app.agent.mcp import MCPTools
from app.agent.tools import RunContext, ToolError, tool

__all__ = ["Agent", "Field", "MCPTools", "OpenAIChat", "OpenAIResponses", "RunContext", "ToolError", "tool"]
