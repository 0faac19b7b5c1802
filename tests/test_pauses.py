"""Every kind of pause on the card, over HTTP (Flask's test client), on SQLite and PostgreSQL: edit then
approve, ask for input, hand over, and a preview that changed between the card and the approval."""
from __future__ import annotations

import html as htmllib
import json
import re

import sqlalchemy as sa

from app.agent.context import build_context
from app.extensions import db
from tests.fake_openai import ToolCall, Turn


def open_chat(browser, agent_id: str = "ops_desk") -> str:
    response = browser.post("/chats", {"agent_id": agent_id}, htmx=False)
    assert response.status_code == 303
    return response.headers["Location"].rsplit("/", 1)[-1]


def pause(browser, harness, fake_model, call: ToolCall, agent_id: str = "ops_desk") -> tuple[str, str, str]:
    """A chat whose run waits on `call`: (chat, run id, call's row id)."""
    fake_model.script(Turn(text="On it.", tool_calls=[call]), Turn(text="Finished."))
    chat = open_chat(browser, agent_id)
    browser.post(f"/chats/{chat}/messages", {"message": "go"})
    run_id = harness.latest_run(chat)
    harness.wait(run_id, "paused")
    [row] = harness.calls(run_id)
    return chat, run_id, row.id


def seen_of(page: str, call_id: str) -> str:
    card = page[page.index(f'id="call-{call_id}"'):]
    return re.search(r'name="seen" value="([0-9a-f]+)"', card).group(1)


def test_edit_validates_previews_again_then_runs_as_shown_and_tells_the_model(app, browser, harness, fake_model):
    chat, run_id, call_id = pause(browser, harness, fake_model,
                                  ToolCall("delete_records", {"table_name": "users", "count": 50}))
    page = browser.get(f"/chats/{chat}").data.decode()
    assert 'name="arg.count"' in page and 'type="number"' in page and 'max="10000"' in page and 'min="0"' in page
    assert '<select id="call-%s-table_name" name="arg.table_name" required>' % call_id in page
    before = harness.rows("users")

    bad = browser.post(f"/runs/{run_id}/calls/{call_id}/edit", {"arg.table_name": "users", "arg.count": "10x",
                                                                 "seen": seen_of(page, call_id)})
    assert bad.status_code == 422 and "count: expected a whole number" in bad.data.decode()
    assert 'value="10x"' in bad.data.decode(), "what was typed comes back"
    too_many = browser.post(f"/runs/{run_id}/calls/{call_id}/edit", {"arg.table_name": "users", "arg.count": "20000"})
    assert too_many.status_code == 422 and "less than or equal to 10000" in too_many.data.decode()
    assert 'value="20000"' in too_many.data.decode() and harness.calls(run_id)[0].arguments["count"] == 50

    edited = browser.post(f"/runs/{run_id}/calls/{call_id}/edit", {"arg.table_name": "users", "arg.count": "10"})
    text = htmllib.unescape(edited.data.decode())
    assert edited.status_code == 200 and "Deletes the 10 oldest of" in text and "Delete 10 rows" in text
    assert "<del>50</del> → <ins>10</ins>" in text
    [row] = harness.calls(run_id)
    assert (row.status, row.arguments, row.original_arguments) == ("pending", {"table_name": "users", "count": 10},
                                                                    {"table_name": "users", "count": 50})

    stale = browser.post(f"/runs/{run_id}/calls/{call_id}/approve", {"seen": seen_of(page, call_id)})
    assert stale.status_code == 409 and harness.rows("users") == before, "an approval of the card before the edit"
    fresh = browser.get(f"/chats/{chat}").data.decode()
    assert browser.post(f"/runs/{run_id}/calls/{call_id}/approve", {"seen": seen_of(fresh, call_id)}).status_code == 200
    harness.wait(run_id, "completed")
    assert harness.rows("users") == before - 10
    with app.app_context():
        told = [item.content for item in build_context(chat) if item.role == "tool"]
    assert told[0].startswith("The person edited the arguments: count: 50 → 10.\nDeleted 10 records")
    page = browser.get(f"/chats/{chat}").data.decode()
    assert "Edited and approved by you" in page and "<del>50</del>" in page
    [record] = [json.loads(line) for line in browser.get("/audit.jsonl").get_data(as_text=True).splitlines()]
    assert (record["arguments"]["count"], record["original_arguments"]["count"]) == (10, 50)
    assert record["changed"] == ["count: 50 → 10"] and record["decision"] == "approved"
    assert "Edited: count: 50 → 10" in htmllib.unescape(browser.get("/audit").data.decode())


