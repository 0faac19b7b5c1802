"""examples/files_agent: list/read run at once, move/delete ask first, every path stays in the sandbox."""
from __future__ import annotations

import os

import pytest

from app.agent.tools import ToolContext, ToolError
from examples.files_agent import agent as files
from tests.fake_openai import ToolCall, Turn

CTX = ToolContext()


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    root = tmp_path / "sandbox"
    root.mkdir()
    (root / "a.txt").write_text("alpha")
    (root / "docs").mkdir()
    (root / "docs" / "b.txt").write_text("beta")
    (tmp_path / "secret.txt").write_text("outside")
    monkeypatch.setenv("FILES_AGENT_ROOT", str(root))
    return root


def test_reading_runs_at_once_and_changing_asks_first():
    gates = {t.name: t.requires_confirmation for t in files.agent.tools}
    assert gates == {"list_files": False, "read_file": False, "move_file": True, "delete_file": True}


def test_list_read_move_delete(sandbox):
    assert files.list_files.run(CTX, {}) == "docs/\na.txt (5 bytes)"
    assert files.read_file.run(CTX, {"path": "docs/b.txt"}) == "beta"
    assert files.move_file.run(CTX, {"source": "a.txt", "destination": "docs"}) == "Moved a.txt to docs/a.txt."
    assert files.delete_file.run(CTX, {"path": "docs/b.txt"}) == "Deleted docs/b.txt."
    assert sorted(p.name for p in (sandbox / "docs").iterdir()) == ["a.txt"]


@pytest.mark.parametrize("path", ["../secret.txt", "docs/../../secret.txt", "/etc/passwd", "~/secret.txt"])
def test_paths_outside_the_sandbox_are_refused(sandbox, path):
    for tool, arguments in [(files.read_file, {"path": path}), (files.delete_file, {"path": path}),
                            (files.move_file, {"source": "a.txt", "destination": path})]:
        with pytest.raises(ToolError, match="sandbox|not allowed"):
            tool.run(CTX, arguments)
    assert (sandbox.parent / "secret.txt").read_text() == "outside"
    assert (sandbox / "a.txt").exists()


def test_symlinks_are_refused_even_inside(sandbox):
    os.symlink(sandbox.parent / "secret.txt", sandbox / "link.txt")
    os.symlink(sandbox / "docs", sandbox / "docs-link")
    with pytest.raises(ToolError, match="symbolic link"):
        files.read_file.run(CTX, {"path": "link.txt"})
    with pytest.raises(ToolError, match="symbolic link"):
        files.delete_file.run(CTX, {"path": "docs-link/b.txt"})
    assert "link" not in files.list_files.run(CTX, {}), "links are not even listed"
    assert (sandbox.parent / "secret.txt").exists() and (sandbox / "docs" / "b.txt").exists()


@pytest.fixture
def app_config(app_config):
    return {**app_config, "AGENTS": ["examples.files_agent.agent"]}


def test_a_gated_delete_waits_for_approval_then_deletes_once(harness, fake_model, sandbox):
    fake_model.script(Turn(tool_calls=[ToolCall("delete_file", {"path": "a.txt"})]), Turn(text="Deleted."))
    owner, chat = harness.chat(agent_id="files")
    run_id = harness.send(chat, "delete a.txt")
    [call] = harness.calls(harness.wait(run_id, "paused").id)
    assert call.preview == "Deletes a.txt for good." and (sandbox / "a.txt").exists()
    harness.decide(owner, run_id, call.id, approve=True)
    assert harness.wait(run_id).status == "completed"
    assert harness.calls(run_id)[0].result == "Deleted a.txt." and not (sandbox / "a.txt").exists()
