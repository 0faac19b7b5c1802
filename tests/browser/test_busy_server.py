"""What a person sees when the server cannot take a message right now: the reason, inline, and the
typed text still in the box to send again."""
from __future__ import annotations

import sqlite3

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import sign_in
from tests.conftest import make_account
from tests.fake_openai import Turn
from tests.live import LiveServer

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


@pytest.fixture
def busy_server(app, server_env, tmp_path):
    """gunicorn that gives up on a locked SQLite file after 1 s (a 503, like a dry pool on PostgreSQL)."""
    server = LiveServer({**server_env, "SQLITE_BUSY_TIMEOUT": "1"}, workers=1,
                        log_path=tmp_path / "gunicorn.log").start()
    yield server
    server.stop()


def test_a_busy_server_says_so_and_keeps_the_typed_message(chromium, app, busy_server, databases, fake_model):
    fake_model.script(Turn(text="Got it the second time."))
    context = chromium.new_context(base_url=busy_server.url)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.set_default_timeout(15_000)
    try:
        sign_in(page, make_account(app)[1])
        page.goto("/chats/new")
        composer = page.locator("#composer-input")
        expect(composer).to_be_enabled()

        writer = sqlite3.connect(databases.app_url.removeprefix("sqlite:///"))
        writer.execute("BEGIN IMMEDIATE")  # another writer holds the lock past SQLITE_BUSY_TIMEOUT
        try:
            composer.fill("Please count the users")
            with page.expect_response(lambda r: r.url.endswith("/chats")) as sent:  # a new chat's first message
                composer.press("Enter")
            assert sent.value.status == 503
            expect(page.locator("#flash")).to_contain_text("The database is not available right now")
            expect(composer).to_have_value("Please count the users")
            expect(page.locator(".msg-user")).to_have_count(0)
        finally:
            writer.rollback()
            writer.close()

        with page.expect_navigation():
            composer.press("Enter")
        expect(page.locator(".msg-user")).to_have_count(1)
        expect(page.locator(".msg-assistant").last).to_contain_text("Got it the second time.")
        expect(composer).to_have_value("")
        assert not script_errors, script_errors
    finally:
        context.close()
