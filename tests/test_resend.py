"""Regenerate the last reply and edit-and-resend the last message: the earlier exchange stays in the
chat (superseded) but leaves the model's context; refused while the agent works or after a confirmed
tool ran; only one's own chat."""
from __future__ import annotations

import re

import pytest

from tests.conftest import Browser
from tests.fake_openai import ToolCall, Turn

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


def first_exchange(browser, harness, text: str) -> tuple[str, str]:
    chat = browser.post("/chats", {"message": text}).headers["HX-Redirect"].rsplit("/", 1)[-1]
    run_id = harness.latest_run(chat)
    harness.wait(run_id)
    return chat, run_id


def user_texts(request) -> list[str]:
    """The person's messages the model was sent (the whole conversation or the chain's tail)."""
    items = request.body.get("input") or request.body.get("messages") or []
    texts = []
    for item in (items if isinstance(items, list) else [items]):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item["content"]
            texts.append(content if isinstance(content, str) else "".join(p.get("text", "") for p in content))
    return texts


def test_regenerate_answers_the_same_message_again_and_keeps_the_old_reply(app, browser, harness, fake_model):
    fake_model.script(Turn(text="A weak answer."), Turn(text="A better answer."))
    chat, first_run = first_exchange(browser, harness, "summarise the users table")
    regenerated = browser.post(f"/chats/{chat}/resend")
    assert regenerated.status_code == 204 and regenerated.headers["HX-Redirect"] == f"/chats/{chat}"
    new_run = harness.latest_run(chat)
    assert new_run != first_run
    harness.wait(new_run)
    assert harness.messages(chat) == [("user", "summarise the users table"), ("assistant", "A weak answer."),
                                      ("user", "summarise the users table"), ("assistant", "A better answer.")]
    page = browser.get(f"/chats/{chat}").data.decode()
    assert page.count("Earlier version") == 2 and "A weak answer." in page and "A better answer." in page
    assert "A weak answer." not in str(fake_model.requests[-1].body), "the superseded reply left the context"
    assert user_texts(fake_model.requests[-1]) == ["summarise the users table"]


def test_edit_and_resend_the_last_message(browser, harness, fake_model):
    fake_model.script(Turn(text="There are 1,200 users."), Turn(text="There are 3,000 orders."))
    chat, _ = first_exchange(browser, harness, "count the users")
    assert browser.post(f"/chats/{chat}/resend", {"message": "count the orders"}).status_code == 204
    new_run = harness.latest_run(chat)
    harness.wait(new_run)
    assert harness.messages(chat)[-2:] == [("user", "count the orders"), ("assistant", "There are 3,000 orders.")]
    assert user_texts(fake_model.requests[-1]) == ["count the orders"]
    refused = browser.post(f"/chats/{chat}/resend", {"message": "   "})
    assert refused.status_code == 422 and b"Type a message first." in refused.data
    assert harness.messages(chat)[-1] == ("assistant", "There are 3,000 orders."), "nothing changed"


def test_refused_while_a_card_waits_and_after_a_confirmed_tool_ran(browser, harness, fake_model):
    fake_model.script(Turn(text="Deleting.", tool_calls=[ToolCall("delete_records", {"table_name": "users", "count": 5})]),
                      Turn(text="Deleted."))
    chat, run_id = first_exchange(browser, harness, "delete 5 users")
    waiting = browser.post(f"/chats/{chat}/resend")
    assert waiting.status_code == 409 and b"decide its cards or press Stop" in waiting.data
    call = re.search(r"/calls/(tc_\w+)/approve", browser.get(f"/chats/{chat}").data.decode()).group(1)
    browser.post(f"/runs/{run_id}/calls/{call}/approve")
    harness.wait(run_id, "completed")
    ran = browser.post(f"/chats/{chat}/resend")
    assert ran.status_code == 409 and b"ran delete_records" in ran.data
    assert [role for role, _ in harness.messages(chat)] == ["user", "assistant", "assistant"]


def test_only_in_ones_own_chat(app, browser, harness, fake_model):
    fake_model.script(Turn(text="ok"))
    chat, run_id = first_exchange(browser, harness, "hello")
    before = harness.messages(chat)
    assert Browser(app).post(f"/chats/{chat}/resend").status_code == 404
    assert Browser(app).post(f"/chats/{chat}/resend", {"message": "someone else's words"}).status_code == 404
    assert (harness.latest_run(chat), harness.messages(chat)) == (run_id, before), "nothing started, nothing superseded"
