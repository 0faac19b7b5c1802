"""What a person sees at a limit: the reason inline, in the page's message bar, and the typed text
still in the box to send again later (the 429 is never a blank page or a lost message)."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import sign_in
from tests.conftest import make_account
from tests.fake_openai import Turn
from tests.live import LiveServer

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


@pytest.fixture
def strict_server(app, server_env, tmp_path):
    server = LiveServer({**server_env, "RATELIMIT_MESSAGES": "1 per minute"}, workers=1,
                        log_path=tmp_path / "gunicorn.log").start()
    yield server
    server.stop()


def test_too_many_messages_says_so_and_keeps_the_typed_message(app, chromium, strict_server, fake_model):
    fake_model.script(Turn(text="First answer."))
    context = chromium.new_context(base_url=strict_server.url)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.set_default_timeout(15_000)
    try:
        sign_in(page, make_account(app)[1])  # every page needs a signed-in account
        page.goto("/")
        composer = page.locator("#composer-input")
        composer.fill("hello")
        with page.expect_navigation():  # the first message creates the chat (and counts as a message)
            composer.press("Enter")
        expect(page.locator(".msg-assistant").last).to_contain_text("First answer.")
        expect(composer).to_be_enabled()

        composer.fill("and again")
        with page.expect_response(lambda r: r.url.endswith("/messages")) as sent:
            composer.press("Enter")
        assert sent.value.status == 429 and int(sent.value.headers["retry-after"]) > 0
        expect(page.locator("#flash")).to_contain_text("Too many messages: the limit is 1 per minute.")
        expect(composer).to_have_value("and again")
        expect(page.locator(".msg-user")).to_have_count(1)
        assert not script_errors, script_errors
    finally:
        context.close()
