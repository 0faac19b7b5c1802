"""Agents: a name, instructions for the model, and the tools it may call. `AGENTS` is the registry."""
from __future__ import annotations

from dataclasses import dataclass

from app.agent.tools import Tool

__all__ = ["AGENTS", "Agent", "get_agent"]


@dataclass(frozen=True)
class Agent:
    id: str
    name: str
    instructions: str
    tools: tuple[Tool, ...]
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tools", tuple(self.tools))
        names = [t.name for t in self.tools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"agent {self.id!r} has more than one tool named {', '.join(duplicates)}")

    def tool(self, name: str) -> Tool | None:
        """The tool called `name`, or None (e.g. the model made a name up)."""
        return next((t for t in self.tools if t.name == name), None)


# Imported after Agent exists: the agent modules import it from here.
from app.agents.data_manager import DATA_MANAGER  # noqa: E402

AGENTS: dict[str, Agent] = {agent.id: agent for agent in (DATA_MANAGER,)}


def get_agent(agent_id: str | None) -> Agent | None:
    """The agent with this id, or None."""
    return AGENTS.get(agent_id) if isinstance(agent_id, str) else None
