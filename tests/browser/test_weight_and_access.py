"""What the page weighs and who can use it, in Chromium: the first load's transferred bytes, cached
static files, no request leaving our origin, no CSP violation, and axe-core's accessibility checks on a
chat with a pending card in light and dark (and, with SCREENSHOTS_DIR set, the README's screenshots)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app.models import Role
from tests.browser.conftest import sign_in
from tests.conftest import make_account
from tests.fake_openai import ToolCall, Turn

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)

FIRST_LOAD_LIMIT = 40 * 1024
DELETE_50 = ToolCall("delete_records", {"table_name": "users", "count": 50})
CSP_WATCH = """window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"""
TRANSFERRED = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const resources = performance.getEntriesByType('resource');
  return {page: nav.transferSize, total: nav.transferSize + resources.reduce((n, r) => n + r.transferSize, 0),
          statics: resources.filter(r => r.name.includes('/static/')).map(r => [r.name, r.transferSize])};
}"""


def test_the_first_load_is_small_compressed_and_static_files_come_from_the_cache(page, live_server):
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.context.new_cdp_session(page).send("Network.clearBrowserCache")
    with page.expect_response(lambda r: r.url.endswith("/chats/new")) as first:
        page.goto("/chats/new")
    page.wait_for_load_state("load")
    assert first.value.headers.get("content-encoding") in ("br", "gzip")
    sizes = page.evaluate(TRANSFERRED)
    print(f"\nfirst load: {sizes['total']:,} bytes transferred (page {sizes['page']:,}); {sizes['statics']}")
    assert sizes["total"] <= FIRST_LOAD_LIMIT, sizes
    assert all(url.startswith(live_server.url) for url in requests), "no request leaves our origin"
    assert all("." in url.rsplit("/", 1)[-1] for url, _ in sizes["statics"])

    page.goto("/chats/new")
    page.wait_for_load_state("load")
    again = page.evaluate(TRANSFERRED)
    assert again["statics"] and all(size == 0 for _, size in again["statics"]), \
        f"immutable static files are not fetched again: {again['statics']}"


def axe_serious(page) -> list[str]:
    page.add_script_tag(url="/static/vendor/axe-core/axe.min.js")
    result = page.evaluate("""async () => {
      const r = await axe.run(document, {resultTypes: ['violations']});
      return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                         .map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ') + ' ' + (n.any[0] ? n.any[0].message : '')).slice(0, 5).join(' | '));
    }""")
    return result


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_chat_with_a_pending_card_passes_axe_and_logs_no_csp_violation(page, fake_model, scheme):
    page.add_init_script(CSP_WATCH)
    page.emulate_media(color_scheme=scheme)
    fake_model.script(Turn(text="I can delete the **50 oldest** users:\n\n```sql\nDELETE FROM users LIMIT 50;\n```\n\n"
                                "Approve below if that is what you want.", tool_calls=[DELETE_50]))
    page.goto("/chats/new")
    page.locator("#composer-input").fill("Delete 50 old records from the users table")
    with page.expect_navigation():
        page.locator("#composer-input").press("Enter")
    card = page.locator(".call-pending")
    expect(card).to_be_visible()
    expect(page.locator("#run-status")).to_contain_text("Waiting for your approval.")
    page.wait_for_timeout(400)  # the card's entrance animation has ended (contrast is measured on it)
    assert axe_serious(page) == []
    card.get_by_text("Reject…").click()
    assert axe_serious(page) == []
    card.get_by_text("Reject…").click()
    page.keyboard.press("?")
    assert axe_serious(page) == []
    page.keyboard.press("Escape")
    assert page.evaluate("window.__csp") == []

    shots = os.environ.get("SCREENSHOTS_DIR")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.locator("#composer-input").focus()
        page.screenshot(path=f"{shots}/screenshot-{scheme}.png", caret="initial")
        if scheme == "light":
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(200)
            page.screenshot(path=f"{shots}/screenshot-phone.png", caret="initial")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_approvals_inbox_passes_axe(chromium, live_server, app, fake_model, harness, scheme):
    """The approvals inbox lists every call waiting for a decision, as cards (an admin's: everyone's)."""
    fake_model.script(Turn(text="Shall I?", tool_calls=[DELETE_50]))
    owner, chat = harness.chat()
    harness.wait(harness.send(chat, "Delete 50 old users"), "paused")
    context = chromium.new_context(base_url=live_server.url, color_scheme=scheme)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        sign_in(page, make_account(app, role=Role.ADMIN)[1])
        page.goto("/approvals")
        expect(page.locator(".call-pending")).to_be_visible()
        page.wait_for_timeout(400)
        assert axe_serious(page) == []
        assert errors == []
    finally:
        context.close()
