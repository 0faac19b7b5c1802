"""Browser fixtures: Debian's Chromium driven by Playwright against a real gunicorn server."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import TEST_PASSWORD, make_account

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As root Chromium needs --no-sandbox; the network here is closed, so no background connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def chromium():
    if not shutil.which(CHROMIUM):
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"REQUIRE_BROWSER is set but {CHROMIUM} is missing: the browser suite must run.")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def sign_in(page, email: str, password: str = TEST_PASSWORD) -> None:
    """Through the sign-in form, as a person does."""
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)


@pytest.fixture
def page(chromium, live_server, app, tmp_path):
    """A fresh browser profile on the live server, signed in as a new member account (`page.account`)."""
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.set_default_timeout(15_000)
    page.account_id, page.email = make_account(app)
    sign_in(page, page.email)
    yield page
    # A test that makes the server refuse on purpose names the statuses it expects (`page.refusals`).
    expected = tuple(f"status of {status} " for status in getattr(page, "refusals", ()))
    logged = [e for e in errors if not (expected and "Failed to load resource" in e and any(x in e for x in expected))]
    # For a failing test's report. caret="initial": hiding the caret injects a style our CSP refuses.
    page.screenshot(path=str(tmp_path / "last-screen.png"), caret="initial")
    context.close()
    assert not logged, f"the page logged errors: {logged}"
