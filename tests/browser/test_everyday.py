"""The everyday parts of the chat in Chromium (issue 13): where the focus goes, the keyboard, Markdown
while a reply streams, code blocks, the confirmation card, a failed model call, themes, and the page
without JavaScript."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import sign_in
from tests.conftest import make_account
from tests.fake_openai import ToolCall, Turn

DELETE_50 = ToolCall("delete_records", {"table_name": "users", "count": 50})
COUNT = ToolCall("count_records", {"table_name": "orders"})

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


def active_id(page) -> str:
    return page.evaluate("document.activeElement && (document.activeElement.id || document.activeElement.className)")


def send_first(page, text: str):
    """A blank chat, its first message (the chat is created with it: a page load)."""
    page.goto("/chats/new")
    box = page.locator("#composer-input")
    expect(box).to_be_focused()
    box.fill(text)
    with page.expect_navigation():
        box.press("Enter")


# --- Focus and keyboard ------------------------------------------------------------------------------

def test_focus_stays_in_the_box_after_send_then_moves_to_a_new_card_and_back_after_approve(page, fake_model):
    fake_model.script(Turn(text="Hello."), Turn(text="Deleting, once you approve.", tool_calls=[DELETE_50]),
                      Turn(text="Done."))
    send_first(page, "hi")
    expect(page.locator(".msg-assistant")).to_contain_text("Hello.")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    assert active_id(page) == "composer-input"

    box = page.locator("#composer-input")
    box.fill("Delete 50 old users")
    box.press("Enter")
    expect(box).to_have_value("")
    card = page.locator(".call-pending")
    expect(card).to_be_visible()
    # The box was empty, so the new card took the focus: Tab reaches Reject, then the named Approve.
    expect(card).to_be_focused()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Reject…"
    # htmx runs a swap's load events when it settles, so the load of the reply the card arrived in may
    # come after the card's own: the card took the focus once and does not take it back.
    page.evaluate("htmx.trigger(document.querySelector('.call-pending').closest('.msg'), 'htmx:load')")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Reject…"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Delete 50 rows"
    page.keyboard.press("Enter")
    expect(page.locator(".call-done")).to_be_visible()
    expect(box, "after a decision the focus is back in the message box").to_be_focused()
    expect(page.locator(".msg-assistant").last).to_contain_text("Done.")


def test_the_focus_comes_back_to_the_box_when_the_stream_shows_the_decision_before_its_answer(page, fake_model):
    fake_model.script(Turn(text="Shall I?", tool_calls=[DELETE_50]), Turn(text="Done."))
    send_first(page, "Delete 50 old users")
    card = page.locator(".call-pending")
    expect(card).to_be_focused()

    def answer_late(route):
        answer = route.fetch()  # decided on the server: the stream shows it meanwhile
        expect(page.locator(".call-done")).to_be_visible()
        route.fulfill(response=answer)

    page.route("**/approve", answer_late)
    card.press("a")
    expect(page.locator("#composer-input")).to_be_focused()
    expect(page.locator(".msg-assistant").last).to_contain_text("Done.")


def test_a_decision_answered_after_the_stream_showed_the_run_finish_leaves_the_page_current(page, fake_model):
    fake_model.script(Turn(text="Shall I?", tool_calls=[DELETE_50]), Turn(text="Done."), Turn(text="Next answer."))
    send_first(page, "Delete 50 old users")
    card = page.locator(".call-pending")
    expect(card).to_be_visible()
    page.reload()  # the count of approvals waiting is drawn with the page
    expect(page.locator("#approvals-link")).to_have_text("Approvals (1)")

    def answer_late(route):
        answer = route.fetch()  # the stream shows the run finish meanwhile
        expect(page.locator(".msg-assistant").last).to_contain_text("Done.")
        expect(page.get_by_role("button", name="Send")).to_be_visible()
        route.fulfill(response=answer)

    page.route("**/approve", answer_late)
    with page.expect_response("**/approve"):
        card.get_by_role("button", name="Delete 50 rows").click()
    page.wait_for_timeout(300)  # the late answer, had it been swapped in, would show the run still going
    expect(page.locator(".call-done")).to_contain_text("Deleted 50 records")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_have_count(0)
    expect(page.locator("#approvals-link"), "the count comes from the answer").to_have_text("Approvals")
    box = page.locator("#composer-input")
    box.fill("And now?")
    box.press("Enter")
    expect(page.locator(".msg-assistant").last).to_contain_text("Next answer.")


def test_a_message_answered_after_the_stream_showed_the_run_finish_leaves_the_page_current(page, fake_model):
    fake_model.script(Turn(text="Shall I?", tool_calls=[DELETE_50]), Turn(text="Understood, I kept them."),
                      Turn(text="Next answer."))
    send_first(page, "Delete 50 old users")
    expect(page.locator(".call-pending")).to_be_visible()

    def answer_late(route):
        answer = route.fetch()  # the message rejects the call; the stream shows the run finish meanwhile
        expect(page.locator(".msg-assistant").last).to_contain_text("Understood, I kept them.")
        expect(page.get_by_role("button", name="Send")).to_be_visible()
        route.fulfill(response=answer)

    page.route("**/messages", answer_late)
    box = page.locator("#composer-input")
    box.fill("No, keep them")
    with page.expect_response("**/messages"):
        box.press("Enter")
    page.unroute("**/messages")
    page.wait_for_timeout(300)  # the late answer, had it been swapped in, would show the run still going
    expect(box, "the message was sent: the box is cleared").to_have_value("")
    expect(page.locator(".call-rejected")).to_be_visible()
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_have_count(0)
    box.fill("And now?")
    box.press("Enter")
    expect(page.locator(".msg-assistant").last).to_contain_text("Next answer.")


def test_a_new_card_does_not_take_the_focus_from_someone_typing(page, fake_model):
    fake_model.script(Turn(text="Let me delete them.", tool_calls=[DELETE_50], token_delay=0.05))
    send_first(page, "Delete 50 old users")
    box = page.locator("#composer-input")
    box.type("actually, wait")
    expect(page.locator(".call-pending")).to_be_visible()
    assert active_id(page) == "composer-input"
    expect(box).to_have_value("actually, wait")


def test_keyboard_only_skip_link_shortcuts_panel_and_approve_with_a(page, fake_model, harness):
    fake_model.script(Turn(text="Shall I?", tool_calls=[DELETE_50]), Turn(text="Done."))
    before = harness.rows("users")
    send_first(page, "Delete 50 old users")
    card = page.locator(".call-pending")
    expect(card).to_be_focused()

    page.reload()
    expect(card).to_be_focused(), "a reload with a card waiting puts the focus on it"
    page.locator(".brand").click()  # start from the top of the page: the skip link is the first stop
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("link", name="Skip to the conversation")).to_be_focused()
    expect(page.get_by_role("link", name="Skip to the conversation")).to_be_in_viewport()
    page.keyboard.press("Enter")
    assert active_id(page) == "conversation"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Reject…", \
        "one Tab from the skip link to the card, not eight through the sidebar"

    page.keyboard.press("?")
    panel = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(panel).to_be_visible()
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()

    page.keyboard.press("/")
    assert active_id(page) == "composer-input"
    card.focus()
    page.keyboard.press("r")
    expect(card.locator("textarea[name=reason]")).to_be_focused()
    expect(card.locator("textarea[name=reason]")).to_be_in_viewport()
    card.focus()
    page.keyboard.press("a")
    expect(page.locator(".call-done")).to_be_visible()
    assert harness.rows("users") == before - 50


def test_escape_stops_the_agent(page, fake_model):
    fake_model.script(Turn(text=" ".join(f"word{i}" for i in range(200)), token_delay=0.05))
    send_first(page, "Talk for a while")
    expect(page.locator(".msg-assistant .msg-text")).to_contain_text("word5")
    box = page.locator("#composer-input")
    box.type("next question")
    box.press("Enter")  # waits: the agent is working, and the hint says so
    expect(page.locator("#composer-hint")).to_have_class(re.compile("nudge"))
    expect(box).to_have_value("next question")
    page.keyboard.press("Escape")
    expect(page.locator("#run-status")).to_contain_text("Stopped.")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(box).to_have_value("next question"), "what was typed meanwhile survives every swap"


# --- Markdown while streaming, code, copy -------------------------------------------------------------

NO_SYNTAX = """() => {
  window.__seen = [];
  const check = () => document.querySelectorAll('.msg-assistant .msg-text').forEach(el => {
    const text = el.textContent;
    if (/\\*\\*|```|^\\s*- /m.test(text)) window.__seen.push(text);
  });
  new MutationObserver(check).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_markdown_is_rendered_while_streaming_and_after_stop(page, fake_model):
    reply = ("Here is **the plan**:\n\n- count the rows\n- delete **50** of them\n\n"
             + " ".join(f"more{i}" for i in range(600)))  # still streaming when stopped
    fake_model.script(Turn(text=reply, token_delay=0.04))
    page.add_init_script(f"document.addEventListener('DOMContentLoaded', {NO_SYNTAX})")
    send_first(page, "Plan it")
    text = page.locator(".msg-assistant .msg-text")
    expect(text.locator("strong").first).to_have_text("the plan")
    expect(text.locator("li")).to_have_count(2)
    expect(text).to_contain_text("more3")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#run-status")).to_contain_text("Stopped.")
    expect(text.locator("strong").first).to_have_text("the plan"), "after Stop the reply stays rendered"
    assert page.evaluate("window.__seen") == [], "Markdown syntax was on screen"


def test_words_stream_in_while_the_status_line_stays_put(page, fake_model):
    # Long enough to be still writing when checked, however slow the machine: stopped at the end.
    fake_model.script(Turn(text=" ".join(f"w{i}" for i in range(1000)), token_delay=0.03))
    send_first(page, "Talk to me")
    expect(page.locator("#run-status")).to_contain_text("Writing…")
    status = page.locator("#run-status").element_handle()
    text = page.locator(".msg-assistant .msg-text")
    expect(text).to_contain_text("w10")
    expect(text).to_contain_text("w40")  # many updates later
    # Each update re-sends the same status line; swapping it in again would restart its animation.
    assert status.evaluate("element => element.isConnected"), "the status line was replaced by an update"
    assert "Writing…" in status.inner_text()
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#run-status")).to_contain_text("Stopped.")


def test_a_busy_browser_handling_several_updates_at_once_keeps_the_status_line(page, fake_model):
    fake_model.script(Turn(text=" ".join(f"w{i}" for i in range(1000)), token_delay=0.03))
    send_first(page, "Talk to me")
    expect(page.locator("#run-status")).to_contain_text("Writing…")
    status = page.locator("#run-status").element_handle()
    for _ in range(5):
        # Updates come every 30 ms: while the page is busy they queue up, then are handled back to back.
        page.evaluate("() => { const end = Date.now() + 250; while (Date.now() < end) {} }")
    expect(page.locator(".msg-assistant .msg-text")).to_contain_text("w40")
    assert status.evaluate("element => element.isConnected"), "the status line was replaced by an update"
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#run-status")).to_contain_text("Stopped.")


def test_code_is_highlighted_and_copied(page, fake_model):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    fake_model.script(Turn(text="Try this:\n\n```python\ndef total(rows):\n    return len(rows)\n```\n\nThat's all."))
    send_first(page, "Show me code")
    block = page.locator(".msg-assistant .code-block")
    expect(block.locator("pre.hl .k").first).to_have_text("def")
    block.hover()
    block.get_by_role("button", name="Copy code").click()
    expect(block.get_by_role("button", name="Copy code")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "def total(rows):\n    return len(rows)\n"
    page.get_by_role("button", name="Copy reply").click()
    assert page.evaluate("navigator.clipboard.readText()").startswith("Try this:")


def test_what_the_agent_is_doing_is_shown(page, fake_model):
    fake_model.script(Turn(tool_calls=[COUNT], delay=0.8), Turn(text="Orders counted.", delay=0.5))
    page.goto("/chats/new")
    page.locator("#composer-input").fill("How many orders?")
    with page.expect_navigation():
        page.locator("#composer-input").press("Enter")
    status = page.locator("#run-status")
    expect(status).to_contain_text(re.compile("Thinking…|Calling count_records…"))
    expect(page.locator(".msg-assistant").last).to_contain_text("Orders counted.")
    expect(status.locator(".typing")).to_have_count(0)


# --- The card -------------------------------------------------------------------------------------

def test_the_card_names_a_destructive_action_and_says_who_decided_when(page, fake_model):
    long_message = "Please read this. " * 30
    fake_model.script(Turn(text="Two things.", tool_calls=[
        DELETE_50, ToolCall("send_notification", {"recipient": "alice@example.com", "message": long_message})]),
        Turn(text="Done."))
    send_first(page, "Delete and notify")
    delete, notify = page.locator(".call-pending").nth(0), page.locator(".call-pending").nth(1)
    approve = delete.get_by_role("button", name="Delete 50 rows")
    expect(approve).to_have_class(re.compile("btn-destructive"))
    assert approve.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(185, 28, 28)"
    expect(notify.get_by_role("button", name="Approve")).to_be_visible()
    fold = notify.locator("details.fold")
    expect(fold.locator("summary")).to_contain_text("Please read this.")
    expect(fold.locator("pre")).to_be_hidden()

    notify.get_by_text("Reject…").click()
    reason = notify.locator("textarea[name=reason]")
    expect(reason).to_be_focused()
    expect(reason).to_be_in_viewport()
    reason.fill("not now")
    notify.get_by_role("button", name="Reject", exact=True).click()
    expect(page.locator(".call-rejected")).to_contain_text(re.compile(r"Rejected by you at \d\d:\d\d"))
    expect(delete).to_be_focused(), "after a decision, the next card waiting for one"
    approve.click()
    expect(page.locator(".call-done")).to_contain_text(re.compile(r"Approved by you at \d\d:\d\d"))


def test_a_failed_model_call_says_so_once_per_run(page, fake_model):
    fail = Turn(status=500, error_message="upstream down", headers={"retry-after-ms": "10"})
    fake_model.script(fail, fail, fail, fail, Turn(text="Back again."))
    send_first(page, "hello?")
    notice = page.locator(".run-error")
    expect(notice).to_contain_text("The model could not be reached.")
    page.get_by_role("button", name="Retry").click()
    expect(notice).to_contain_text("The model could not be reached.")
    expect(page.locator(".run-error")).to_have_count(1)
    expect(page.get_by_text("The reply broke off here.")).to_have_count(0)
    expect(page.locator(".msg-assistant:visible")).to_have_count(0)
    page.reload()
    expect(page.locator(".run-error")).to_have_count(1)
    expect(page.locator(".msg-assistant:visible")).to_have_count(0)
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".msg-assistant:visible")).to_have_count(1)
    expect(page.locator(".msg-assistant:visible")).to_contain_text("Back again.")


# --- Themes ---------------------------------------------------------------------------------------

def test_the_theme_follows_the_system_until_chosen_and_is_remembered(page):
    page.emulate_media(color_scheme="dark")
    page.goto("/chats/new")
    background = "getComputedStyle(document.body).backgroundColor"
    assert page.evaluate(background) == "rgb(23, 23, 27)"
    toggle = page.locator("#theme-toggle")
    expect(toggle).to_have_text(re.compile("Auto"))
    toggle.click()
    expect(toggle).to_have_text(re.compile("Light"))
    assert page.evaluate(background) == "rgb(255, 255, 255)"
    page.reload()
    assert page.evaluate(background) == "rgb(255, 255, 255)", "the choice is remembered"
    toggle.click()
    expect(toggle).to_have_text(re.compile("Dark"))
    page.emulate_media(color_scheme="light")
    assert page.evaluate(background) == "rgb(23, 23, 27)"


# --- Without JavaScript ----------------------------------------------------------------------------

def test_without_javascript_send_wait_approve_and_stop_work_as_plain_forms(chromium, live_server, app, fake_model, harness):
    fake_model.script(Turn(text="Deleting once you approve.", tool_calls=[DELETE_50], delay=1.0),
                      Turn(text="Done without scripts."),
                      Turn(text=" ".join(f"w{i}" for i in range(400)), token_delay=0.05))
    before = harness.rows("users")
    context = chromium.new_context(base_url=live_server.url, java_script_enabled=False)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, make_account(app)[1])
        page.goto("/chats/new")
        page.locator("#composer-input").fill("Delete 50 old users")
        page.get_by_role("button", name="Send").click()
        # The working page refreshes itself until the run pauses.
        expect(page.locator("noscript")).to_have_count(1)
        expect(page.locator(".call-pending")).to_be_visible(timeout=20_000)
        page.get_by_role("button", name="Delete 50 rows").click()
        expect(page.locator(".msg-assistant").last).to_contain_text("Done without scripts.", timeout=20_000)
        assert harness.rows("users") == before - 50

        page.locator("#composer-input").fill("Talk for a long while")
        page.get_by_role("button", name="Send").click()
        page.get_by_role("button", name="Stop").click()
        expect(page.locator("#run-status")).to_contain_text("Stopped.", timeout=20_000)
        expect(page.locator("noscript")).to_have_count(0)
    finally:
        context.close()


# --- Conversations ---------------------------------------------------------------------------------

def test_rename_delete_with_undo_and_search_in_the_sidebar(page, fake_model):
    fake_model.script(Turn(text="There are 1,200 users."), Turn(text="Orders: 3,000."))
    send_first(page, "count the users")
    expect(page.locator(".msg-assistant")).to_contain_text("1,200")
    send_first(page, "count the orders")
    expect(page.locator(".msg-assistant")).to_contain_text("3,000")
    links = page.locator(".chat-link")
    expect(links).to_have_count(2)
    expect(page.locator(".chat-group").first).to_have_text("Today")

    page.locator("#chat-menu summary").click()
    title = page.get_by_label("Title")
    title.fill("Order count")
    title.press("Enter")
    expect(page.locator("#chat-title")).to_have_text("Order count")
    expect(page.locator(".chat-link.current")).to_have_text(re.compile(r"^Order count(Data Manager)?$"))  # its agent named: two built in

    search = page.get_by_label("Search chats")
    search.fill("1,200")  # what was said, not the title
    expect(links).to_have_count(1)
    expect(links.first).to_have_text(re.compile(r"^count the users(Data Manager)?$"))
    search.fill("")
    expect(links).to_have_count(2)

    page.locator("#chat-menu summary").click()
    expect(page.get_by_role("link", name="Export as Markdown")).to_have_attribute("href", re.compile(r"/export\.md$"))
    with page.expect_navigation():
        page.get_by_role("button", name="Delete chat…").click()
    expect(page.locator("#flash")).to_contain_text("Deleted “Order count”.")
    expect(links).to_have_count(1)
    with page.expect_navigation():
        page.get_by_role("button", name="Undo").click()
    expect(page.locator("#chat-title")).to_have_text("Order count")
    expect(links).to_have_count(2)


def test_the_view_follows_the_stream_unless_scrolled_up_then_offers_jump_to_latest(page, fake_model):
    long_reply = "\n\n".join(f"Paragraph {i}: " + "words " * 30 for i in range(25))
    fake_model.script(Turn(text=long_reply, token_delay=0.02))
    page.set_viewport_size({"width": 1000, "height": 600})
    send_first(page, "Write a lot")
    box = page.locator("#conversation")
    at_bottom = "b => b.scrollHeight - b.scrollTop - b.clientHeight < 80"
    expect(page.locator(".msg-assistant .msg-text")).to_contain_text("Paragraph 4", timeout=15_000)
    assert box.evaluate(at_bottom), "it follows the reply"
    # An update that comes before the scroll is reported (it is, with the next frame) leaves it be.
    box.evaluate("b => { b.scrollTop = 0; b.dispatchEvent(new CustomEvent('htmx:sseMessage', {bubbles: true})); }")
    assert box.evaluate("b => b.scrollTop") == 0
    jump = page.get_by_role("button", name="Jump to latest")
    expect(jump).to_be_visible()
    page.wait_for_timeout(500)
    expect(page.locator("#run-status")).to_contain_text("Writing…")
    assert box.evaluate("b => b.scrollTop") == 0, "scrolled up: the reply does not pull the view down"
    jump.click()
    expect(jump).to_be_hidden()
    assert box.evaluate(at_bottom)


def test_regenerate_and_edit_the_last_message(page, fake_model):
    fake_model.script(Turn(text="A weak answer."), Turn(text="A better answer."), Turn(text="Orders: 3,000."))
    send_first(page, "count the users")
    expect(page.locator(".msg-assistant")).to_contain_text("A weak answer.")
    regenerate = page.get_by_role("button", name="Regenerate")
    expect(regenerate).to_have_count(1)
    with page.expect_navigation():
        regenerate.click()
    expect(page.locator(".msg-assistant").last).to_contain_text("A better answer.")
    expect(page.locator(".msg-superseded")).to_have_count(2)
    expect(page.get_by_role("button", name="Regenerate")).to_have_count(1)
    assert active_id(page) == "composer-input"

    edit = page.locator(".msg-user").last.locator("details.edit")
    edit.locator("summary").click()
    box = edit.get_by_label("Edit your message")
    box.fill("count the orders")
    with page.expect_navigation():
        edit.get_by_role("button", name="Send edited").click()
    expect(page.locator(".msg-assistant").last).to_contain_text("Orders: 3,000.")
    expect(page.locator(".msg-user").last.locator(".bubble")).to_have_text("count the orders")
    expect(page.locator(".msg-superseded")).to_have_count(4)
