"""Managing chats over HTTP: rename, delete with undo, search by title and content, export as Markdown
and JSON, long chats a page at a time, the sidebar's date groups; always only one's own chats."""
from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

import sqlalchemy as sa

from app import chats
from app.extensions import db
from app.models import ChatSession, Message
from tests.conftest import Browser
from tests.fake_openai import ToolCall, Turn


def chat_with(browser, harness, text: str) -> str:
    sent = browser.post("/chats", {"message": text})
    chat = sent.headers["HX-Redirect"].rsplit("/", 1)[-1]
    harness.wait(harness.latest_run(chat))
    return chat


def titles(browser, path="/chats/new") -> list[str]:
    # A link names its chat's agent after the title when there are several agents (the built-in two).
    return re.findall(r'class="chat-link[^"]*"[^>]*>([^<]*)(?:<span class="chat-agent">[^<]*</span>)?</a>',
                      browser.get(path).data.decode())


def test_rename_inline(browser, harness, fake_model):
    fake_model.script(Turn(text="ok"))
    chat = chat_with(browser, harness, "count the users")
    renamed = browser.post(f"/chats/{chat}/title", {"title": "  Users   audit "})
    assert renamed.status_code == 200 and b'id="chat-title">Users audit<' in renamed.data
    assert b'hx-swap-oob="true"' in renamed.data and titles(browser) == ["Users audit"]
    refused = browser.post(f"/chats/{chat}/title", {"title": "   "})
    assert refused.status_code == 422 and b"A chat needs a title." in refused.data
    assert titles(browser) == ["Users audit"]


def test_delete_then_undo_and_only_ones_own(app, browser, harness, fake_model):
    fake_model.script(Turn(text="ok"), Turn(text="ok"))
    keep, gone = chat_with(browser, harness, "keep me"), chat_with(browser, harness, "delete me")
    stranger = Browser(app)
    assert stranger.post(f"/chats/{gone}/delete").status_code == 404
    deleted = browser.post(f"/chats/{gone}/delete")
    assert deleted.status_code == 204 and deleted.headers["HX-Redirect"] == f"/chats/new?deleted={gone}"
    page = browser.get(deleted.headers["HX-Redirect"]).data.decode()
    assert "Deleted “delete me”." in page and f"/chats/{gone}/restore" in page
    assert titles(browser) == ["keep me"] and browser.get(f"/chats/{gone}").status_code == 404
    assert stranger.post(f"/chats/{gone}/restore", htmx=False).status_code == 404
    restored = browser.post(f"/chats/{gone}/restore", htmx=False)
    assert restored.status_code == 303 and restored.headers["Location"].endswith(gone)
    assert sorted(titles(browser)) == ["delete me", "keep me"]
    assert keep in browser.get("/").headers["Location"] or gone in browser.get("/").headers["Location"]


def test_a_chat_trashed_long_ago_is_purged(app, browser, harness, fake_model):
    fake_model.script(Turn(text="ok"), Turn(text="ok"))
    old, new = chat_with(browser, harness, "old"), chat_with(browser, harness, "new")
    browser.post(f"/chats/{old}/delete")
    with app.app_context():
        db.session.execute(sa.update(ChatSession).where(ChatSession.id == old)
                           .values(deleted_at=datetime.now(timezone.utc) - timedelta(hours=2)))
        db.session.commit()
    browser.post(f"/chats/{new}/delete")
    with app.app_context():
        assert db.session.get(ChatSession, old) is None, "purged"
        assert db.session.get(ChatSession, new).deleted_at is not None, "still restorable"


def test_a_chat_cannot_be_deleted_while_the_agent_answers(browser, fake_model):
    fake_model.script(Turn(text="slow " * 100, token_delay=0.05))
    chat = browser.post("/chats", {"message": "talk"}).headers["HX-Redirect"].rsplit("/", 1)[-1]
    busy = browser.post(f"/chats/{chat}/delete")
    assert busy.status_code == 409 and b"Stop it first" in busy.data


def test_search_by_title_and_by_content(app, browser, harness, fake_model):
    fake_model.script(Turn(text="There are 1,200 users."), Turn(text="Orders: 3,000."), Turn(text="100% sure"))
    users = chat_with(browser, harness, "count the users")
    orders = chat_with(browser, harness, "count the orders")
    chat_with(browser, harness, "how sure?")
    found = browser.get("/chats/search?q=USERS", headers={"HX-Request": "true"}).data.decode()
    assert f"/chats/{users}" in found and f"/chats/{orders}" not in found, "by title, any case"
    found = browser.get("/chats/search?q=3,000", headers={"HX-Request": "true"}).data.decode()
    assert f"/chats/{orders}" in found and f"/chats/{users}" not in found, "by what was said"
    assert titles(browser, "/chats/search?q=100%25") == ["how sure?"], "% is a character, not a wildcard"
    assert "No chat mentions “nothing here”." in browser.get("/chats/search?q=nothing+here").data.decode()
    assert Browser(app).get("/chats/search?q=count").data.count(b"chat-link") == 0, "only one's own"


