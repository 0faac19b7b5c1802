"""The reference's documented flow, as written in its docs: start a run (it pauses on delete_records),
continue it with `tool_call_id`, `tool_name`, `tool_args` and `confirmed: true`, and the tool runs
exactly once. Over the test client (streamed and as JSON) and over real HTTP against gunicorn."""
from __future__ import annotations

import json

import requests
import sqlalchemy as sa

from app.extensions import db
from tests.api.apiclient import AUTH, DELETE_50, NOTIFY_ADMIN, documented, events, names, paused
from tests.fake_openai import ToolCall, Turn

MESSAGE = "Delete 50 old records from the users table"
# The fields the reference's captures show (02_run_stream_false_PAUSED.json), which clients may read.
RUN_FIELDS = {"run_id", "agent_id", "agent_name", "session_id", "user_id", "content", "content_type", "model",
              "model_provider", "session_state", "created_at", "status", "metrics", "messages", "tools",
              "requirements", "input"}
TOOL_FIELDS = {"tool_call_id", "tool_name", "tool_args", "tool_call_error", "result", "metrics", "child_run_id",
               "stop_after_tool_call", "created_at", "requires_confirmation", "confirmed", "confirmation_note",
               "requires_user_input", "user_input_schema", "user_feedback_schema", "answered",
               "external_execution_required", "external_execution_silent", "approval_type", "approval_id",
               "parent_tool_call_id"}
FRAME_FIELDS = {"created_at", "event", "agent_id", "agent_name", "run_id", "session_id", "nested_depth"}


def test_the_documented_flow_streams_by_default_and_runs_the_tool_once(api, harness, fake_model):
    fake_model.script(Turn(text="I'll delete the 50 oldest users.", tool_calls=[DELETE_50]),
                      Turn(text="Done. The tool reported: Deleted 50 records from users"))
    before = harness.rows("users")

    started = api.run(MESSAGE, user_id="test_user", session_id="test_session")  # no stream field: SSE
    assert started.status_code == 200 and started.mimetype == "text/event-stream"
    assert started.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    stream = events(started)
    assert names(stream)[:2] == ["RunStarted", "ModelRequestStarted"]
    assert names(stream)[-3:] == ["ModelRequestCompleted", "RunContentCompleted", "RunPaused"]
    assert "".join(p["content"] for n, p in stream if n == "RunContent") == "I'll delete the 50 oldest users."
    for name, payload in stream:
        assert FRAME_FIELDS <= set(payload) and payload["event"] == name
        assert (payload["agent_id"], payload["agent_name"], payload["session_id"]) == \
            ("data_manager", "Data Manager", "test_session")
    pause = stream[-1][1]
    assert pause["content"] == "I have tools to execute, but I need confirmation."
    [tool] = pause["tools"]
    assert TOOL_FIELDS <= set(tool)
    assert (tool["tool_name"], tool["tool_args"], tool["requires_confirmation"], tool["confirmed"]) == \
        ("delete_records", {"table_name": "users", "count": 50}, True, None)
    assert [r["tool_execution"]["tool_call_id"] for r in pause["requirements"]] == [tool["tool_call_id"]]
    assert harness.rows("users") == before, "nothing runs before the decision"

    resumed = api.continue_(pause["run_id"], documented(tool), session_id="test_session", user_id="test_user")
    stream = events(resumed)
    assert names(stream)[:3] == ["RunContinued", "ToolCallStarted", "ToolCallCompleted"]
    assert names(stream)[-2:] == ["RunContentCompleted", "RunCompleted"]
    done = dict(stream)["ToolCallCompleted"]["tool"]
    assert (done["result"], done["tool_call_error"], done["confirmed"]) == \
        (f"Deleted 50 records from users. {before - 50:,} remain.", False, True)
    assert stream[-1][1]["content"] == "Done. The tool reported: Deleted 50 records from users"
    assert harness.rows("users") == before - 50, "the tool ran exactly once"
    # What the model read back is the tool's real output.
    assert fake_model.requests[-1].tool_outputs()[-1][1] == done["result"]


