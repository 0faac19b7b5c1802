"""The API and the browser share one ledger: a run paused over the API has its card in the chat page and
can be decided there, a run paused in the browser can be continued over the API, and an open page
follows a decision made over the API live.

One account, two faces: the service key acts for the person signed in to the browser by naming their
email as `user_id` (a personal token does the same without naming anyone: tests/api/test_api_tokens.py).
"""
from __future__ import annotations

import re
import threading

from tests.api.apiclient import DELETE_50, documented, paused
from tests.fake_openai import Turn


def chat_id_of(harness, run_id: str) -> str:
    return harness.run(run_id).session_id


def test_a_run_paused_over_the_api_is_decided_in_the_browser(app, api, browser, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Deleted, as you approved in the chat."))
    run = paused(api, user_id=browser.email, session_id="from-a-script")
    before = harness.rows("users")

    page = browser.get(f"/chats/{chat_id_of(harness, run['run_id'])}").data.decode()
    assert "Needs your approval" in page and "Deletes the 50 oldest of" in page
    run_id, call_id = re.search(r"/runs/(run_\w+)/calls/(tc_\w+)/approve", page).groups()
    assert run_id == run["run_id"]
    assert browser.post(f"/runs/{run_id}/calls/{call_id}/approve").status_code == 200

    done = harness.wait(run_id, "completed", "failed")
    assert done.status == "completed" and harness.rows("users") == before - 50
    seen = api.get(f"/agents/data_manager/runs/{run_id}", query_string={"user_id": browser.email}).get_json()
    assert (seen["status"], seen["tools"][0]["confirmed"]) == ("COMPLETED", True)
    late = api.continue_(run_id, documented(run["tools"][0]), user_id=browser.email, stream=False)
    assert late.status_code == 409 and harness.rows("users") == before - 50, "decided once, run once"


def test_a_run_paused_in_the_browser_is_continued_over_the_api(app, api, browser, harness, fake_model):
    fake_model.script(Turn(text="Hi."), Turn(tool_calls=[DELETE_50]), Turn(text="Deleted over the API."))
    first = api.run("hello", user_id=browser.email, stream=False).get_json()
    chat = browser.new_chat()
    sent = browser.post(f"/chats/{chat}/messages", {"message": "Delete 50 old records from the users table"})
    harness.wait(re.search(rb"/runs/(run_\w+)/events", sent.data).group(1).decode(), "paused")
    before = harness.rows("users")

    pending = api.get(f"/sessions/{chat}/runs", query_string={"status": "PAUSED", "user_id": browser.email})
    [run] = pending.get_json()
    assert run["session_id"] == chat != first["session_id"], "a browser chat is known by its id"
    body = api.continue_(run["run_id"], documented(run["tools"][0]), user_id=browser.email, stream=False).get_json()
    assert body["status"] == "COMPLETED" and harness.rows("users") == before - 50
    page = browser.get(f"/chats/{chat}").data.decode()
    assert "Deleted 50 records from users" in page and "Deleted over the API." in page


def test_an_open_page_follows_a_decision_made_over_the_api(app, api, browser, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Done, live."))
    run = paused(api, user_id=browser.email)
    page = browser.get(f"/chats/{chat_id_of(harness, run['run_id'])}").data.decode()
    stream_url = re.search(r'sse-connect="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert "hold=1" in stream_url, "a paused run's page keeps its stream open"

    received = []
    tab = threading.Thread(target=lambda: received.append(browser.client.get(stream_url).get_data(as_text=True)))
    tab.start()
    tab.join(timeout=1.5)
    assert tab.is_alive(), "the stream stays open while the run waits for a decision"

    api.continue_(run["run_id"], documented(run["tools"][0]), user_id=browser.email)
    tab.join(timeout=20)
    assert not tab.is_alive(), "the stream ends when the run completes"
    [html] = received
    assert "Deleted 50 records from users" in html and "Done, live." in html
    assert "event: done" in html
