"""The agent is the unit: the core is handed its agents, the demo script lives with the Data Manager,
and no page names an agent the app does not serve."""
from __future__ import annotations

import ast
import gc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def parse(rel: str) -> ast.Module:
    """The file's syntax tree. Garbage collection is held off meanwhile: on CPython 3.11 a collection
    during `ast.parse` that runs a finalizer of what earlier tests left (a generator, a socket) can fail
    the parse with a spurious "AST constructor recursion depth mismatch" (CPython gh-106905; seen in CI)."""
    source = (ROOT / rel).read_text()
    gc.collect()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        gc.enable()


def imported_modules(rel: str) -> set[str]:
    names = set()
    for node in ast.walk(parse(rel)):
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


def test_domain_modules_do_not_import_flask():
    for rel in ("app/agent/tools.py", "app/agent/definition.py", "app/agent/mcp.py", "app/agent/registry.py",
                "app/workspace/__init__.py", "app/agents/__init__.py", "app/agents/data_manager.py"):
        names = imported_modules(rel)
        assert not any(n.split(".")[0].startswith("flask") for n in names), (rel, names)


def test_the_demo_models_phrases_live_with_the_data_manager():
    llm = (ROOT / "app/agent/llm.py").read_text()
    assert "delete_records" not in llm and "Delete 50 old records" not in llm
    assert "Delete 50 old records" in (ROOT / "app/agents/data_manager.py").read_text()


def test_templates_take_the_agents_name_from_the_agent():
    for path in (ROOT / "templates").rglob("*.html"):
        assert "Data Manager" not in path.read_text(), path


def test_the_mcp_helper_runs_without_the_app():
    assert not any(m.startswith("app") for m in imported_modules("app/agent/mcp_helper.py"))
