"""The built-in agents (the Data Manager, and the Ops Desk that shows every kind of pause). Other agents come from the AGENTS setting; the app
factory puts them all in one registry (`app.agent.registry`), which is what the rest of the app reads."""
from __future__ import annotations


def builtin_agents() -> list:
    from app.agents.data_manager import DATA_MANAGER
    from app.agents.ops_desk import OPS_DESK
    return [DATA_MANAGER, OPS_DESK]
