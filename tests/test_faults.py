"""Faults, on real gunicorn servers: a worker killed mid-reply or mid-tool, the database going away,
and two servers sharing one PostgreSQL database."""
from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa

from tests.conftest import parse_sse, wait_for
from tests.fake_openai import ToolCall, Turn
from tests.live import Client, LiveServer

DELETE_50 = ToolCall("delete_records", {"table_name": "users", "count": 50})
FAST_RECOVERY = {"RUN_LEASE_SECONDS": "2", "RUN_SWEEP_SECONDS": "0.5"}



def kill_the_worker_running(harness, run_id: str) -> None:
    owner = harness.run(run_id).lease_owner
    os.kill(int(owner.rsplit(":", 1)[1]), signal.SIGKILL)


@pytest.fixture
def server(app, server_env, tmp_path):
    server = LiveServer({**server_env, **FAST_RECOVERY}, log_path=tmp_path / "gunicorn.log").start()
    yield server
    server.stop()


def test_a_worker_killed_mid_reply_fails_the_run_and_retry_continues(server, harness, fake_model):
    fake_model.script(Turn(text="word " * 500, token_delay=0.02), Turn(text="Second try worked."))
    client = Client(server.url)
    chat = client.new_chat()
    run_id = client.send(chat, "write a lot")
    wait_for(lambda: len(harness.messages(chat)[-1][1]) > 40, message="the reply to stream")

    kill_the_worker_running(harness, run_id)
    run = harness.wait(run_id, "failed", timeout=20)
    assert run.error.startswith("Interrupted: the server stopped")
    partial = harness.messages(chat)[-1][1]
    assert partial.startswith("word word"), "what was streamed is kept"
    page = client.get(f"/chats/{chat}").text
    assert "The reply broke off here." in page and "Retry" in page

    assert client.post(f"/runs/{run_id}/retry").status_code == 200
    assert harness.wait(run_id, "completed", "failed").status == "completed"
    assert harness.messages(chat)[-1] == ("assistant", "Second try worked.")


def test_a_worker_killed_while_a_gated_tool_runs_leaves_outcome_unknown(server, databases, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="This must not be reached."))
    client = Client(server.url)
    chat = client.new_chat()
    before = harness.rows("users")
    harness.wait(client.send(chat, "delete"), "paused")
    run_id, call_id = client.pending_call(chat)

    with workspace_locked(databases):  # the tool blocks on the locked table, as a slow one would
        assert client.post(f"/runs/{run_id}/calls/{call_id}/approve").status_code == 200
        wait_for(lambda: harness.calls(run_id)[0].status == "executing", message="the tool to start")
        kill_the_worker_running(harness, run_id)

    assert harness.wait(run_id, "failed", timeout=20).error.startswith("Interrupted")
    time.sleep(2)  # several recovery sweeps later…
    [call] = harness.calls(run_id)
    assert call.status == "outcome_unknown", "never retried silently"
    assert harness.rows("users") == before
    page = " ".join(client.get(f"/chats/{chat}").text.split())
    assert "we cannot tell whether it took effect. It was not run again" in page
    assert "This must not be reached." not in page


def test_a_model_silent_for_longer_than_the_lease_is_not_taken_for_a_dead_worker(server, harness, fake_model):
    # The lease is 2 s; the model thinks for 5 s before its first word. The heartbeat keeps the lease.
    fake_model.script(Turn(text="Thought it over.", delay=5))
    client = Client(server.url)
    chat = client.new_chat()
    run = harness.wait(client.send(chat, "think hard"), "completed", "failed", timeout=30)
    assert (run.status, run.error) == ("completed", None)
    assert harness.messages(chat)[-1] == ("assistant", "Thought it over.")


