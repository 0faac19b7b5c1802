"""Scaling out: two web servers and two `flask worker` processes on one PostgreSQL database, with
RUN_EXECUTION=workers (the web servers execute nothing). A run started through one web server is
executed by a worker and followed live through the other; a worker killed mid-run is recovered by
the other one within the lease, and nothing runs twice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.api.apiclient import AUTH, KEY, documented
from tests.conftest import wait_for
from tests.fake_openai import ToolCall, Turn
from tests.live import Client, LiveServer
from tests.test_faults import workspace_locked

ROOT = Path(__file__).resolve().parent.parent
DELETE_50 = ToolCall("delete_records", {"table_name": "users", "count": 50})

pytestmark = pytest.mark.parametrize("databases", ["postgresql"], indirect=True)


class Worker:
    """`flask --app app worker` in a subprocess (its own process group, so a kill takes it whole)."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "Worker":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_for(lambda: "worker ready" in self.log() or self.process.poll() is not None, timeout=timeout,
                 interval=0.1, message="the worker to start")
        assert self.process.poll() is None, self.log()
        return self

    @property
    def owner_id(self) -> str:
        """How the worker names itself in a run's lease (recovery.WORKER_ID)."""
        return f"{os.uname().nodename}:{self.process.pid}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, kill: bool = False) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process and self.process.returncode
        os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            return self.process.wait(timeout=35)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


API_WAIT_SECONDS = 4.0  # shorter than the poll (5 s) that finds what no NOTIFY announced


@pytest.fixture
def server_env(server_env):
    return {**server_env, "OS_SECURITY_KEY": KEY, "API_WAIT_SECONDS": str(API_WAIT_SECONDS)}


@pytest.fixture
def cluster(app, server_env, tmp_path):
    """Two web servers and two workers; short leases so a dead worker is noticed in seconds."""
    env = {**server_env, "RUN_EXECUTION": "workers", "RUN_LEASE_SECONDS": "3", "RUN_SWEEP_SECONDS": "1"}
    started = []
    try:
        webs = [started.append(s) or s.start() for s in
                (LiveServer(env, workers=1, log_path=tmp_path / f"web-{n}.log") for n in "ab")]
        workers = [started.append(w) or w.start() for w in
                   (Worker(env, tmp_path / f"worker-{n}.log") for n in (1, 2))]
        yield webs, workers
    finally:
        for process in started:
            process.stop()


def lease_owner_while_running(harness, run_id: str) -> str:
    return wait_for(lambda: (run := harness.run(run_id)).status == "running" and run.lease_owner,
                    timeout=10, message="the run to be taken")


def paused_on_a_card(web: LiveServer, harness) -> tuple[Client, str, str, str]:
    """A person on `web` asks to delete 50 users; returns once the run waits on the card."""
    client = Client(web.url)
    chat = client.new_chat()
    run_id = client.send(chat, "Delete 50 old records from the users table")
    harness.wait(run_id, "paused")
    _, call_id = client.pending_call(chat)
    return client, chat, run_id, call_id


