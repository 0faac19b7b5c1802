"""The approvals inbox and the audit in Chromium: the pending count in the sidebar and the title, a card
decided from /approvals (the chat open in another tab follows), and axe-core on both pages."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_chat_flow import DELETE_50, start_chat
from tests.browser.test_weight_and_access import axe_serious
from tests.fake_openai import Turn

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


def test_a_card_decided_in_the_inbox_updates_the_chat_and_the_count(page, fake_model, harness):
    fake_model.script(Turn(text="This needs your approval.", tool_calls=[DELETE_50]),
                      Turn(text="Done: 50 old users are gone."))
    before = harness.rows("users")
    start_chat(page, "Delete 50 old records from the users table")
    expect(page.locator(".call-pending")).to_be_visible()
    page.reload()
    expect(page.locator("#approvals-link")).to_have_text("Approvals (1)")
    expect(page).to_have_title(re.compile(r"^\(1\) "))

    inbox = page.context.new_page()
    inbox.goto("/approvals")
    expect(inbox).to_have_title("(1) Approvals · Agent Chat")
    card = inbox.locator(".call-pending")
    expect(card).to_contain_text("delete_records")
    expect(card).to_contain_text(f"Deletes the 50 oldest of {before:,} rows in users.")
    assert axe_serious(inbox) == []

    card.get_by_role("button", name="Delete 50 rows").click()
    expect(inbox.locator(".call-pending")).to_have_count(0)
    expect(inbox.locator(".call")).to_contain_text("Approved by you")
    expect(inbox.locator("#approvals-link")).to_have_text("Approvals")
    expect(inbox).to_have_title("Approvals · Agent Chat")

    # The chat's tab follows the decision made elsewhere (its stream stays open while the run waits).
    expect(page.locator(".call-done")).to_contain_text(f"Deleted 50 records from users. {before - 50:,} remain.")
    expect(page.locator(".msg-assistant").last).to_contain_text("Done: 50 old users are gone.")
    assert harness.rows("users") == before - 50
    page.reload()
    expect(page.locator("#approvals-link")).to_have_text("Approvals")

    inbox.goto("/audit")
    row = inbox.locator("tbody tr").first
    expect(row).to_contain_text("delete_records")
    expect(row).to_contain_text(f"by {page.email}")
    assert axe_serious(inbox) == []
    inbox.close()
