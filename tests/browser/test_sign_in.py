"""The first run and joining a team, in Chromium: the setup page, an invite link, signing out and in."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import TEST_PASSWORD

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


def test_the_first_admin_sets_up_the_server_and_invites_a_member(chromium, live_server):
    admin_context = chromium.new_context(base_url=live_server.url)
    member_context = chromium.new_context(base_url=live_server.url)
    try:
        admin = admin_context.new_page()
        admin.goto("/")
        expect(admin).to_have_url(re.compile(r"/setup$"))
        admin.get_by_label("Email").fill("owner@example.test")
        admin.get_by_label("Password").fill(TEST_PASSWORD)
        admin.get_by_role("button", name="Create admin account").click()
        expect(admin.get_by_role("textbox", name="Message")).to_be_visible()

        admin.get_by_role("link", name="Admin").click()
        admin.get_by_role("textbox", name="For").fill("Dana")
        admin.get_by_role("button", name="Create invite link").click()
        link = admin.locator("#new-invite").inner_text()
        assert "/join/" in link

        member = member_context.new_page()
        member.goto(link)
        expect(member.get_by_text("You were invited as a member.")).to_be_visible()
        member.get_by_label("Email").fill("dana@example.test")
        member.get_by_label("Password").fill(TEST_PASSWORD)
        member.get_by_role("button", name="Create account").click()
        expect(member.get_by_role("textbox", name="Message")).to_be_visible()
        expect(member.get_by_role("link", name="Admin")).to_have_count(0)

        member.get_by_role("button", name="Sign out").click()
        expect(member).to_have_url(re.compile(r"/login$"))
        member.goto("/")
        expect(member).to_have_url(re.compile(r"/login"))
        member.get_by_label("Email").fill("dana@example.test")
        member.get_by_label("Password").fill("not the password")
        member.get_by_role("button", name="Sign in").click()
        expect(member.get_by_role("alert")).to_have_text("That email and password don't match an account.")
        member.get_by_label("Password").fill(TEST_PASSWORD)
        member.get_by_role("button", name="Sign in").click()
        expect(member.get_by_role("textbox", name="Message")).to_be_visible()
    finally:
        admin_context.close()
        member_context.close()
