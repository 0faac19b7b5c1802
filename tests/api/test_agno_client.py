"""The reference's own Python client (agno's AgentOSClient and RemoteAgent, pinned in
tests/agno_client/requirements.txt, in its own virtualenv .venv-agno) against our real server: list and
read agents, a run that pauses, a continue with confirmed requirements, streamed events parsed into the
client's classes, and sessions listed, read, renamed and deleted (tests/agno_client/drive.py)."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.api.apiclient import DELETE_50, KEY
from tests.fake_openai import Turn
from tests.live import ROOT

AGNO_PYTHON = ROOT / ".venv-agno" / "bin" / "python"
STEPS = ["list and read agents", "arun pauses on the tool call",
         "acontinue_run with the confirmed requirement completes", "streamed events parse into the client's classes",
         "sessions list, read, rename, delete"]


def test_the_references_client_works_against_us(live_server, fake_model):
    if not AGNO_PYTHON.exists():
        pytest.fail("No .venv-agno: run scripts/bootstrap dev (it installs tests/agno_client/requirements.txt).")
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Deleted them."),
                      Turn(tool_calls=[DELETE_50]), Turn(text="Deleted them again."))
    env = {"PATH": os.environ.get("PATH", ""), "AGNO_TELEMETRY": "false", "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run([str(AGNO_PYTHON), str(ROOT / "tests" / "agno_client" / "drive.py"), live_server.url, KEY],
                          env=env, capture_output=True, text=True, timeout=120)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert [line[4:] for line in done.stdout.splitlines() if line.startswith("ok: ")] == STEPS, report
