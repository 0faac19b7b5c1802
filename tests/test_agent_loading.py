"""AGENTS and BUILTIN_AGENTS at start-up, as a self-hoster meets them: `flask agents list` shows what
loaded; anything wrong in an agent file stops start-up with one line naming the file and line."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.agentfiles import REFERENCE_AGENT, write_reference_agent
from tests.live import ROOT


def flask(tmp_path, *args, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    environ.update(DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}",
                   WORKSPACE_DATABASE_URL=f"sqlite:///{tmp_path / 'ws.db'}", SECRET_KEY="x", **env)
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=60)


def start(tmp_path, **env) -> subprocess.CompletedProcess:
    """Start the app as a gunicorn worker builds it."""
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
               "WORKSPACE_DATABASE_URL": f"sqlite:///{tmp_path / 'ws.db'}", "SECRET_KEY": "x", **env}
    return subprocess.run([sys.executable, "-c", "from app import create_app; create_app(cli=False)"], cwd=ROOT,
                          env=environ, capture_output=True, text=True, timeout=60)


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_the_reference_file_replaces_the_built_in_agent(tmp_path):
    path = write_reference_agent(tmp_path)
    result = flask(tmp_path, "agents", "list", AGENTS=str(path), BUILTIN_AGENTS="off")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"data_manager  Data Manager  ({path}:33)"
    assert lines[1].split() == ["delete_records", "asks", "first"]
    assert lines[2].split() == ["send_notification", "asks", "first"]


def test_built_in_and_own_agents_side_by_side(tmp_path):
    path = tmp_path / "helper.py"
    path.write_text("from app.sdk import Agent, tool\n\n\n@tool\ndef ping() -> str:\n    "
                    '"""Ping."""\n    return "pong"\n\n\nhelper = Agent(name="Helper", tools=[ping])\n')
    result = flask(tmp_path, "agents", "list", AGENTS=f"{path}, examples.files_agent.agent")
    assert result.returncode == 0, result.stderr
    ids = [line.split()[0] for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert ids == ["data_manager", "ops_desk", "helper", "files"]


def test_an_id_used_twice_stops_start_up(tmp_path):
    path = write_reference_agent(tmp_path)
    line = one_line_error(start(tmp_path, AGENTS=str(path)))
    assert line.startswith(f"Configuration error: AGENTS: {path}:33: agent id 'data_manager' is already used by "
                           f"the agent defined at {ROOT / 'app/agents/data_manager.py'}:")


@pytest.mark.parametrize(("change", "expected"), [
    (("    markdown=True,\n", '    markdown=True,\n    db="postgresql+psycopg://ai:ai@localhost:5532/ai",\n'),
     ":33: Agent(db=...) is not supported here"),
    (("@tool(requires_confirmation=True)\ndef delete_records", "@tool(requires_confirmation=True, "
      "stop_after_tool_call=True)\ndef delete_records"), ":4: @tool(stop_after_tool_call=...) is not supported"),
    (('model=OpenAIResponses(id="gpt-5.2")', 'model=OpenAIResponses(id="gpt-5.2", temperature=0.2)'),
     ":36: OpenAIResponses(temperature=...) is not supported here"),
])
def test_an_argument_of_the_reference_we_do_not_support_stops_start_up_naming_it(tmp_path, change, expected):
    path = tmp_path / "agent.py"
    path.write_text(REFERENCE_AGENT.replace(*change))
    line = one_line_error(start(tmp_path, AGENTS=str(path), BUILTIN_AGENTS="off"))
    assert line.startswith(f"Configuration error: AGENTS: {path}{expected}"), line


@pytest.mark.parametrize(("source", "expected"), [
    ("import os\n\nraise RuntimeError('no database for you')\n", ":3: RuntimeError: no database for you"),
    ("from app.sdk import Agent\n\nagent = Agent(name='x'\n", ":3: SyntaxError:"),
    ("from agno.agent import Agent\n", ":1: ModuleNotFoundError: No module named 'agno'"),
    ("x = 1\n", ": defines no Agent at module level"),
])
def test_a_module_that_fails_to_load_stops_start_up_naming_file_and_line(tmp_path, source, expected):
    path = tmp_path / "broken.py"
    path.write_text(source)
    line = one_line_error(start(tmp_path, AGENTS=str(path)))
    assert line.startswith(f"Configuration error: AGENTS: {path}{expected}"), line


def test_unknown_files_modules_and_settings_are_one_line_errors(tmp_path):
    line = one_line_error(start(tmp_path, AGENTS=str(tmp_path / "missing.py")))
    assert line == f"Configuration error: AGENTS: {tmp_path / 'missing.py'}: no such file."
    line = one_line_error(start(tmp_path, AGENTS="nowhere.agents"))
    assert line.startswith("Configuration error: AGENTS: nowhere.agents: no such module")
    line = one_line_error(start(tmp_path, BUILTIN_AGENTS="maybe"))
    assert line == "Configuration error: BUILTIN_AGENTS must be on or off, got 'maybe'"
    line = one_line_error(start(tmp_path, BUILTIN_AGENTS="off"))
    assert "BUILTIN_AGENTS is off but AGENTS names no agent module" in line
