"""The agents this app serves: the built-in ones plus every `Agent` defined at module level in the
files and modules named by `AGENTS`. Built once per process by the app factory
(`app.extensions["agents"]`); the core is handed the registry, it never imports agent modules.

Anything wrong in an agent module stops start-up with one line naming the file and line
(`AgentLoadError`), never a traceback.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

from app.agent.definition import Agent
from app.agent.tools import DefinitionError

__all__ = ["AgentLoadError", "AgentRegistry", "load_agents"]


class AgentLoadError(Exception):
    """An agent module could not be loaded; `str(e)` is one line naming the file and line."""


class AgentRegistry:
    def __init__(self, agents: Iterable[Agent]):
        self._agents: dict[str, Agent] = {}
        for agent in agents:
            other = self._agents.get(agent.id)
            if other is not None and other is not agent:
                raise AgentLoadError(f"{agent.location}: agent id {agent.id!r} is already used by the agent "
                                     f"defined at {other.location}; give one of them another id=.")
            self._agents[agent.id] = agent

    def get(self, agent_id: str | None) -> Agent | None:
        return self._agents.get(agent_id) if isinstance(agent_id, str) else None

    def all(self) -> list[Agent]:
        return list(self._agents.values())

    def default(self) -> Agent:
        """The agent a new chat uses when none is chosen: the first one."""
        return next(iter(self._agents.values()))

    def __contains__(self, agent_id: str) -> bool:
        return agent_id in self._agents

    def __len__(self) -> int:
        return len(self._agents)

    def close(self) -> None:
        """Stop the MCP servers the agents started in this process."""
        for agent in self._agents.values():
            for server in agent.mcp:
                server.close()


def load_agents(entries: Iterable[str], builtin: Iterable[Agent] = ()) -> AgentRegistry:
    """The built-in agents, then those of each entry (a `.py` file, or a dotted module name)."""
    agents = list(builtin)
    for entry in entries:
        found = [value for value in vars(_import(entry)).values() if isinstance(value, Agent)]
        if not found:
            raise AgentLoadError(f"{entry}: defines no Agent at module level (agent = Agent(...)).")
        agents.extend(found)
    if not agents:
        raise AgentLoadError("no agents: set AGENTS, or leave BUILTIN_AGENTS on.")
    return AgentRegistry(agents)


def _import(entry: str):
    path = Path(entry)
    is_file = entry.endswith(".py") or "/" in entry or path.is_file()
    try:
        if is_file:
            path = path.resolve()
            if not path.is_file():
                raise AgentLoadError(f"{entry}: no such file.")
            # A unique module name per file, so two files called agent.py don't replace each other.
            name = f"agents_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(entry)
    except (AgentLoadError, DefinitionError) as exc:
        raise AgentLoadError(str(exc)) from None
    except SyntaxError as exc:
        raise AgentLoadError(f"{exc.filename}:{exc.lineno}: SyntaxError: {exc.msg}") from None
    except ModuleNotFoundError as exc:
        if not is_file and exc.name and entry.startswith(exc.name):
            raise AgentLoadError(f"{entry}: no such module (AGENTS takes a path/to/file.py or a "
                                 f"package.module importable from here).") from None
        raise AgentLoadError(_where(exc, path if is_file else None)) from None
    except Exception as exc:  # noqa: BLE001 - whatever the module raised, as one line
        raise AgentLoadError(_where(exc, path if is_file else None)) from None


def _where(exc: BaseException, path: Path | None) -> str:
    """`file:line: Error: message` at the agent module's own line if it is in the traceback, else at
    the deepest frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    frame = next((f for f in reversed(frames) if path is not None and Path(f.filename) == path), None) \
        or (frames[-1] if frames else None)
    where = f"{frame.filename}:{frame.lineno}" if frame else "?"
    return f"{where}: {type(exc).__name__}: {exc}"