def read_stream_until(url: str, cookies, marker: str, timeout: float = 20.0) -> str:
    """The run's event stream as a browser tab reads it, up to the first fragment containing `marker`."""
    seen = []
    with requests.get(url, cookies=cookies, stream=True, timeout=timeout,
                      headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        for line in response.iter_lines(decode_unicode=True):
            seen.append(line)
            if marker in line:
                break
    return "\n".join(seen)


def test_a_run_started_on_one_web_server_is_executed_by_a_worker_and_followed_on_the_other(
        cluster, harness, fake_model):
    (web_a, web_b), workers = cluster
    words = " ".join(f"word{i}" for i in range(12))
    fake_model.script(Turn(text=words, token_delay=0.05, tool_calls=[DELETE_50]), Turn(text="Done, 50 fewer users."))
    client = Client(web_a.url)
    chat = client.new_chat()
    before = harness.rows("users")

    run_id = client.send(chat, "Delete 50 old records from the users table")
    assert lease_owner_while_running(harness, run_id) in {w.owner_id for w in workers}, "a worker executes it"
    stream = read_stream_until(f"{web_b.url}/runs/{run_id}/events?after=0", client.http.cookies, 'class="waiting"')
    assert "word0" in stream and "word11" in stream, "the reply streamed live through the other web server"

    client.base = web_b.url  # the same person, on the other web server
    run_id_b, call_id = client.pending_call(chat)
    assert run_id_b == run_id
    assert client.post(f"/runs/{run_id}/calls/{call_id}/approve").status_code == 200
    assert harness.wait(run_id, "completed", "failed").status == "completed"
    assert harness.rows("users") == before - 50
    assert "Done, 50 fewer users." in client.get(f"/chats/{chat}").text


def test_an_api_client_waits_on_either_web_server_for_what_a_worker_does(cluster, harness, fake_model):
    """An API answer given once the run settles hears of a worker's writes as they happen (its NOTIFY), not
    only of its own server's: it comes when the run pauses or ends, not when the wait runs out."""
    (web_a, web_b), workers = cluster
    fake_model.script(Turn(text="I need your confirmation.", tool_calls=[DELETE_50]),
                      Turn(text="Done, 50 fewer users."))
    before = harness.rows("users")

    def settled(url: str, **form) -> dict:
        started = time.monotonic()
        response = requests.post(url, headers=AUTH, timeout=30, files={k: (None, v) for k, v in form.items()})
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < API_WAIT_SECONDS, "answered when the wait ran out, not when the run settled"
        return response.json()

    run = settled(f"{web_a.url}/agents/data_manager/runs", message="Delete 50 old records from the users table",
                  stream="false")
    assert run["status"] == "PAUSED"
    continued = settled(f"{web_b.url}/agents/data_manager/runs/{run['run_id']}/continue",
                        tools=json.dumps(documented(run["tools"][0])), stream="false")
    assert (continued["status"], continued["content"]) == ("COMPLETED", "Done, 50 fewer users.")
    assert harness.rows("users") == before - 50


def test_a_worker_killed_mid_reply_is_taken_over_by_the_other_and_nothing_runs_twice(cluster, harness, fake_model):
    (web_a, web_b), workers = cluster
    slow_reply = " ".join(f"w{i}" for i in range(200))  # 20 s at 0.1 s a word: the kill comes mid-reply
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text=slow_reply, token_delay=0.1))
    client, chat, run_id, call_id = paused_on_a_card(web_a, harness)
    before = harness.rows("users")  # the card waits: nothing is deleted yet

    assert client.post(f"/runs/{run_id}/calls/{call_id}/approve").status_code == 200
    owner = lease_owner_while_running(harness, run_id)
    wait_for(lambda: "w3" in (harness.messages(chat)[-1][1] or ""), timeout=10, message="the reply to stream")
    victim = next(w for w in workers if w.owner_id == owner)
    victim.stop(kill=True)
    killed_at = time.monotonic()

    run = harness.wait(run_id, "failed", timeout=15)
    assert time.monotonic() - killed_at < 3 + 1 + 3, "recovered within the lease (3 s) and a sweep (1 s)"
    assert "Interrupted" in run.error
    [call] = harness.calls(run_id)
    assert call.status == "done", "the tool finished before the kill and is not run again"
    assert harness.rows("users") == before - 50

    fake_model.script(Turn(text="All done."))
    client.base = web_b.url
    assert client.post(f"/runs/{run_id}/retry").status_code == 200
    assert harness.wait(run_id, "completed", "failed", timeout=15).status == "completed"
    assert harness.rows("users") == before - 50, "the retried run did not delete again"
    assert [c.status for c in harness.calls(run_id)] == ["done"]
    assert "All done." in client.get(f"/chats/{chat}").text


def test_a_worker_killed_mid_tool_leaves_the_outcome_unknown_and_the_tool_is_not_run_again(
        cluster, databases, harness, fake_model):
    (web_a, web_b), workers = cluster
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="This must not be reached."))
    client, chat, run_id, call_id = paused_on_a_card(web_a, harness)
    before = harness.rows("users")  # the card waits: nothing is deleted yet

    with workspace_locked(databases):  # the tool blocks on the locked table, as a slow one would
        assert client.post(f"/runs/{run_id}/calls/{call_id}/approve").status_code == 200
        wait_for(lambda: harness.calls(run_id)[0].status == "executing", message="the tool to start")
        owner = harness.run(run_id).lease_owner
        next(w for w in workers if w.owner_id == owner).stop(kill=True)

    assert harness.wait(run_id, "failed", timeout=15).error.startswith("Interrupted")
    time.sleep(2)  # several sweeps by the surviving worker later…
    [call] = harness.calls(run_id)
    assert call.status == "outcome_unknown", "never retried silently"
    assert harness.rows("users") == before
    client.base = web_b.url
    assert "This must not be reached." not in client.get(f"/chats/{chat}").text


def test_a_worker_stops_cleanly_on_sigterm(cluster, harness, fake_model):
    _, workers = cluster
    for worker in workers:
        assert worker.stop() == 0
        assert "worker stopping" in worker.log()
        assert "Traceback" not in worker.log()
