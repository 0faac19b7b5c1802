"""Every kind of card in Chromium: edit then approve, ask for input, hand over, and a preview that
changed between showing the card and approving it."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from app.extensions import db
from tests.fake_openai import ToolCall, Turn

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


def start(page, agent_id: str, message: str):
    page.goto(f"/chats/new?agent_id={agent_id}")
    page.locator("#composer-input").fill(message)
    with page.expect_navigation():
        page.locator("#composer-input").press("Enter")
    card = page.locator(".call-pending")
    expect(card).to_be_visible()
    return card


def test_edit_then_approve(page, fake_model, harness):
    fake_model.script(Turn(text="Deleting.", tool_calls=[ToolCall("delete_records", {"table_name": "events",
                                                                                     "count": 5000})]),
                      Turn(text="Deleted ten."))
    before = harness.rows("events")
    card = start(page, "ops_desk", "Delete 5000 old records from the events table")
    card.get_by_text("Edit…").click()
    count = card.get_by_label("count")
    expect(count).to_have_attribute("max", "10000")
    expect(card.get_by_label("table name")).to_have_value("events")
    page.refusals = (422,)  # the server's answer to an invalid edit
    count.fill("20000")
    count.evaluate("el => el.removeAttribute('max')")  # past the browser's own check: the server's answers
    card.get_by_role("button", name="Check and preview").click()
    card = page.locator(".call-pending")
    expect(card.locator(".call-problems")).to_contain_text("less than or equal to 10000")
    expect(card.get_by_label("count")).to_have_value("20000")
    card.get_by_label("count").fill("10")
    card.get_by_role("button", name="Check and preview").click()
    expect(page.locator(".call-pending .call-preview")).to_contain_text("Deletes the 10 oldest of")
    expect(page.locator(".call-pending .call-changes")).to_contain_text("5000 → 10")
    page.locator(".call-pending").get_by_role("button", name="Delete 10 rows").click()
    expect(page.locator(".call-done")).to_contain_text("Deleted 10 records from events")
    expect(page.locator(".call-done .call-decider")).to_contain_text("Edited and approved by you")
    assert harness.rows("events") == before - 10
    page.reload()
    expect(page.locator(".call-done .call-changes")).to_contain_text("5000 → 10")


def test_ask_for_input(page, fake_model, harness):
    fake_model.script(Turn(tool_calls=[ToolCall("schedule_maintenance", {"table_name": "orders", "note": "<b>x</b>"})]),
                      Turn(text="Scheduled."))
    card = start(page, "ops_desk", "Schedule maintenance for the orders table")
    expect(card.locator(".call-badge")).to_have_text("Needs your input")
    expect(card.locator(".call-args")).to_contain_text("<b>x</b>")  # the model's values, read only, escaped
    card.get_by_label("window").select_option("Saturday 06:00")
    card.get_by_role("button", name="Send and run").click()
    expect(page.locator(".call-done")).to_contain_text("Maintenance of orders scheduled for Saturday 06:00.")
    expect(page.locator(".msg-assistant").last).to_contain_text("Scheduled.")


def test_hand_over(page, fake_model, harness):
    fake_model.script(Turn(tool_calls=[ToolCall("restart_service", {"service": "worker", "reason": "stuck"})]),
                      Turn(text="Thanks."))
    card = start(page, "ops_desk", "Restart the worker service")
    expect(card.locator(".call-badge")).to_have_text("Over to you")
    expect(card).to_contain_text("This one is yours to do")
    page.refusals = (422,)
    card.get_by_label("What came of it").fill("{not json")
    card.get_by_label("JSON").check()
    card.get_by_role("button", name="Hand back the result").click()
    card = page.locator(".call-pending")
    expect(card.locator(".call-problems")).to_contain_text("not valid JSON")
    expect(card.get_by_label("What came of it")).to_have_value("{not json")
    card.get_by_label("What came of it").fill('{"restarted": true}')
    card.get_by_role("button", name="Hand back the result").click()
    expect(page.locator(".call-done")).to_contain_text('{"restarted": true}')
    expect(page.locator(".msg-assistant").last).to_contain_text("Thanks.")
    assert harness.calls(harness.latest_run(page.url.rsplit("/", 1)[-1]))[0].error is None


def test_a_changed_preview_asks_again(page, fake_model, harness, app):
    fake_model.script(Turn(tool_calls=[ToolCall("delete_records", {"table_name": "users", "count": 50})]),
                      Turn(text="Gone."))
    card = start(page, "data_manager", "Delete 50 old records from the users table")
    with app.app_context(), db.engines["workspace"].begin() as conn:
        conn.execute(sa.text("DELETE FROM users WHERE id IN (SELECT id FROM users ORDER BY id LIMIT 100)"))
    shrunk = harness.rows("users")
    page.refusals = (409,)
    card.get_by_role("button", name="Delete 50 rows").click()
    card = page.locator(".call-pending")
    # The new preview, still pending (the 409's notice may be replaced at once by the stream's own update).
    expect(card.locator(".call-preview")).to_contain_text(f"of {shrunk:,} rows in users")
    assert harness.rows("users") == shrunk
    card.get_by_role("button", name="Delete 50 rows").click()
    expect(page.locator(".call-done")).to_contain_text("Deleted 50 records from users")
    assert harness.rows("users") == shrunk - 50
