"""Approval rules, "Always allow" and expiry in Chromium (issue 12, items 4-6), against real gunicorn
workers: a call its rule lets through shows inline as approved by the rule; "Always allow" from the card,
then revoked on the account page; a call only an admin decides; a card whose approval expired (a late
click, and the sweeper turning it over in an open tab). The agent file's tools write a ledger file."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from app.models import Role
from tests.agentfiles import ledger_lines, write_rules_agent
from tests.browser.conftest import sign_in
from tests.browser.test_own_agents_in_chromium import pick_agent, send, send_first
from tests.browser.test_weight_and_access import axe_serious
from tests.conftest import make_account
from tests.fake_openai import ToolCall, Turn

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)

EXPIRY_SECONDS = 3
ARCHIVE_EVENTS = ToolCall("archive_table", {"table_name": "events"})


@pytest.fixture
def ledger(tmp_path):
    return tmp_path / "ledger.txt"


@pytest.fixture
def agent_file(tmp_path, ledger):
    folder = tmp_path / "agents"
    folder.mkdir()
    return write_rules_agent(folder, ledger, timeout=EXPIRY_SECONDS)


@pytest.fixture
def app_config(app_config, agent_file):
    return {**app_config, "AGENTS": [str(agent_file)]}


@pytest.fixture
def server_env(server_env, agent_file, request):
    """The sweeper test sweeps every second; the others never in their few seconds (a late click must
    find the call still pending in the database, only overdue)."""
    sweep = "1" if "sweeper" in request.node.name else "600"
    return {**server_env, "AGENTS": str(agent_file), "RUN_SWEEP_SECONDS": sweep}


def rules_chat(page, text: str) -> None:
    page.goto("/")
    pick_agent(page, "Rules")
    send_first(page, text)


def test_a_call_its_rule_lets_through_shows_inline_as_approved_by_the_rule(page, fake_model, ledger):
    fake_model.script(Turn(text="Purging.", tool_calls=[ToolCall("purge_events", {"count": 50})]),
                      Turn(text="Purged 50 events."))
    rules_chat(page, "purge 50 old events")
    call = page.locator(".call-done")
    expect(call).to_contain_text("Approved by rule")
    expect(call).to_contain_text("Purged 50 events.")
    expect(page.locator(".msg-assistant").last).to_contain_text("Purged 50 events.")
    expect(page.locator(".call-pending")).to_have_count(0)
    assert ledger_lines(ledger) == ["purge_events 50"]

    fake_model.script(Turn(tool_calls=[ToolCall("purge_events", {"count": 500})]))
    send(page, "now purge 500")
    expect(page.locator(".call-pending")).to_contain_text("purge_events")
    assert ledger_lines(ledger) == ["purge_events 50"]


def test_always_allow_from_the_card_then_revoke_it_on_the_account_page(page, fake_model, ledger):
    fake_model.script(Turn(tool_calls=[ARCHIVE_EVENTS]), Turn(text="Archived."))
    rules_chat(page, "archive the events table")
    card = page.locator(".call-pending")
    card.get_by_text("Always allow archive_table…").click()
    card.get_by_label("Only for these values").check()
    card.get_by_label("A day").check()
    assert axe_serious(page) == []
    card.get_by_role("button", name="Approve and always allow").click()
    expect(page.locator(".call-done")).to_contain_text("Archived events.")
    expect(page.locator(".msg-assistant").last).to_contain_text("Archived.")

    fake_model.script(Turn(tool_calls=[ARCHIVE_EVENTS]), Turn(text="Archived again."))
    send(page, "archive events again")
    expect(page.locator(".msg-assistant").last).to_contain_text("Archived again.")
    allowed = page.locator(".call-done").last
    expect(allowed).to_contain_text("Allowed by your rule")
    expect(page.locator(".call-pending")).to_have_count(0)
    assert ledger_lines(ledger) == ["archive_table events", "archive_table events"]

    chat_url = page.url
    allowed.get_by_role("link", name="Revoke it").click()
    page.wait_for_url(re.compile(r"/account#grant-\d+$"))
    row = page.locator("tr.grant-live")
    expect(row).to_contain_text("archive_table")
    expect(row).to_contain_text('table_name = "events"')
    expect(row.locator("time")).to_have_count(1)  # until tomorrow, in the reader's time
    row.get_by_role("button", name="Revoke always allow archive_table").click()
    expect(page.locator("tr.grant-live")).to_have_count(0)
    expect(page.locator("tr.grant-ended")).to_contain_text("revoked")

    page.goto(chat_url)
    fake_model.script(Turn(tool_calls=[ARCHIVE_EVENTS]))
    send(page, "and once more")
    expect(page.locator(".call-pending")).to_contain_text("archive_table")
    assert len(ledger_lines(ledger)) == 2


def test_a_call_only_an_admin_decides_waits_for_an_admin(page, fake_model, app, chromium, live_server, ledger):
    fake_model.script(Turn(tool_calls=[ToolCall("reset_password", {"email": "bo@example.test"})]),
                      Turn(text="The password was reset."))
    rules_chat(page, "reset bo's password")
    card = page.locator(".call-pending")
    expect(card).to_contain_text("Waiting for an admin")
    expect(card.get_by_role("button")).to_have_count(0)
    expect(page.locator("#approvals-link")).to_have_text("Approvals")

    context = chromium.new_context(base_url=live_server.url)
    admin = context.new_page()
    sign_in(admin, make_account(app, role=Role.ADMIN)[1])
    admin.goto("/approvals")
    expect(admin.locator(".inbox-owner")).to_have_text(page.email)
    their_card = admin.locator(".call-pending")
    expect(their_card).to_contain_text("reset_password")
    expect(their_card).to_contain_text("only an admin can decide it")
    their_card.get_by_role("button", name="Approve").click()
    expect(admin.locator(".call")).to_contain_text("Approved by you")
    context.close()

    expect(page.locator(".call-done")).to_contain_text("Reset the password of bo@example.test.")
    expect(page.locator(".msg-assistant").last).to_contain_text("The password was reset.")
    assert ledger_lines(ledger) == ["reset_password bo@example.test"]


def test_a_late_click_on_an_expired_card_shows_it_expired_and_the_run_goes_on(page, fake_model, ledger):
    fake_model.script(Turn(tool_calls=[ToolCall("export_table", {"table_name": "events"})]),
                      Turn(text="The export was not approved in time."))
    rules_chat(page, "export the events table")
    card = page.locator(".call-pending")
    expect(card.locator(".call-expires time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    page.wait_for_timeout(EXPIRY_SECONDS * 1000 + 500)
    card.get_by_role("button", name="Approve").click()
    # The card, as the click's answer or as the run's stream shows it (whichever comes last).
    expired = page.locator(".call-expired")
    expect(expired).to_contain_text(re.compile(r"approval (of this call of export_table )?expired"))
    expect(expired).to_contain_text("nothing was run")
    expect(page.locator(".call-pending")).to_have_count(0)
    expect(page.locator(".msg-assistant").last).to_contain_text("The export was not approved in time.")
    page.reload()
    expect(page.locator(".call-expired .call-badge")).to_have_text("Expired")
    assert ledger_lines(ledger) == []


def test_the_sweeper_turns_an_open_card_expired_without_a_click(page, fake_model, ledger):
    fake_model.script(Turn(tool_calls=[ToolCall("export_table", {"table_name": "events"})]),
                      Turn(text="Nobody approved the export."))
    rules_chat(page, "export the events table")
    expect(page.locator(".call-pending")).to_be_visible()
    expect(page.locator(".call-expired")).to_contain_text("nothing was run", timeout=EXPIRY_SECONDS * 1000 + 10_000)
    expect(page.locator(".msg-assistant").last).to_contain_text("Nobody approved the export.")
    assert ledger_lines(ledger) == []
