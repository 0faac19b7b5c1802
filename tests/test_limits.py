"""Limits per account: each answers 429 with Retry-After and a message at its threshold (the flash in the
chat, JSON `detail` in the API), never a 500, and a normal user alongside is unaffected."""
from __future__ import annotations

import concurrent.futures
import re
import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa

import requests

from app.extensions import db
from app.models import ChatSession, Run, RunStatus, utcnow
from tests.api.apiclient import DELETE_50, KEY, Api
from tests.conftest import Browser, on_each_statement, wait_for
from tests.fake_openai import Turn
from tests.live import Client, LiveServer

LIMITS = {"RATELIMIT_MESSAGES": "3 per minute", "RATELIMIT_COMMANDS": "4 per minute", "MAX_ACTIVE_RUNS": 2,
          "MAX_STREAMS_PER_ACCOUNT": 3}


@pytest.fixture
def app_config(app_config):
    return {**app_config, **LIMITS, "OS_SECURITY_KEY": KEY, "API_AUTH": "on", "API_WAIT_SECONDS": 20.0}


def run_id_in(html: bytes) -> str:
    return re.search(rb"/runs/(run_[0-9a-f]+)/events", html).group(1).decode()


def send(browser: Browser, harness, text: str = "hello"):
    """Send a message in a new chat and wait until its run is done (so only the rate counts)."""
    response = browser.post(f"/chats/{browser.new_chat()}/messages", {"message": text})
    if response.status_code == 200:
        harness.wait(run_id_in(response.data))
    return response


def assert_refused_in_the_chat(response, *words):
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    html = response.get_data(as_text=True)
    assert 'id="flash"' in html and 'hx-swap-oob="true"' in html, "the page's flash shows it"
    for word in words:
        assert word in html


def assert_refused_in_the_api(response, *words):
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    detail = (response.get_json() if hasattr(response, "get_json") else response.json())["detail"]
    for word in words:
        assert word in detail


def test_messages_per_minute_in_the_chat(app, harness, fake_model):
    eager, normal = Browser(app), Browser(app)
    for _ in range(3):
        assert send(eager, harness).status_code == 200
    chat = eager.new_chat()
    refused = eager.post(f"/chats/{chat}/messages", {"message": "one more"})
    assert_refused_in_the_chat(refused, "Too many messages", "3 per minute")
    assert harness.messages(chat) == [], "the refused message started nothing"
    assert 0 < int(refused.headers["Retry-After"]) <= 61

    assert send(normal, harness).status_code == 200, "another person is unaffected"
    plain = eager.post(f"/chats/{chat}/messages", {"message": "without htmx"}, htmx=False)
    assert plain.status_code == 429 and "Too many messages" in plain.get_data(as_text=True), "a page, not a 500"


def test_messages_per_minute_in_the_api(app, harness, fake_model):
    api = Api(app)
    for _ in range(3):
        assert api.run("hello", user_id="alice", stream=False).status_code == 200
    refused = api.run("hello", user_id="alice", stream=False)
    assert_refused_in_the_api(refused, "Too many messages")
    assert refused.mimetype == "application/json"
    assert api.run("hello", user_id="bob", stream=False).status_code == 200, "another user_id is unaffected"
    assert send(Browser(app), harness).status_code == 200, "and so is a browser"
    sessions = api.get("/sessions", query_string={"user_id": "alice"}).get_json()
    assert sessions["meta"]["total_count"] == 3, "the refused run started nothing"


def test_commands_per_minute(app, harness, fake_model):
    eager, normal = Browser(app), Browser(app)
    response = eager.post(f"/chats/{eager.new_chat()}/messages", {"message": "hello"})
    run_id = run_id_in(response.data)
    harness.wait(run_id, "completed")
    for _ in range(4):  # stopping a finished run: a 409 each time, and each counts
        assert eager.post(f"/runs/{run_id}/cancel").status_code == 409
    assert_refused_in_the_chat(eager.post(f"/runs/{run_id}/cancel"), "Too many actions")
    assert_refused_in_the_chat(eager.post(f"/runs/{run_id}/retry"), "Too many actions")

    other = normal.post(f"/chats/{normal.new_chat()}/messages", {"message": "hello"})
    other_run = run_id_in(other.data)
    harness.wait(other_run, "completed")
    assert normal.post(f"/runs/{other_run}/cancel").status_code == 409, "another person is unaffected"

    api = Api(app)
    for _ in range(4):
        assert api.post("/agents/data_manager/runs/run_nope/continue", data={"tools": "[]", "user_id": "carol"}) \
            .status_code == 404
    assert_refused_in_the_api(api.post("/agents/data_manager/runs/run_nope/continue",
                                       data={"tools": "[]", "user_id": "carol"}), "Too many actions")
    assert api.post("/agents/data_manager/runs/run_nope/cancel", data={"user_id": "dave"}).status_code == 404


