"""The API on real gunicorn servers: a paused run survives a restart (capture 29), and continues racing
across worker processes run the tool once (capture 10, where the reference ran it twice)."""
from __future__ import annotations

import json
import threading

import requests

from tests.api.apiclient import AUTH, DELETE_50, documented
from tests.fake_openai import Turn
from tests.live import LiveServer


def post(url: str, **form) -> requests.Response:
    return requests.post(url, headers=AUTH, timeout=30, files={k: (None, v) for k, v in form.items()})


def test_29_a_run_paused_before_a_restart_is_continued_after_it(live_server, server_env, harness, fake_model,
                                                                 tmp_path):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Done after the restart."))
    before = harness.rows("users")
    run = post(f"{live_server.url}/agents/data_manager/runs", message="Delete 50 old records from the users table",
               user_id="test_user", session_id="sR", stream="false").json()
    assert run["status"] == "PAUSED"

    live_server.stop()
    restarted = LiveServer(server_env, log_path=tmp_path / "gunicorn-2.log").start()
    try:
        body = post(f"{restarted.url}/agents/data_manager/runs/{run['run_id']}/continue",
                    tools=json.dumps(documented(run["tools"][0])), session_id="sR", user_id="test_user",
                    stream="false").json()
        assert (body["status"], body["content"]) == ("COMPLETED", "Done after the restart.")
        assert harness.rows("users") == before - 50
    finally:
        restarted.stop()


def test_10_racing_continues_across_workers_run_the_tool_once(live_server, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Done."))
    before = harness.rows("users")
    run = post(f"{live_server.url}/agents/data_manager/runs", message="delete", stream="false").json()
    url = f"{live_server.url}/agents/data_manager/runs/{run['run_id']}/continue"
    payload, barrier, codes = json.dumps(documented(run["tools"][0])), threading.Barrier(12), []

    def click():
        barrier.wait()
        codes.append(post(url, tools=payload, stream="false").status_code)

    threads = [threading.Thread(target=click) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [200] + [409] * 11
    assert harness.wait(run["run_id"], "completed", "failed").status == "completed"
    assert harness.rows("users") == before - 50
