"""Real gunicorn servers (production config, gevent workers): a paused run survives a restart, and
racing approvals across worker processes execute the tool exactly once."""
from __future__ import annotations

import threading

import pytest

from tests.fake_openai import ToolCall, Turn
from tests.live import Client, LiveServer, run_id_in

DELETE_50 = ToolCall("delete_records", {"table_name": "users", "count": 50})



@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_a_paused_run_survives_a_server_restart(live_server, server_env, harness, fake_model, tmp_path, kill):
    fake_model.script(Turn(text="Deleting 50 users.", tool_calls=[DELETE_50]), Turn(text="Done, 50 fewer users."))
    client = Client(live_server.url)
    chat = client.new_chat()
    before = harness.rows("users")
    sent = client.post(f"/chats/{chat}/messages", {"message": "Delete 50 old records from the users table"})
    harness.wait(run_id_in(sent.text), "paused")
    run_id, call_id = client.pending_call(chat)

    live_server.stop(kill=kill)
    restarted = LiveServer(server_env, log_path=tmp_path / "gunicorn-2.log").start()
    try:
        client.base = restarted.url  # same browser (cookies), new server
        page = client.get(f"/chats/{chat}").text
        assert "Needs your approval" in page, "the pending card is still there"
        assert client.post(f"/runs/{run_id}/calls/{call_id}/approve").status_code == 200
        assert harness.wait(run_id, "completed", "failed").status == "completed"
        assert harness.rows("users") == before - 50, "the tool ran exactly once"
        assert "Done, 50 fewer users." in client.get(f"/chats/{chat}").text
    finally:
        restarted.stop()


def test_racing_approvals_across_workers_execute_once(live_server, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Done."))
    client = Client(live_server.url)
    chat = client.new_chat()
    before = harness.rows("users")
    harness.wait(client.send(chat, "delete"), "paused")
    run_id, call_id = client.pending_call(chat)

    statuses, barrier = [], threading.Barrier(20)

    def approve():
        racer = Client(live_server.url)
        racer.http.cookies.update(client.http.cookies)  # the same person, many tabs and clicks
        racer.csrf = client.csrf
        barrier.wait()
        response = racer.post(f"/runs/{run_id}/calls/{call_id}/approve")
        statuses.append((response.status_code, response.text))

    threads = [threading.Thread(target=approve) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    codes = sorted(code for code, _ in statuses)
    assert codes == [200] + [409] * 19
    assert all("already" in text for code, text in statuses if code == 409)
    assert harness.wait(run_id, "completed", "failed").status == "completed"
    assert harness.rows("users") == before - 50