def running_elsewhere(app, chat_id: str) -> str:
    """A run of this chat that another worker is executing (a model thinking for minutes), written
    directly: the test needs a busy account, not a busy model."""
    with app.app_context():
        chat = db.session.get(ChatSession, chat_id)
        run = Run(session_id=chat.id, owner_id=chat.owner_id, agent_id=chat.agent_id, input="think",
                  status=RunStatus.RUNNING, lease_owner="another-worker",
                  lease_until=utcnow() + timedelta(minutes=10))
        db.session.add(run)
        db.session.commit()
        return run.id


def test_concurrent_active_runs(app, harness, fake_model):
    busy, normal = Browser(app), Browser(app)
    chats = [busy.new_chat() for _ in range(3)]
    runs = [running_elsewhere(app, chat) for chat in chats[:2]]
    refused = busy.post(f"/chats/{chats[2]}/messages", {"message": "and a third"})
    assert_refused_in_the_chat(refused, "2 replies in progress", "the limit is 2")
    assert harness.messages(chats[2]) == [], "nothing was stored"

    fake_model.script(Turn(text="Hi."))
    other = normal.post(f"/chats/{normal.new_chat()}/messages", {"message": "hi"})
    assert other.status_code == 200, "another person is unaffected"
    harness.wait(run_id_in(other.data), "completed")

    assert busy.post(f"/runs/{runs[0]}/cancel").status_code == 200  # stopping one frees a place
    fake_model.script(Turn(text="Now."))
    accepted = busy.post(f"/chats/{chats[2]}/messages", {"message": "and a third"})
    assert accepted.status_code == 200
    harness.wait(run_id_in(accepted.data), "completed")


@contextmanager
def counts_wait_for_each_other(app):
    """Each count of the account's active runs, as a run starts, waits up to a second for another to
    count as well: only two starts not serialised by the account's row lock both get that far."""
    arrived, both = [], threading.Condition()

    def wait(conn, cursor, statement, parameters, context, executemany):
        if ") AS active" in statement:
            with both:
                arrived.append(threading.get_ident())
                both.notify_all()
                both.wait_for(lambda: len(arrived) >= 2, timeout=1.0)

    with on_each_statement(app, wait, when="after"):
        yield


def at_once(*sends):
    with concurrent.futures.ThreadPoolExecutor(len(sends)) as pool:
        return list(pool.map(lambda send: send(), sends))


def test_two_messages_at_once_cannot_both_take_the_last_place(app, harness, fake_model):
    """Two tabs send at once with one place left: the second start waits for the first's commit, then
    counts its run too (it fails without the lock on PostgreSQL; SQLite's BEGIN IMMEDIATE serialises)."""
    first = Browser(app)
    second = Browser(app, sign_in=False)
    second.sign_in(first.email)
    chats = [first.new_chat() for _ in range(3)]
    running_elsewhere(app, chats[0])  # one of the two places is taken
    fake_model.script(*[Turn(text="a slow reply", token_delay=0.5)] * 2)  # the winner's run stays active
    with counts_wait_for_each_other(app):
        answers = at_once(lambda: first.post(f"/chats/{chats[1]}/messages", {"message": "at once"}),
                          lambda: second.post(f"/chats/{chats[2]}/messages", {"message": "at once"}))
    assert sorted(answer.status_code for answer in answers) == [200, 429]
    assert_refused_in_the_chat(next(a for a in answers if a.status_code == 429), "2 replies in progress")
    harness.wait(run_id_in(next(a for a in answers if a.status_code == 200).data), "completed", timeout=20)


def test_two_api_runs_at_once_cannot_both_take_the_last_place(app, harness, fake_model):
    api = Api(app)
    fake_model.script(Turn(text="Hi."))
    assert api.run("hello", user_id="alice", session_id="a", stream=False).status_code == 200
    with app.app_context():  # two more sessions of alice's, with no run yet (messages per minute are few)
        chat_a = db.session.scalar(sa.select(ChatSession).where(ChatSession.external_id == "a"))
        db.session.add_all([ChatSession(owner_id=chat_a.owner_id, agent_id=chat_a.agent_id, external_id=name)
                            for name in ("b", "c")])
        db.session.commit()
        chat_a = chat_a.id
    running_elsewhere(app, chat_a)
    fake_model.script(*[Turn(text="a slow reply", token_delay=0.5)] * 2)
    def run_and_read(session):  # streamed, the default (a stream slot is taken too), read in its thread
        answer = api.run("at once", user_id="alice", session_id=session)
        return answer, answer.get_data(as_text=True)

    with counts_wait_for_each_other(app):
        answers = at_once(lambda: run_and_read("b"), lambda: run_and_read("c"))
    assert sorted(answer.status_code for answer, _ in answers) == [200, 429]
    assert_refused_in_the_api(next(a for a, _ in answers if a.status_code == 429), "2 replies in progress")
    assert "RunCompleted" in next(body for a, body in answers if a.status_code == 200)