def test_a_tool_that_forbids_editing_has_no_edit_form_and_refuses_one(app, browser, harness, fake_model, monkeypatch):
    from tests.api.test_api_continue import GREETER
    monkeypatch.setitem(app.extensions["agents"]._agents, "greeter", GREETER)
    chat, run_id, call_id = pause(browser, harness, fake_model, ToolCall("wave", {"name": "Bob"}), "greeter")
    assert 'name="arg.name"' not in browser.get(f"/chats/{chat}").data.decode()
    refused = browser.post(f"/runs/{run_id}/calls/{call_id}/edit", {"arg.name": "Mallory"})
    assert refused.status_code == 422 and "does not allow editing" in refused.data.decode()
    assert harness.calls(run_id)[0].arguments == {"name": "Bob"}


def test_ask_for_input_shows_a_form_for_those_fields_and_runs_with_the_merged_arguments(app, browser, harness,
                                                                                       fake_model):
    chat, run_id, call_id = pause(browser, harness, fake_model,
                                  ToolCall("schedule_maintenance", {"table_name": "orders", "note": "Reindex."}))
    page = browser.get(f"/chats/{chat}").data.decode()
    assert "Needs your input" in page and 'name="arg.window"' in page and 'name="arg.table_name"' not in page
    assert "<option value=\"Saturday 06:00\"" in page and "Reindex." in page  # the model's values, read only
    [row] = harness.calls(run_id)
    assert (row.kind, row.status, row.arguments) == ("input", "pending", {"table_name": "orders", "note": "Reindex."})

    bad = browser.post(f"/runs/{run_id}/calls/{call_id}/input", {"arg.window": "whenever"})
    assert bad.status_code == 422 and "choose one of the options" in bad.data.decode()
    done = browser.post(f"/runs/{run_id}/calls/{call_id}/input", {"arg.window": "Saturday 06:00"})
    assert done.status_code == 200
    harness.wait(run_id, "completed")
    [row] = harness.calls(run_id)
    assert row.status == "done" and row.arguments["window"] == "Saturday 06:00"
    assert row.result.startswith("Maintenance of orders scheduled for Saturday 06:00.")
    assert harness.rows("outbox") == 1
    with app.app_context():
        told = [item.content for item in build_context(chat) if item.role == "tool"]
    assert told[0].startswith('The person filled in: window: "Saturday 06:00".')


def test_hand_over_takes_the_persons_result_and_never_runs_the_function(app, browser, harness, fake_model):
    chat, run_id, call_id = pause(browser, harness, fake_model,
                                  ToolCall("restart_service", {"service": "worker", "reason": "stuck"}))
    page = browser.get(f"/chats/{chat}").data.decode()
    assert "Over to you" in page and "This one is yours to do" in page and 'name="result"' in page
    bad = browser.post(f"/runs/{run_id}/calls/{call_id}/result", {"result": "{oops", "format": "json"})
    assert bad.status_code == 422 and "not valid JSON" in bad.data.decode() and "{oops" in bad.data.decode()
    done = browser.post(f"/runs/{run_id}/calls/{call_id}/result",
                        {"result": '{"restarted": true, "took_s": 4}', "format": "json"})
    assert done.status_code == 200
    harness.wait(run_id, "completed")
    [row] = harness.calls(run_id)
    assert (row.kind, row.status, row.result, row.error) == ("external", "done", '{"restarted": true, "took_s": 4}', None)
    with app.app_context():
        told = [item.content for item in build_context(chat) if item.role == "tool"]
    assert told == ['{"restarted": true, "took_s": 4}']
    assert "Handed back by you" in browser.get(f"/chats/{chat}").data.decode()


