"""A fresh machine with no API key: the offline demo model, clearly labelled, runs the confirm flow."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


@pytest.fixture
def server_env(databases):
    return {"DATABASE_URL": databases.app_url, "WORKSPACE_DATABASE_URL": databases.workspace_url,
            "SECRET_KEY": "test-secret"}  # no OPENAI_API_KEY, no OPENAI_BASE_URL


def send(page, text: str) -> None:
    """Type a message and press Send, which is shown only while the agent is not working (Enter would
    wait then). A paused run shows it too: a message then rejects its card, so wait for replies first."""
    box = page.locator("#composer-input")
    box.fill(text)
    page.get_by_role("button", name="Send").click()
    expect(box).to_have_value("")


def test_the_demo_model_deletes_after_approval(page, harness):
    before = harness.rows("users")
    page.goto("/")
    expect(page.locator(".model-badge")).to_have_text("Demo model (offline)")
    page.get_by_role("button", name="Delete 50 old records from the users table").click()
    with page.expect_navigation():
        page.locator("#composer-input").press("Enter")

    card = page.locator(".call-pending")
    expect(card).to_contain_text("delete_records")
    card.get_by_role("button", name="Delete 50 rows").click()
    expect(page.locator(".call-done")).to_contain_text(f"{before - 50:,} remain")
    expect(page.locator(".msg-assistant").last).to_contain_text("Done.")
    assert harness.rows("users") == before - 50

    send(page, "Notify alice@example.com that the export is ready")
    page.locator(".call-pending").get_by_role("button", name="Approve").click()
    expect(page.locator("#outbox")).to_contain_text("To alice@example.com")
    expect(page.locator("#outbox")).to_contain_text("the export is ready")


def test_the_ops_desk_demo_shows_a_rule_an_always_allow_card_and_a_call_for_an_admin(page, harness):
    """The second demo agent with no key: a small archive runs by its rule, a large one asks (with Always
    allow and an expiry), and a password reset waits for an admin."""
    before = harness.rows("events")
    page.goto("/chats/new?agent_id=ops_desk")
    expect(page.get_by_role("button", name="Archive 500 old events")).to_be_visible()  # a suggested prompt

    send(page, "Archive 50 old events")
    expect(page.locator(".call-by-rule")).to_contain_text("Approved by rule")
    expect(page.locator(".call-done").last).to_contain_text(f"Archived 50 events; {before - 50:,} remain.")
    expect(page.locator(".msg-assistant").last).to_contain_text("Done. Archived 50 events")

    send(page, "Archive 500 old events")
    card = page.locator(".call-pending")
    expect(card).to_contain_text(f"Archives (removes) the 500 oldest of {before - 50:,} events.")
    expect(card.locator(".call-expires")).to_contain_text("Expires")
    expect(card.get_by_text("Always allow archive_events…")).to_be_visible()
    card.get_by_role("button", name="Approve").click()
    expect(page.locator(".call-done").last).to_contain_text(f"{before - 550:,} remain.")
    # The card is done before the page shows the run going on: wait for the reply, then Send is current.
    expect(page.locator(".msg-assistant").last).to_contain_text("Done. Archived 500 events")

    send(page, "Reset the password of bo@example.com")
    card = page.locator(".call-pending")
    expect(card.locator(".call-expires")).to_contain_text("only an admin can decide it")
    expect(card.locator(".call-badge")).to_have_text("Needs an admin")  # this test's person is a member
    expect(card.locator(".call-waiting")).to_contain_text("Waiting for an admin")
    expect(card.get_by_role("button", name="Approve")).to_have_count(0)
    assert harness.rows("events") == before - 550