def test_concurrent_active_runs_in_the_api(app, harness, fake_model):
    api = Api(app)
    fake_model.script(Turn(text="Hi Alice."), Turn(text="Hi Alice."), Turn(text="Hi Bob."))
    assert api.run("hello", user_id="alice", session_id="a", stream=False).status_code == 200
    assert api.run("hello", user_id="alice", session_id="b", stream=False).status_code == 200
    with app.app_context():  # alice's two sessions each get a run another worker is executing
        chat_ids = db.session.scalars(sa.select(ChatSession.id).where(ChatSession.external_id.in_(["a", "b"]))).all()
    for chat_id in chat_ids:
        running_elsewhere(app, chat_id)
    refused = api.run("third", user_id="alice", session_id="c", stream=False)
    assert_refused_in_the_api(refused, "2 replies in progress")
    assert api.get("/sessions/c", query_string={"user_id": "alice"}).status_code == 404, "nothing was started"
    bobs = api.run("hi", user_id="bob", stream=False).get_json()
    assert (bobs["status"], bobs["content"]) == ("COMPLETED", "Hi Bob."), "bob is unaffected"


@pytest.fixture
def one_worker(app, server_env, tmp_path):
    """gunicorn with one worker (stream slots are counted per process) and this module's limits."""
    env = {**server_env, **{k: str(v) for k, v in LIMITS.items()}, "RATELIMIT_MESSAGES": "100 per minute",
           "MAX_ACTIVE_RUNS": "10", "OS_SECURITY_KEY": KEY}
    server = LiveServer(env, workers=1, log_path=tmp_path / "gunicorn.log").start()
    yield server
    server.stop()


def open_stream(client: Client, path: str, **headers) -> requests.Response:
    """GET an event stream and leave it open (its headers arrived; its body is read later)."""
    return client.http.get(client.base + path, stream=True, timeout=10, headers=headers)


def test_open_event_streams_per_account(one_worker, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(tool_calls=[DELETE_50]), Turn(text="Deleted."))
    many_tabs, normal = Client(one_worker.url), Client(one_worker.url)
    chat = many_tabs.new_chat()
    first = many_tabs.send(chat, "Delete 50 old records from the users table")
    assert harness.wait(first).status == "paused", harness.run(first).error
    run_id, call_id = many_tabs.pending_call(chat)
    url = f"/runs/{run_id}/events?after=0&hold=1"  # a paused run's stream stays open, as in a tab

    tabs = [open_stream(many_tabs, url) for _ in range(3)]
    assert [tab.status_code for tab in tabs] == [200] * 3
    refused = open_stream(many_tabs, url, **{"HX-Request": "true"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "Too many open event streams (3)" in refused.text and 'id="flash"' in refused.text

    their_chat = normal.new_chat()
    their_run = normal.send(their_chat, "Delete 50 old records from the users table")
    harness.wait(their_run, "paused")
    theirs = open_stream(normal, f"/runs/{their_run}/events?after=0&hold=1")
    assert theirs.status_code == 200, "another person is unaffected"

    # The run finishes: its streams end, and their places are free again.
    assert many_tabs.post(f"/runs/{run_id}/calls/{call_id}/approve").status_code == 200
    harness.wait(run_id, "completed")
    for tab in tabs:
        assert b"event: done" in tab.content, "the stream ended with the run"
    wait_for(lambda: open_stream(many_tabs, url).status_code == 200, timeout=5, message="a free place")
    theirs.close()


def test_api_streams_count_too_and_a_refused_stream_starts_nothing(one_worker, harness, fake_model):
    fake_model.script(*[Turn(text="thinking " * 100, token_delay=0.02) for _ in range(3)], Turn(text="Hi Bob."))
    headers = {"Authorization": f"Bearer {KEY}"}

    def stream_run(user_id, session_id, **kwargs):
        return requests.post(f"{one_worker.url}/agents/data_manager/runs", headers=headers, timeout=10,
                             files={"message": (None, "go"), "user_id": (None, user_id),
                                    "session_id": (None, session_id), "stream": (None, "true")}, **kwargs)

    streams = [stream_run("alice", f"s{i}", stream=True) for i in range(3)]
    assert [s.status_code for s in streams] == [200] * 3
    refused = stream_run("alice", "s3")
    assert_refused_in_the_api(refused, "Too many open event streams")
    assert requests.get(f"{one_worker.url}/sessions/s3", headers=headers, params={"user_id": "alice"},
                        timeout=10).status_code == 404, "no session, no run was started"
    bobs = stream_run("bob", "s0")
    assert bobs.status_code == 200 and "Hi Bob." in bobs.text, "another user_id is unaffected"
    for stream in streams:
        assert "RunCompleted" in stream.text  # each ends with its run, and gives its place back
    fake_model.script(Turn(text="Again."))
    assert "Again." in stream_run("alice", "s3").text
