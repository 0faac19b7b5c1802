"""What a person sees in Chromium: streamed replies, the inline confirmation card, approve, reject
with a reason, and reloads at any moment."""
from __future__ import annotations

import re


import pytest
from playwright.sync_api import expect

from tests.fake_openai import ToolCall, Turn

DELETE_50 = ToolCall("delete_records", {"table_name": "users", "count": 50})
REPLY = "I will delete the 50 oldest records from the users table once you approve it."

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


def open_new_chat(page):
    """Click through to a blank chat and wait for its page to load (scripts are deferred: Enter only
    sends once app.js is there)."""
    with page.expect_navigation():
        page.get_by_role("link", name="+ New chat").click()
    expect(page.locator("#composer-input")).to_be_enabled()


# Every text the first reply showed, in order, and whether Stop was offered meanwhile: checked afterwards,
# so a slow check cannot miss them.
RECORD_THE_REPLY_AS_SHOWN = """
window.replyAsShown = [];
window.stopShown = false;
new MutationObserver(function () {
  var reply = document.querySelector(".msg-assistant .msg-text");
  var shown = reply ? reply.textContent : "";
  if (shown !== window.replyAsShown[window.replyAsShown.length - 1]) window.replyAsShown.push(shown);
  if (reply && document.querySelector(".btn-stop")) window.stopShown = true;
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def start_chat(page, message: str):
    """Type the first message into a blank chat: the chat is created with it (a full page load)."""
    page.goto("/chats/new")
    expect(page.locator("#composer-input")).to_be_focused()
    page.locator("#composer-input").fill(message)
    with page.expect_navigation():
        page.locator("#composer-input").press("Enter")


def test_stream_card_approve_result(page, fake_model, harness):
    fake_model.script(Turn(text=REPLY, tool_calls=[DELETE_50], token_delay=0.06),
                      Turn(text="Done: 50 old users are gone.", token_delay=0.02))
    before = harness.rows("users")
    page.add_init_script(RECORD_THE_REPLY_AS_SHOWN)
    start_chat(page, "Delete 50 old records from the users table")

    expect(page.locator(".msg-user .bubble")).to_have_text("Delete 50 old records from the users table")
    text = page.locator(".msg-assistant .msg-text").first
    expect(text).to_contain_text("I will delete")

    card = page.locator(".call-pending")
    expect(card).to_be_visible()
    expect(card).to_contain_text("delete_records")
    expect(card.locator("dd").first).to_have_text("users")
    expect(card).to_contain_text(f"Deletes the 50 oldest of {before:,} rows in users.")
    expect(text).to_have_text(REPLY)
    shown = [t.strip() for t in page.evaluate("window.replyAsShown")]
    assert len([t for t in shown if t and t != REPLY]) >= 2, f"the reply arrives in pieces, not at once: {shown}"
    assert page.evaluate("window.stopShown"), "while the reply streamed, Stop was offered"
    assert harness.rows("users") == before

    card.get_by_role("button", name="Delete 50 rows").click()
    done = page.locator(".call-done")
    expect(done).to_contain_text(f"Deleted 50 records from users. {before - 50:,} remain.")
    expect(page.locator(".msg-assistant").last).to_contain_text("Done: 50 old users are gone.")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    assert harness.rows("users") == before - 50


def test_reject_with_a_reason_and_read_the_answer(page, fake_model, harness):
    fake_model.script(Turn(text="Deleting now.", tool_calls=[DELETE_50]),
                      Turn(text="Understood, I kept the users table as it is."))
    before = harness.rows("users")
    start_chat(page, "Delete 50 old records from the users table")

    card = page.locator(".call-pending")
    card.get_by_text("Reject…").click()
    card.locator("textarea[name=reason]").fill("we still need them for the audit")
    card.get_by_role("button", name="Reject", exact=True).click()

    rejected = page.locator(".call-rejected")
    expect(rejected).to_contain_text("we still need them for the audit")
    expect(page.locator(".msg-assistant").last).to_contain_text("Understood, I kept the users table as it is.")
    assert fake_model.requests[-1].tool_outputs()[0][1] == "Rejected by the user: we still need them for the audit"
    assert harness.rows("users") == before


def test_reload_while_the_card_waits_then_approve(page, fake_model, harness):
    fake_model.script(Turn(text="This needs your approval.", tool_calls=[DELETE_50]),
                      Turn(text="All done after the reload."))
    before = harness.rows("users")
    start_chat(page, "Delete 50 old records from the users table")
    expect(page.locator(".call-pending")).to_be_visible()

    page.reload()
    card = page.locator(".call-pending")
    expect(card).to_be_visible()
    expect(page.locator(".msg-assistant .msg-text").first).to_have_text("This needs your approval.")
    expect(page.locator("#run-status")).to_contain_text("Waiting for your approval.")
    card.get_by_role("button", name="Delete 50 rows").click()
    expect(page.locator(".call-done")).to_be_visible()
    expect(page.locator(".msg-assistant").last).to_contain_text("All done after the reload.")
    page.reload()
    expect(page.locator(".call-done")).to_contain_text("Deleted 50 records")
    expect(page.locator(".msg-assistant")).to_have_count(2)
    assert harness.rows("users") == before - 50


def test_reload_mid_stream_shows_every_word_once(page, fake_model):
    words = " ".join(f"word{i}" for i in range(60))
    fake_model.script(Turn(text=words, token_delay=0.05))
    start_chat(page, "Say sixty words")
    expect(page.locator(".msg-assistant .msg-text")).to_contain_text("word10")
    page.reload()
    expect(page.locator(".msg-assistant .msg-text")).to_have_text(words, timeout=20_000)
    expect(page.get_by_role("button", name="Send")).to_be_visible()


RECORD_THE_STREAMS_UPDATES = """
window.streamUpdates = [];
document.addEventListener("htmx:sseBeforeMessage", function (event) { window.streamUpdates.push(event.detail.data); });
"""


def test_a_long_paragraph_streams_as_the_words_added_and_shows_each_word_once(page, fake_model):
    words = " ".join(f"word{i}" for i in range(80))
    fake_model.script(Turn(text=words, token_delay=0.03))
    page.add_init_script(RECORD_THE_REPLY_AS_SHOWN)
    page.add_init_script(RECORD_THE_STREAMS_UPDATES)
    start_chat(page, "Say eighty words")
    reply = page.locator(".msg-assistant .msg-text")
    expect(reply).to_have_text(words, timeout=20_000)
    expect(page.get_by_role("button", name="Send")).to_be_visible()

    shown = [t.strip() for t in page.evaluate("window.replyAsShown")]
    assert all(words.startswith(t) for t in shown), "every word once, in order, at every moment"
    assert len([t for t in shown if t and t != words]) >= 5, shown
    added = [u for u in page.evaluate("window.streamUpdates") if "data-at=" in u]
    assert len(added) >= 5 and all(len(u) < 200 for u in added), "most updates carry only the new words"

    # Words that say they follow a paragraph of another length are not added (a second stream of the
    # run would send them again); words that fit are.
    message = reply.get_attribute("id")
    page.evaluate("""([id, at]) => {
        const oob = (at, words) => `<span hx-swap-oob="beforeend:#${id} > p:last-child" data-at="${at}">${words}</span>`;
        htmx.swap(document.body, oob(at - 7, " stale"), {swapStyle: "none"});
        htmx.swap(document.body, oob(at, " fits"), {swapStyle: "none"});
    }""", [message, len(words)])
    expect(reply).to_have_text(words + " fits")


def test_sidebar_lists_and_switches_chats(page, fake_model):
    fake_model.script(Turn(text="First answer."), Turn(text="Second answer."))
    start_chat(page, "first question")
    expect(page.locator(".msg-assistant")).to_contain_text("First answer.")
    open_new_chat(page)
    page.locator("#composer-input").fill("second question")
    with page.expect_navigation():
        page.locator("#composer-input").press("Enter")
    expect(page.locator(".msg-assistant")).to_contain_text("Second answer.")
    links = page.locator(".chat-link")
    expect(links).to_have_count(2)
    page.get_by_role("link", name="first question").click()
    expect(page.locator(".msg-assistant")).to_contain_text("First answer.")
    expect(page.locator(".chat-link.current")).to_have_text(re.compile(r"^first question(Data Manager)?$"))  # its agent named: two built in


def test_shift_enter_makes_a_newline_and_enter_sends(page, fake_model):
    fake_model.script(Turn(text="Got both lines."))
    page.goto("/chats/new")
    box = page.locator("#composer-input")
    box.type("line one")
    box.press("Shift+Enter")
    box.type("line two")
    expect(box).to_have_value("line one\nline two")
    with page.expect_navigation():
        box.press("Enter")
    expect(page.locator(".msg-user .bubble")).to_have_text("line one\nline two")
    expect(page.locator(".msg-assistant")).to_contain_text("Got both lines.")
    expect(box).to_have_value("")
