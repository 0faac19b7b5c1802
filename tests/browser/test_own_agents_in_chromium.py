"""Agents of one's own in Chromium: the reference's agent file (imports changed only) loaded through
AGENTS, and an MCP server's destructive tool picked from New chat; paused → nothing ran, approved →
ran once, rejected → never ran. On SQLite and PostgreSQL, against real gunicorn workers."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.agentfiles import ledger_lines, write_mcp_agent, write_reference_agent
from tests.fake_openai import ToolCall, Turn

DELETE_50 = ToolCall("delete_records", {"table_name": "users", "count": 50})


@pytest.fixture
def ledger(tmp_path):
    return tmp_path / "ledger.txt"


@pytest.fixture
def agent_files(tmp_path, ledger):
    folder = tmp_path / "agents"
    folder.mkdir()
    return [write_reference_agent(folder), write_mcp_agent(folder, ledger)]


@pytest.fixture
def app_config(app_config, agent_files):
    return {**app_config, "AGENTS": [str(agent_files[1])]}


@pytest.fixture
def server_env(server_env, agent_files, request):
    """Reference test: the file's Data Manager replaces the built-in one. MCP test: the built-in Data
    Manager and the MCP agent side by side."""
    if "reference" in request.node.name:
        return {**server_env, "AGENTS": str(agent_files[0]), "BUILTIN_AGENTS": "off"}
    return {**server_env, "AGENTS": str(agent_files[1])}


def send(page, text: str) -> None:
    expect(page.locator("#composer-input")).to_be_enabled()
    page.locator("#composer-input").fill(text)
    page.locator("#composer-input").press("Enter")


def send_first(page, text: str) -> None:
    """The new chat's first message creates the chat (a page load to it)."""
    expect(page.locator("#composer-input")).to_be_enabled()
    page.locator("#composer-input").fill(text)
    with page.expect_navigation():
        page.locator("#composer-input").press("Enter")


def pick_agent(page, name: str) -> None:
    with page.expect_navigation():
        page.get_by_role("link", name=f"Chat with {name}").click()
    expect(page.locator("#agent-name")).to_have_text(name)


def test_the_reference_agent_file_asks_first_then_runs_once_or_never(page, fake_model, harness):
    fake_model.script(Turn(text="I need your confirmation.", tool_calls=[DELETE_50]), Turn(text="50 deleted."))
    page.goto("/")
    expect(page.locator("h1")).to_have_text("Data Manager")
    expect(page.locator(".agent-picker")).to_have_count(0)  # one agent: nothing to pick
    send_first(page, "Delete 50 old records from the users table")

    card = page.locator(".call-pending")
    expect(card).to_contain_text("delete_records")
    expect(card.locator("dd").first).to_have_text("users")
    [call] = all_calls(harness)
    assert (call.status, call.result) == ("pending", None), "paused: nothing ran"

    card.get_by_role("button", name="Delete 50 rows").click()  # the card names what approving does
    expect(page.locator(".call-done")).to_contain_text("Deleted 50 records from users")
    expect(page.locator(".msg-assistant").last).to_contain_text("50 deleted.")
    [call] = all_calls(harness)
    assert (call.status, call.result) == ("done", "Deleted 50 records from users")

    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Kept them."))
    send(page, "Delete 50 old records from the users table again")
    card = page.locator(".call-pending")
    card.get_by_text("Reject…").click()
    card.get_by_role("button", name="Reject", exact=True).click()
    expect(page.locator(".msg-assistant").last).to_contain_text("Kept them.")
    second = all_calls(harness)[-1]
    assert (second.status, second.result) == ("rejected", None), "rejected: never ran"


def test_an_mcp_agent_picked_from_new_chat_gates_its_destructive_tool(page, fake_model, harness, ledger):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Deleted over MCP."))
    page.goto("/")
    choice = page.locator("#agent-mcp_records")
    expect(choice).to_contain_text("Records over MCP")
    # Listed in the background (a helper process and the server start), then shown without a reload.
    expect(choice).to_contain_text("delete_records asks first", timeout=30_000)
    pick_agent(page, "Records over MCP")
    expect(page.locator("#composer-input")).to_have_attribute("placeholder", "Message Records over MCP…")
    send_first(page, "delete 50 users")
    expect(page.locator("h1")).to_have_text("Records over MCP")
    expect(page.locator(".chat-link.current .chat-agent")).to_have_text("Records over MCP")

    card = page.locator(".call-pending")
    expect(card).to_contain_text("The server marks this tool as destructive.")
    assert ledger_lines(ledger) == [], "paused: the server was not called"
    card.get_by_role("button", name="Delete 50 rows").click()  # the card names what approving does
    expect(page.locator(".call-done")).to_contain_text("Deleted 50 records from users (over MCP)")
    assert ledger_lines(ledger) == ["start users 50", "done users 50"]


def all_calls(harness):
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import ToolCall as Row
    with harness.app.app_context():
        rows = list(db.session.scalars(sa.select(Row).order_by(Row.created_at)))
        db.session.expunge_all()
        return rows