def test_a_preview_that_changed_asks_again_instead_of_running(app, browser, harness, fake_model):
    chat, run_id, call_id = pause(browser, harness, fake_model,
                                  ToolCall("delete_records", {"table_name": "users", "count": 50}), "data_manager")
    page = browser.get(f"/chats/{chat}").data.decode()
    before = harness.rows("users")
    with app.app_context():  # another run cuts the table meanwhile
        workspace = db.engines["workspace"]
        with workspace.begin() as conn:
            conn.execute(sa.text("DELETE FROM users WHERE id IN (SELECT id FROM users ORDER BY id LIMIT 100)"))
    shrunk = before - 100

    refused = browser.post(f"/runs/{run_id}/calls/{call_id}/approve", {"seen": seen_of(page, call_id)})
    text = htmllib.unescape(refused.data.decode())
    assert refused.status_code == 409 and "The preview changed" in text
    assert f"of {shrunk:,} rows in users" in text and "Delete 50 rows" in text
    [row] = harness.calls(run_id)
    assert row.status == "pending" and f"of {shrunk:,} rows" in row.preview and harness.rows("users") == shrunk
    again = browser.post(f"/runs/{run_id}/calls/{call_id}/approve", {"seen": seen_of(text, call_id)})
    assert again.status_code == 200
    harness.wait(run_id, "completed")
    assert harness.rows("users") == shrunk - 50
    second = browser.post(f"/runs/{run_id}/calls/{call_id}/approve", {"seen": seen_of(text, call_id)})
    assert second.status_code == 409 and harness.rows("users") == shrunk - 50, "a decision is single-use"


def test_a_card_shown_again_makes_its_preview_again_and_the_inbox_too(app, browser, harness, fake_model):
    chat, run_id, call_id = pause(browser, harness, fake_model,
                                  ToolCall("delete_records", {"table_name": "users", "count": 50}), "data_manager")
    before = harness.rows("users")
    assert f"of {before:,} rows in users" in htmllib.unescape(browser.get(f"/chats/{chat}").data.decode())
    with app.app_context(), db.engines["workspace"].begin() as conn:
        conn.execute(sa.text("DELETE FROM users WHERE id IN (SELECT id FROM users ORDER BY id LIMIT 10)"))
    page = htmllib.unescape(browser.get(f"/chats/{chat}").data.decode())
    assert f"of {before - 10:,} rows in users" in page and f"of {before:,} rows" not in page
    assert f"of {before - 10:,} rows" in harness.calls(run_id)[0].preview
    with app.app_context(), db.engines["workspace"].begin() as conn:
        conn.execute(sa.text("DELETE FROM users WHERE id IN (SELECT id FROM users ORDER BY id LIMIT 10)"))
    inbox = htmllib.unescape(browser.get("/approvals").data.decode())
    assert f"of {before - 20:,} rows in users" in inbox
    assert browser.post(f"/runs/{run_id}/calls/{call_id}/approve", {"seen": seen_of(inbox, call_id)}).status_code == 200
    harness.wait(run_id, "completed")
    assert harness.rows("users") == before - 70


def test_the_ops_desk_demo_lists_its_prompts_and_every_kind_of_pause(app):
    from app.agents.ops_desk import OPS_DESK, SUGGESTIONS
    kinds = {}
    for prompt in SUGGESTIONS:
        _, call = OPS_DESK.demo(prompt, {t.name for t in OPS_DESK.tools})
        kinds[call[0]] = OPS_DESK.tool(call[0]).kind
        assert OPS_DESK.tool(call[0]).validate_proposal(call[1]) is not None
    assert set(kinds.values()) == {"confirm", "input", "external"}
    with app.app_context():
        assert app.extensions["agents"].get("ops_desk") is OPS_DESK
