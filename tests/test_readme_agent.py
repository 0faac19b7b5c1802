"""The README's "Write your own agent" example runs as written: its file loads through AGENTS, its
gated tool asks first and its run_context is filled in."""
from __future__ import annotations

import re

import pytest

from tests.fake_openai import ToolCall, Turn
from tests.live import ROOT


def readme_agent_file() -> str:
    section = (ROOT / "README.md").read_text().split("## Write your own agent", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def app_config(app_config, tmp_path):
    path = tmp_path / "mail.py"
    path.write_text(readme_agent_file())
    return {**app_config, "AGENTS": [str(path)]}


def test_the_readme_agent_asks_before_archiving_and_counts_at_once(harness, fake_model):
    fake_model.script(Turn(tool_calls=[ToolCall("count_mail", {"box": "spam"}),
                                       ToolCall("archive_mail", {"box": "spam", "older_than_days": 30})]),
                      Turn(text="Archived."))
    owner, chat = harness.chat(agent_id="mail")
    run_id = harness.send(chat, "archive the spam older than 30 days")
    count, archive = harness.calls(harness.wait(run_id, "paused").id)
    assert (count.status, archive.status) == ("approved", "pending")
    harness.decide(owner, run_id, archive.id, approve=True)
    assert harness.wait(run_id).status == "completed"
    count, archive = harness.calls(run_id)
    assert count.result == f'{{"box": "spam", "messages": 42, "asked_by_account": {owner}}}'
    assert archive.result == "Archived the spam messages older than 30 days."


def test_the_readmes_approval_options_define_what_it_says():
    section = (ROOT / "README.md").read_text().split("## Write your own agent", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, re.S)[1]
    tools: dict = {}
    exec("from app.sdk import tool\n" + block, tools)
    purge, reset, wire = tools["purge_events"], tools["reset_password"], tools["wire_money"]
    assert purge.requires_confirmation and purge.confirmation_rule({"count": 101}, None) is True
    assert purge.confirmation_rule({"count": 100}, None) is False
    assert (reset.approvers, reset.allow_always) == ("admin", True)
    assert (wire.allow_always, wire.approval_timeout) == (False, 3600)
