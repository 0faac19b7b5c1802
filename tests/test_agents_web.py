"""Several agents in the browser's pages (Flask's test client): New chat picks the agent, the header,
sidebar and composer name it, and an agent without a model key says so plainly. Plus the operator's
CLI (agents list, runs list, runs cancel)."""
from __future__ import annotations

import html
import re

import pytest

from app import create_app
from app.agent_commands import cancel_run, list_agents, list_runs
from tests.conftest import stop_app
from tests.fake_openai import ToolCall, Turn

HELPER = '''\
from typing import Annotated, Literal

from app.sdk import Agent, Field, tool


@tool(requires_confirmation=True)
def archive(box: Literal["inbox", "spam"], days: Annotated[int, Field(ge=1, le=365)]) -> str:
    """Archive old mail.

    Args:
        box: Which mailbox.
        days: Older than this many days.
    """
    return f"Archived {box} older than {days} days"


@tool
def peek(box: str) -> str:
    """Peek into a mailbox."""
    return f"{box}: 3 messages"


mail = Agent(name="Mail <Clerk>", id="mail", description="Tidies the <b>mailboxes</b>.", tools=[peek, archive],
             instructions=["You tidy mailboxes."])
'''


@pytest.fixture
def app_config(app_config, tmp_path):
    path = tmp_path / "mail_agent.py"
    path.write_text(HELPER)
    return {**app_config, "AGENTS": [str(path)]}


def text_of(response) -> str:
    return html.unescape(" ".join(response.get_data(as_text=True).split()))


def test_new_chat_offers_every_agent_with_its_tools_and_gating(browser):
    page = browser.get("/chats/new")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "Mail &lt;Clerk&gt;" in body and "Tidies the &lt;b&gt;mailboxes&lt;/b&gt;." in body, "escaped"
    mail = re.search(r'<li class="agent-choice[^"]*" id="agent-mail">(.*?)<a class="btn', body, re.S)
    tools = html.unescape(" ".join(re.sub(r"<[^>]+>", " ", mail.group(1)).split()))
    assert "peek runs at once" in tools and "archive asks first" in tools
    assert 'id="agent-data_manager"' in body
    first = text_of(browser.get("/"))  # no chat yet: the new chat, with the first agent picked
    assert "Start a chat with…" in first and "Chat with Data Manager" in first and "Chat with Mail <Clerk>" in first
    assert '<h1 id="agent-name">Data Manager</h1>' in first
    assert '<input type="hidden" name="agent_id" value="data_manager">' in first


def test_a_chat_with_the_chosen_agent_is_named_after_it(browser, harness, fake_model):
    picked = text_of(browser.get("/chats/new?agent_id=mail"))
    assert '<h1 id="agent-name">Mail <Clerk></h1>' in picked and "Message Mail <Clerk>…" in picked
    assert '<input type="hidden" name="agent_id" value="mail">' in picked, "the first message goes to Mail"
    assert browser.get("/chats/new?agent_id=nobody").status_code == 404

    fake_model.script(Turn(tool_calls=[ToolCall("archive", {"box": "inbox", "days": 30})]))
    response = browser.post("/chats", {"agent_id": "mail", "message": "archive"}, htmx=False)
    assert response.status_code == 303
    chat = response.headers["Location"].rsplit("/", 1)[-1]
    page = browser.get(f"/chats/{chat}").get_data(as_text=True)
    run_id = re.search(r"/runs/(run_\w+)/events", page).group(1)
    assert harness.wait(run_id).status == "paused"
    assert harness.run(run_id).agent_id == "mail"
    page = text_of(browser.get(f"/chats/{chat}"))
    assert '<h1 id="agent-name">Mail <Clerk></h1>' in page
    assert "Message Mail <Clerk>…" in page

    fake_model.script(Turn(text="Hello."))
    other = browser.post("/chats", {"message": "hi"}, htmx=False)  # no agent_id: the first agent
    page = text_of(browser.get(other.headers["Location"]))
    assert '<h1 id="agent-name">Data Manager</h1>' in page
    assert page.count('<span class="chat-agent">Mail <Clerk></span>') == 1, "the sidebar names each chat's agent"
    assert page.count('<span class="chat-agent">Data Manager</span>') == 1


def test_an_unknown_agent_is_a_404_and_creating_needs_the_csrf_token(browser):
    assert browser.post("/chats", {"agent_id": "nobody", "message": "hi"}, htmx=False).status_code == 404
    assert browser.post("/chats", {"agent_id": "nobody"}, htmx=False).status_code == 404
    fresh = browser.client.post("/chats", data={"agent_id": "mail", "message": "hi"})
    assert fresh.status_code == 400


def test_strict_arguments_of_an_own_tool_fail_before_a_card(harness, fake_model):
    fake_model.script(Turn(tool_calls=[ToolCall("archive", {"box": "trash", "days": 10**12})]), Turn(text="No."))
    _, chat = harness.chat(agent_id="mail")
    run_id = harness.send(chat, "archive it all")
    assert harness.wait(run_id).status == "completed"
    [call] = harness.calls(run_id)
    assert call.status == "failed"
    assert "box: input should be 'inbox' or 'spam'" in call.error
    assert "days: input should be less than or equal to 365" in call.error


def test_without_a_model_key_the_data_manager_demos_and_other_agents_say_they_need_one(app_config, tmp_path):
    app = create_app({**app_config, "OPENAI_API_KEY": None, "OPENAI_BASE_URL": None, "DEMO_WORD_DELAY": 0})
    try:
        from flask_migrate import upgrade

        from tests.conftest import Harness
        with app.app_context():
            upgrade()
        harness = Harness(app)
        _, chat = harness.chat(agent_id="mail")
        assert harness.wait(harness.send(chat, "archive my inbox")).status == "completed"
        reply = harness.messages(chat)[-1][1]
        assert reply.startswith("This agent needs a model, and none is configured: set `OPENAI_API_KEY`")
        assert "I have not done anything." in reply

        _, chat = harness.chat(agent_id="data_manager")
        assert harness.wait(harness.send(chat, "Delete 5 old records from the users table")).status == "paused"
    finally:
        stop_app(app)


def test_cli_lists_agents_and_runs_and_cancels_a_paused_run(app, harness, fake_model):
    fake_model.script(Turn(tool_calls=[ToolCall("archive", {"box": "spam", "days": 7})]))
    owner, chat = harness.chat(agent_id="mail")
    run_id = harness.send(chat, "archive spam")
    assert harness.wait(run_id).status == "paused"
    runner = app.test_cli_runner()

    listed = runner.invoke(list_agents)
    assert listed.exit_code == 0
    assert [line.split()[:2] for line in listed.output.splitlines() if line.startswith("    ")][-2:] == [
        ["peek", "runs"], ["archive", "asks"]]

    paused = runner.invoke(list_runs, ["--status", "paused"])
    assert paused.exit_code == 0 and paused.output.startswith(f"{run_id}  paused     mail  account {owner}")
    assert runner.invoke(list_runs, ["--status", "cancelled"]).output == "No runs.\n"
    assert runner.invoke(list_runs, ["--status", "bogus"]).exit_code == 2

    cancelled = runner.invoke(cancel_run, [run_id])
    assert (cancelled.exit_code, cancelled.output) == (0, f"{run_id} cancelled.\n")
    assert harness.run(run_id).status == "cancelled"
    assert harness.calls(run_id)[0].status == "rejected", "its card can no longer be approved"
    again = runner.invoke(cancel_run, [run_id])
    assert again.exit_code == 1 and "already cancelled" in again.output
    assert "No run run_nope." in runner.invoke(cancel_run, ["run_nope"]).output
