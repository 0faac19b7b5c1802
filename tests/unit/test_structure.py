"""The agent is the unit: the core is handed its agents, the demo script lives with the Data Manager,
and no page names an agent the app does not serve."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(rel: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse((ROOT / rel).read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


def test_the_core_never_imports_the_agents_it_runs():
    for rel in ("app/agent/commands.py", "app/agent/loop.py", "app/agent/context.py",
                "app/agent/recovery.py", "app/agent/refusals.py", "app/agent/llm.py", "app/agent/tools.py", "app/agent/executor.py",
                "app/agent/events.py", "app/agent/definition.py", "app/agent/mcp.py", "app/chats.py",
                "app/api/routes.py", "app/api/core.py", "app/web/chat.py", "app/api/serialize.py"):
        assert not any(m == "app.agents" or m.startswith("app.agents.") for m in imported_modules(rel)), rel


def test_the_demo_models_phrases_live_with_the_data_manager():
    llm = (ROOT / "app/agent/llm.py").read_text()
    assert "delete_records" not in llm and "Delete 50 old records" not in llm
    assert "Delete 50 old records" in (ROOT / "app/agents/data_manager.py").read_text()


def test_templates_take_the_agents_name_from_the_agent():
    for path in (ROOT / "templates").rglob("*.html"):
        assert "Data Manager" not in path.read_text(), path


def test_the_mcp_helper_runs_without_the_app():
    assert not any(m.startswith("app") for m in imported_modules("app/agent/mcp_helper.py"))
