"""The built-in agents (the Data Manager). Other agents come from the AGENTS setting; the app
factory puts them all in one registry (`app.agent.registry`), which is what the rest of the app reads."""
from __future__ import annotations


def builtin_agents() -> list:
    from app.agents.data_manager import DATA_MANAGER
    return [DATA_MANAGER]