def test_the_documented_flow_as_json(api, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Deleted them."))
    before = harness.rows("users")
    run = paused(api, MESSAGE, user_id="test_user", session_id="test_session")
    assert RUN_FIELDS <= set(run)
    assert (run["agent_id"], run["agent_name"], run["session_id"], run["user_id"]) == \
        ("data_manager", "Data Manager", "test_session", "test_user")
    assert run["content"] == "I have tools to execute, but I need confirmation."
    assert [m["role"] for m in run["messages"]] == ["system", "user", "assistant"]
    assert run["messages"][2]["tool_calls"][0]["function"] == \
        {"name": "delete_records", "arguments": json.dumps({"table_name": "users", "count": 50})}
    [tool] = run["tools"]
    assert TOOL_FIELDS <= set(tool) and tool["requires_confirmation"] is True and tool["confirmed"] is None

    answer = api.continue_(run["run_id"], documented(tool), session_id="test_session", user_id="test_user",
                           stream=False)
    body = answer.get_json()
    assert answer.status_code == 200, body
    assert (body["run_id"], body["status"], body["content"]) == (run["run_id"], "COMPLETED", "Deleted them.")
    [tool] = body["tools"]
    assert (tool["confirmed"], tool["tool_call_error"], tool["requires_confirmation"]) == (True, False, False)
    assert tool["result"] == f"Deleted 50 records from users. {before - 50:,} remain."
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert harness.rows("users") == before - 50

    again = api.get(f"/agents/data_manager/runs/{run['run_id']}?session_id=test_session&user_id=test_user")
    assert again.status_code == 200 and again.get_json()["status"] == "COMPLETED"


def test_a_run_of_several_turns_lists_every_call_and_message_in_order(api, harness, fake_model):
    """The run's JSON after two model turns with calls: each turn's calls under its own reply, in order."""
    count_users = ToolCall("count_records", {"table_name": "users"})
    fake_model.script(Turn(text="Counting first.", tool_calls=[count_users]),
                      Turn(text="Now the delete.", tool_calls=[DELETE_50, NOTIFY_ADMIN]))
    run = paused(api, MESSAGE)
    assert [t["tool_name"] for t in run["tools"]] == ["count_records", "delete_records", "send_notification"]
    assert [t["requires_confirmation"] for t in run["tools"]] == [False, True, True]
    assert [m["role"] for m in run["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    first_reply, second_reply = run["messages"][2], run["messages"][4]
    assert (first_reply["content"], second_reply["content"]) == ("Counting first.", "Now the delete.")
    assert [c["function"]["name"] for c in first_reply["tool_calls"]] == ["count_records"]
    assert [c["function"]["name"] for c in second_reply["tool_calls"]] == ["delete_records", "send_notification"]
    assert [r["tool_execution"]["tool_name"] for r in run["requirements"]] == ["delete_records", "send_notification"]


def test_the_documented_curl_flow_over_real_http(live_server, harness, fake_model):
    """What a script does with curl: multipart forms, the bearer header, the default (streamed) answers."""
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Done. 50 fewer users."))
    before = harness.rows("users")
    http = requests.Session()
    http.headers.update(AUTH)

    started = http.post(f"{live_server.url}/agents/data_manager/runs", timeout=30, files={
        "message": (None, MESSAGE), "user_id": (None, "test_user"), "session_id": (None, "test_session")})
    assert started.status_code == 200 and started.headers["Content-Type"].startswith("text/event-stream")
    frames = [json.loads(line[6:]) for line in started.text.splitlines() if line.startswith("data: ")]
    assert frames[-1]["event"] == "RunPaused"
    [tool] = frames[-1]["tools"]

    resumed = http.post(f"{live_server.url}/agents/data_manager/runs/{frames[-1]['run_id']}/continue", timeout=30,
                        files={"tools": (None, json.dumps(documented(tool))), "session_id": (None, "test_session"),
                               "user_id": (None, "test_user")})
    assert resumed.status_code == 200
    frames = [json.loads(line[6:]) for line in resumed.text.splitlines() if line.startswith("data: ")]
    assert [f["event"] for f in frames][:3] == ["RunContinued", "ToolCallStarted", "ToolCallCompleted"]
    assert frames[-1]["event"] == "RunCompleted" and frames[-1]["content"] == "Done. 50 fewer users."
    assert harness.rows("users") == before - 50, "the tool ran exactly once"

    run = http.get(f"{live_server.url}/agents/data_manager/runs/{frames[-1]['run_id']}",
                   params={"user_id": "test_user", "session_id": "test_session"}, timeout=10).json()
    assert run["status"] == "COMPLETED" and run["tools"][0]["confirmed"] is True
    assert http.get(f"{live_server.url}/health", timeout=10).json()["status"] == "ok"


def test_a_slow_reply_streams_as_it_comes_and_each_word_once(app, api, fake_model):
    words = " ".join(f"w{i}" for i in range(40))
    fake_model.script(Turn(text=words, token_delay=0.03))
    stream = events(api.run("Talk slowly", session_id="slow"))
    deltas = [p["content"] for n, p in stream if n == "RunContent"]
    assert names(stream)[-1] == "RunCompleted"
    assert "".join(deltas) == stream[-1][1]["content"] == words
    with app.app_context():
        stored = db.session.scalar(sa.text("SELECT count(*) FROM run_events WHERE run_id = :run AND type = 'text'"),
                                   {"run": stream[-1][1]["run_id"]})
    # Words relayed from memory arrive between the writes that store them (and none twice).
    assert stored < len(deltas), (stored, len(deltas))