class workspace_locked:
    """Hold a write lock on the workspace's users table (SQLite: the whole file) until the block ends.
    Reads go on: approving makes the card's preview again, and only the tool's delete must wait."""

    def __init__(self, databases):
        self.databases = databases

    def __enter__(self):
        if self.databases.backend == "sqlite":
            self.conn = sqlite3.connect(sa.make_url(self.databases.workspace_url).database, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            self.engine = sa.create_engine(self.databases.workspace_url)
            self.conn = self.engine.connect()
            self.conn.exec_driver_sql("LOCK TABLE users IN EXCLUSIVE MODE")
        return self

    def __exit__(self, *exc):
        self.conn.rollback()
        self.conn.close()
        if self.databases.backend == "postgresql":
            self.engine.dispose()


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_a_database_outage_is_a_503_and_the_app_recovers_by_itself(server, databases, postgres_admin_url,
                                                                    harness, fake_model):
    fake_model.script(Turn(text="Back in business."))
    client = Client(server.url)
    chat = client.new_chat()
    name = sa.make_url(databases.app_url).database
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
    try:
        page = client.get(f"/chats/{chat}")
        assert page.status_code == 503 and page.headers["Retry-After"] == "5"
        assert "The database is not available right now" in page.text and "Traceback" not in page.text
        sent = client.post(f"/chats/{chat}/messages", {"message": "hello?"})
        assert sent.status_code == 503
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.dispose()

    assert client.get(f"/chats/{chat}").status_code == 200, "no restart needed"
    assert harness.messages(chat) == [], "the refused message left nothing half-written"
    run_id = client.send(chat, "hello again")
    assert harness.wait(run_id).status == "completed"
    assert harness.messages(chat)[-1] == ("assistant", "Back in business.")


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
def test_sqlite_locked_past_the_busy_timeout_is_a_503_not_a_500(app, server_env, databases, harness, tmp_path):
    server = LiveServer({**server_env, "SQLITE_BUSY_TIMEOUT": "1"}, log_path=tmp_path / "gunicorn.log").start()
    try:
        client = Client(server.url)
        chat = client.new_chat()
        locker = sqlite3.connect(sa.make_url(databases.app_url).database, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # e.g. a long write by another process
        try:
            sent = client.post(f"/chats/{chat}/messages", {"message": "hello"})
            assert sent.status_code == 503 and "not available right now" in sent.text
        finally:
            locker.rollback()
            locker.close()
        assert harness.messages(chat) == []
        assert client.get(f"/chats/{chat}").status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_two_servers_share_runs_and_wake_each_other(server, server_env, harness, fake_model, tmp_path):
    """A stream on server A follows a run that server B resumes, woken by LISTEN/NOTIFY: the stream's
    polling fallback is 5 s, the whole continuation takes well under a second."""
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Finished on the other server."))
    other = LiveServer(server_env, log_path=tmp_path / "gunicorn-b.log").start()
    try:
        a = Client(server.url)
        chat = a.new_chat()
        run_id = a.send(chat, "delete")
        harness.wait(run_id, "paused")
        run_id, call_id = a.pending_call(chat)
        cursor = harness.run(run_id).last_seq

        b = Client(other.url)
        b.http.cookies.update(a.http.cookies)  # the same person, load-balanced to another host
        b.csrf = a.csrf
        received: dict = {}

        def follow_on_a():
            with a.http.get(f"{server.url}/runs/{run_id}/events?after={cursor}", stream=True, timeout=30) as response:
                received["text"] = response.content.decode()
                received["at"] = time.monotonic()

        follower = threading.Thread(target=follow_on_a)
        # Start following once the run is queued again, so the stream does not end at "paused".
        approved_at = time.monotonic()
        assert b.post(f"/runs/{run_id}/calls/{call_id}/approve").status_code == 200
        follower.start()
        follower.join(timeout=30)

        events = parse_sse(received["text"])
        assert events[-1]["event"] == "done"
        html = "".join(e["data"] for e in events)
        assert "Deleted 50 records from users." in html and "Finished on the other server." in html
        assert received["at"] - approved_at < 3.0, "woken by NOTIFY, not by the 5 s poll"
        assert harness.run(run_id).lease_owner is None and harness.run(run_id).status == "completed"
    finally:
        other.stop()
