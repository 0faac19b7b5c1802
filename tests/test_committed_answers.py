"""A 503 means nothing was committed. A command whose change committed and whose answer then lost the
database (PostgreSQL backends terminated mid-burst) answers with what was done, never "try again";
and the change is there when the database is back."""
from __future__ import annotations

import re
import threading
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from app.agent import commands
from tests.api.apiclient import DELETE_50, KEY, Api, documented, paused
from tests.conftest import on_each_statement
from tests.fake_openai import Turn


@pytest.fixture
def app_config(app_config):
    return {**app_config, "OS_SECURITY_KEY": KEY, "API_AUTH": "on", "API_WAIT_SECONDS": 20.0}


@contextmanager
def database_lost_after_the_commit(app, monkeypatch, step: str = "submit"):
    """From the moment the command module's `step` returns (`submit`: the command hands its run to the
    executor, right after its commit), every statement of this request's thread fails as a terminated
    backend does. The executor's threads are left alone, so the run itself carries on."""
    request_thread = threading.get_ident()
    lost = threading.Event()
    real_step = getattr(commands, step)

    def step_then_lose(*args, **kwargs):
        result = real_step(*args, **kwargs)
        lost.set()
        return result

    def fail(conn, cursor, statement, parameters, context, executemany):
        if lost.is_set() and threading.get_ident() == request_thread:
            raise sa.exc.OperationalError(statement, parameters,
                                          Exception("terminating connection due to administrator command"))

    monkeypatch.setattr(commands, step, step_then_lose)
    with on_each_statement(app, fail):
        yield lost


def paused_in_the_browser(browser, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Deleted."))
    chat = browser.new_chat()
    sent = browser.post(f"/chats/{chat}/messages", {"message": "Delete 50 old records from the users table"})
    run_id = re.search(rb"/runs/(run_[0-9a-f]+)/events", sent.data).group(1).decode()
    harness.wait(run_id, "paused")
    return run_id, harness.calls(run_id)[0].id


def test_an_approval_that_committed_says_so_in_the_card(app, browser, harness, fake_model, monkeypatch):
    run_id, call_id = paused_in_the_browser(browser, harness, fake_model)
    before = harness.rows("users")
    with database_lost_after_the_commit(app, monkeypatch) as lost:
        response = browser.post(f"/runs/{run_id}/calls/{call_id}/approve")
    assert lost.is_set(), "the failure struck after the commit"
    assert response.status_code == 200, "not a 503: the decision was made"
    html = response.get_data(as_text=True)
    assert f'id="call-{call_id}"' in html and "try again" not in html.lower()
    assert "call-approved" in html and "Approved by you" in html, "the answer reads nothing: the card as written"
    assert harness.wait(run_id, "completed").status == "completed"
    assert harness.rows("users") == before - 50, "the tool ran once"
    again = browser.post(f"/runs/{run_id}/calls/{call_id}/approve")  # a click on the stale card
    assert again.status_code == 409 and b"already" in again.data


def test_a_message_that_committed_is_not_sent_twice(app, browser, harness, fake_model, monkeypatch):
    fake_model.script(Turn(text="Hello."))
    chat = browser.new_chat()
    with database_lost_after_the_commit(app, monkeypatch):
        response = browser.post(f"/chats/{chat}/messages", {"message": "hi"})
    assert response.status_code == 200 and "Your message was sent" in response.get_data(as_text=True)
    assert harness.messages(chat)[0] == ("user", "hi")


def test_a_stop_that_committed_says_stopped(app, browser, harness, fake_model, monkeypatch):
    fake_model.script(Turn(text="blah " * 300, token_delay=0.02))
    chat = browser.new_chat()
    run_id = re.search(rb"/runs/(run_[0-9a-f]+)/events",
                       browser.post(f"/chats/{chat}/messages", {"message": "talk"}).data).group(1).decode()
    harness.wait(run_id, "running")
    with database_lost_after_the_commit(app, monkeypatch, step="cancel") as lost:
        response = browser.post(f"/runs/{run_id}/cancel")
    assert lost.is_set()
    assert response.status_code == 200 and "Stopped." in response.get_data(as_text=True)
    assert harness.run(run_id).status == "cancelled"


def test_an_api_continue_that_committed_answers_with_what_was_decided(app, harness, fake_model, monkeypatch):
    api = Api(app)
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Deleted."))
    run = paused(api, user_id="alice", session_id="s")
    before = harness.rows("users")
    with database_lost_after_the_commit(app, monkeypatch) as lost:
        response = api.continue_(run["run_id"], documented(run["tools"][0]), user_id="alice", stream=False)
    assert lost.is_set()
    body = response.get_json()
    assert harness.wait(run["run_id"], "completed").status == "completed"
    assert harness.rows("users") == before - 50
    state = api.get(f"/agents/data_manager/runs/{run['run_id']}", query_string={"user_id": "alice"}).get_json()
    assert state["status"] == "COMPLETED"
    assert response.status_code == 200 and body == state, "the answer reads nothing: the run as this process wrote it"


def test_an_api_run_that_committed_answers_with_what_it_wrote(app, harness, fake_model, monkeypatch):
    api = Api(app)
    fake_model.script(Turn(text="Hello."))
    with database_lost_after_the_commit(app, monkeypatch):
        response = api.run("hello", user_id="alice", session_id="s", stream=False)
    run_id = response.get_json()["run_id"]
    assert harness.wait(run_id, "completed").status == "completed"
    assert response.status_code == 200 and response.get_json()["content"] == "Hello."


def test_an_api_answer_that_must_read_the_lost_database_says_what_was_done_and_where(app, harness, fake_model,
                                                                                     monkeypatch):
    """A failed run's answer reads the run (its error is not in memory): the database refuses, and the
    answer is a 202 with the run's id and where to read it, not a 503."""
    api = Api(app)
    fake_model.script(Turn(status=400, error_message="bad request"))
    with database_lost_after_the_commit(app, monkeypatch):
        response = api.run("hello", user_id="alice", session_id="s", stream=False)
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert harness.wait(body["run_id"], "failed").status == "failed"
    assert f"/agents/data_manager/runs/{body['run_id']}" in body["detail"]


def test_a_failure_before_the_commit_is_still_a_503(app, browser, harness, fake_model, monkeypatch):
    """Nothing committed: then 503 "try again" is the truth, and trying again works."""
    run_id, call_id = paused_in_the_browser(browser, harness, fake_model)

    def fail(conn, cursor, statement, parameters, context, executemany):
        if "UPDATE tool_calls" in statement:
            raise sa.exc.OperationalError(statement, parameters, Exception("server closed the connection"))

    with on_each_statement(app, fail):
        response = browser.post(f"/runs/{run_id}/calls/{call_id}/approve")
    assert response.status_code == 503 and "try again" in response.get_data(as_text=True).lower()
    assert harness.calls(run_id)[0].status == "pending"
    assert browser.post(f"/runs/{run_id}/calls/{call_id}/approve").status_code == 200