def test_export_as_markdown_and_json(app, browser, harness, fake_model):
    fake_model.script(Turn(text="I'll **delete** them.", tool_calls=[ToolCall("delete_records", {"table_name": "users", "count": 5})]),
                      Turn(text="Kept them."))
    chat = chat_with(browser, harness, "delete 5 users")
    page = browser.get(f"/chats/{chat}").data.decode()
    run, call = re.search(r"/runs/(run_\w+)/calls/(tc_\w+)/reject", page).groups()
    browser.post(f"/runs/{run}/calls/{call}/reject", {"reason": "not today"})
    harness.wait(run, "completed")

    md = browser.get(f"/chats/{chat}/export.md")
    assert md.mimetype == "text/markdown" and 'filename="delete_5_users.md"' in md.headers["Content-Disposition"]
    text = md.data.decode()
    assert text.startswith("# delete 5 users") and "I'll **delete** them." in text
    assert "`delete_records` — rejected" in text and "Reason: not today" in text and "Kept them." in text

    data = json.loads(browser.get(f"/chats/{chat}/export.json").data)
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "assistant"]
    assert data["messages"][1]["tool_calls"][0] | {"decided_at": None} == {
        "name": "delete_records", "arguments": {"table_name": "users", "count": 5}, "status": "rejected",
        "decided_by": "user", "decided_at": None, "decider": browser.email, "reason": "not today", "result": None,
        "error": None}
    assert Browser(app).get(f"/chats/{chat}/export.json").status_code == 404


def test_a_long_chat_shows_its_latest_messages_and_loads_older_ones(app, browser, harness, fake_model):
    fake_model.script(Turn(text="ok"))
    chat = chat_with(browser, harness, "message 0")
    with app.app_context():
        for i in range(1, 100):
            db.session.add(Message(session_id=chat, role="user", content=f"message {i}", state="done"))
        db.session.commit()
    page = browser.get(f"/chats/{chat}").data.decode()
    shown = re.findall(r"message (\d+)</div>", page)
    assert shown == [str(i) for i in range(60, 100)]
    older = re.search(r'hx-get="(/chats/[^"]+/older\?before=\d+)"', page).group(1)
    more = browser.get(older.replace("&amp;", "&"), headers={"HX-Request": "true"}).data.decode()
    assert re.findall(r"message (\d+)</div>", more) == [str(i) for i in range(20, 60)]
    last = re.search(r'hx-get="(/chats/[^"]+/older\?before=\d+)"', more).group(1)
    rest = browser.get(last, headers={"HX-Request": "true"}).data.decode()
    assert "older?before" not in rest and "message 1</div>" in rest
    assert browser.get(f"/chats/{chat}/older?before=x").status_code == 422
    assert Browser(app).get(last).status_code == 404


def test_chats_are_grouped_by_date():
    today = date(2026, 12, 3)
    at = lambda days: SimpleNamespace(updated_at=datetime(2026, 12, 3, 9) - timedelta(days=days))
    items = [at(0), at(1), at(3), at(20), at(45), at(80)]
    groups = chats.group_by_date(items, today)
    assert [(label, len(group)) for label, group in groups] == [
        ("Today", 1), ("Yesterday", 1), ("Previous 7 days", 1), ("Previous 30 days", 1),
        ("October 2026", 1), ("September 2026", 1)]


def test_a_message_moves_its_chat_to_the_top_of_the_sidebar_which_is_sent_only_when_it_changes(browser, harness,
                                                                                                fake_model):
    fake_model.script(Turn(text="ok"), Turn(text="ok"), Turn(text="ok"), Turn(text="ok"))
    older = chat_with(browser, harness, "older chat")
    chat_with(browser, harness, "newer chat")
    moved = browser.post(f"/chats/{older}/messages", {"message": "again"}).data.decode()
    listed = re.findall(r'class="chat-link[^"]*"[^>]*>([^<]*)', moved)
    assert 'id="chat-list"' in moved and listed == ["older chat", "newer chat"], "the answer moves it to the top"
    harness.wait(harness.latest_run(older))
    again = browser.post(f"/chats/{older}/messages", {"message": "once more"}).data.decode()
    assert 'id="run-status"' in again and 'id="chat-list"' not in again, "already on top: the list stays as it is"
    assert titles(browser) == ["older chat", "newer chat"]
