"""Continue, against every edge case captured from the reference (agno-anchor-captures/INDEX.md; the
capture number is in each test's name or docstring), and where we differ on purpose: the server's copy
of a call is the truth, undecided calls stay pending, conflicts are 409s, errors are honest."""
from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy as sa

from app.agent.definition import Agent
from app.agent.tools import ToolContext, tool
from app.extensions import db
from tests.api.apiclient import DELETE_50, NOTIFY_ADMIN, Api, documented, events, names, paused
from tests.conftest import wait_for_a_lock_waiter
from tests.fake_openai import ToolCall, Turn

PAUSED_TEXT = "I have tools to execute, but I need confirmation."


@tool(requires_confirmation=True, editable=True, preview=lambda ctx, a: f"Greets {a['name']}.")
def greet(ctx: ToolContext, name: str) -> str:
    """Greet someone (a tool whose arguments the person may edit before approving).

    Args:
        name: Who.
    """
    return f"Hello, {name}!"


@tool(requires_confirmation=True, editable=False)
def wave(ctx: ToolContext, name: str) -> str:
    """Wave at someone (a tool that forbids editing its arguments).

    Args:
        name: Who.
    """
    return f"*waves at {name}*"


GREETER = Agent(id="greeter", name="Greeter", instructions="Greet.", tools=[greet, wave])


def pause_on(api, fake_model, *calls, **form) -> dict:
    fake_model.script(Turn(tool_calls=list(calls or [DELETE_50])))
    return paused(api, **form)


def get_run(api, run_id: str, **params) -> dict:
    response = api.get(f"/agents/data_manager/runs/{run_id}", query_string=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_05_the_whole_paused_tool_object_echoed_back_runs_it(api, harness, fake_model):
    run = pause_on(api, fake_model)
    fake_model.script(Turn(text="Done."))
    before = harness.rows("users")
    echoed = [{**run["tools"][0], "confirmed": True}]
    body = api.continue_(run["run_id"], echoed, stream=False).get_json()
    assert body["status"] == "COMPLETED" and body["tools"][0]["result"].startswith("Deleted 50 records")
    assert harness.rows("users") == before - 50


def test_06_requires_confirmation_in_the_payload_changes_nothing(api, harness, fake_model):
    run = pause_on(api, fake_model)
    fake_model.script(Turn(text="Done."))
    before = harness.rows("users")
    payload = [{**documented(run["tools"][0])[0], "requires_confirmation": False}]  # a client cannot un-gate it
    assert api.continue_(run["run_id"], payload, stream=False).get_json()["status"] == "COMPLETED"
    assert harness.rows("users") == before - 50


@pytest.mark.parametrize("note, model_reads", [
    (None, "Rejected by the user."),                                                      # capture 07
    ("Too many rows; delete 5 instead", "Rejected by the user: Too many rows; delete 5 instead"),  # capture 08
])
def test_07_08_confirmed_false_rejects_and_the_model_reads_the_note(api, harness, fake_model, note, model_reads):
    run = pause_on(api, fake_model)
    fake_model.script(Turn(text="Understood, nothing deleted."))
    before = harness.rows("users")
    [tool] = run["tools"]
    payload = [{**documented(tool, confirmed=False)[0], "confirmation_note": note}]
    body = api.continue_(run["run_id"], payload, stream=False).get_json()
    assert (body["status"], body["content"]) == ("COMPLETED", "Understood, nothing deleted.")
    [tool] = body["tools"]
    assert (tool["confirmed"], tool["confirmation_note"], tool["result"], tool["tool_call_error"]) == \
        (False, note, None, True)
    assert harness.rows("users") == before
    assert fake_model.requests[-1].tool_outputs() == [(tool["tool_call_id"], model_reads)]


@pytest.mark.parametrize("tools", [None, "documented", "[]"], ids=["no-tools", "same-payload", "empty"])
def test_09_14_a_continue_of_a_finished_run_is_a_409_and_calls_no_model(api, harness, fake_model, tools):
    run = pause_on(api, fake_model)
    fake_model.script(Turn(text="Done."))
    payload = documented(run["tools"][0])
    assert api.continue_(run["run_id"], payload, stream=False).status_code == 200
    before, model_calls = harness.rows("users"), len(fake_model.requests)

    again = api.continue_(run["run_id"], payload if tools == "documented" else (tools or ""), stream=False)
    assert again.status_code == 409
    body = again.get_json()
    assert body["status"] == "COMPLETED" and "not waiting for a decision" in body["detail"]
    assert len(fake_model.requests) == model_calls, "no model call, no new assistant message"
    assert [m["role"] for m in get_run(api, run["run_id"])["messages"]].count("assistant") == 2
    assert harness.rows("users") == before


def test_10_concurrent_continues_run_the_tool_once_and_the_losers_get_409(app, api, harness, fake_model):
    run = pause_on(api, fake_model)
    fake_model.script(Turn(text="Done."))
    before = harness.rows("users")
    payload, barrier, answers = documented(run["tools"][0]), threading.Barrier(8), []

    def click():
        client = Api(app)  # a second tab, a double click, another script
        barrier.wait()
        response = client.continue_(run["run_id"], payload, stream=False)
        answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=click) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(code for code, _ in answers) == [200] + [409] * 7
    assert all(body["run_id"] == run["run_id"] and body["status"] in ("RUNNING", "COMPLETED")
               for code, body in answers if code == 409), "the loser sees the current run"
    assert [body["status"] for code, body in answers if code == 200] == ["COMPLETED"]
    assert harness.rows("users") == before - 50, "the tool ran exactly once"
    assert sum(1 for r in fake_model.requests if r.tool_outputs()) == 1, "the model was asked once"


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_a_continue_that_waited_for_another_decision_sees_it(app, api, harness, fake_model):
    """The continue reads the run, under its lock, with its calls in one statement; PostgreSQL re-reads
    only the run's row after the wait. A decision made meanwhile moved the run's events on, so the calls
    are read again: the same approval sent twice is an echo (200, still paused for the other call), not a
    conflict with itself."""
    run = pause_on(api, fake_model, DELETE_50, NOTIFY_ADMIN)
    first = run["tools"][0]
    answers = []

    def approve_the_first():
        answers.append(Api(app).continue_(run["run_id"], [{**first, "confirmed": True}], stream=False))

    with app.app_context(), db.engine.connect() as other:
        other.execute(sa.text("SELECT id FROM runs WHERE id = :id FOR UPDATE"), {"id": run["run_id"]})
        waiting = threading.Thread(target=approve_the_first)
        waiting.start()
        wait_for_a_lock_waiter(other, "the continue waits for the run's lock")
        # What another tab's approval of the first call writes meanwhile: the call and the run's events.
        other.execute(sa.text("UPDATE tool_calls SET status = 'approved', decided_by = 'user' "
                              "WHERE run_id = :run AND call_id = :call"),
                      {"run": run["run_id"], "call": first["tool_call_id"]})
        other.execute(sa.text("UPDATE runs SET last_seq = last_seq + 1 WHERE id = :id"), {"id": run["run_id"]})
        other.execute(sa.text("INSERT INTO run_events (run_id, seq, type, data, created_at) SELECT id, last_seq, "
                              "'tool_call_updated', '{}', now() FROM runs WHERE id = :id"), {"id": run["run_id"]})
        other.commit()
    waiting.join()

    [answer] = answers
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["status"] == "PAUSED"
    assert [tool.get("confirmed") for tool in body["tools"]] == [True, None]


@pytest.mark.parametrize("stream", [False, True])
def test_11_28_an_unknown_run_is_a_404_also_when_streaming(api, stream):
    response = api.continue_("00000000-0000-0000-0000-000000000000", "[]", stream=stream)
    assert response.status_code == 404 and response.mimetype == "application/json"
    assert response.get_json() == {"detail": "No runs found for run ID 00000000-0000-0000-0000-000000000000"}


@pytest.mark.parametrize("tools, status, detail", [
    ("[{'tool_call_id': 'x'", 400, "Invalid JSON in tools field"),                          # capture 12
    ('{"tool_call_id": "x"}', 422, "tools must be a JSON list of tool objects, not an object."),  # capture 13
    ('["a"]', 422, "tools[0] must be a tool object, not a string."),
    ("[1, 2]", 422, "tools[0] must be a tool object, not a number."),
    ('[{"tool_name": "delete_records"}]', 422, "tools[0].tool_call_id is required"),
    ('[{"tool_call_id": "x", "confirmed": "yes"}]', 422, "tools[0].confirmed must be true, false or null"),
    ('[{"tool_call_id": "x", "tool_args": [1]}]', 422, "tools[0].tool_args must be an object"),
])
def test_12_13_malformed_tools_are_400_or_422_with_a_readable_detail(api, harness, fake_model, tools, status,
                                                                      detail):
    run = pause_on(api, fake_model)
    response = api.continue_(run["run_id"], tools)
    assert response.status_code == status and response.get_json()["detail"].startswith(detail)
    assert get_run(api, run["run_id"])["status"] == "PAUSED"


def test_15_edited_arguments_of_a_tool_that_does_not_allow_editing_are_refused(app, api, harness, fake_model,
                                                                             monkeypatch):
    # delete_records allows editing now (issue 12); a tool with editable=False refuses as delete_records did.
    monkeypatch.setitem(app.extensions["agents"]._agents, "greeter", GREETER)
    fake_model.script(Turn(tool_calls=[ToolCall("wave", {"name": "Bob"})]))
    run = paused(api, "wave at bob", agent="greeter")
    [tool] = run["tools"]
    tampered = [{**documented(tool)[0], "tool_args": {"name": "Mallory"}}]
    response = api.continue_(run["run_id"], tampered, agent="greeter", stream=False)
    assert response.status_code == 422
    assert "wave does not allow editing its arguments" in response.get_json()["detail"]
    stored = api.get(f"/agents/greeter/runs/{run['run_id']}").get_json()["tools"][0]
    assert (stored["tool_args"], stored["confirmed"]) == ({"name": "Bob"}, None)

    fake_model.script(Turn(text="Done."))  # the call as stored can still be approved
    done = api.continue_(run["run_id"], documented(tool), agent="greeter", stream=False).get_json()
    assert done["status"] == "COMPLETED" and done["tools"][0]["result"] == "*waves at Bob*"


def test_16_a_different_tool_name_is_refused_and_nothing_runs(api, harness, fake_model):
    run = pause_on(api, fake_model)
    before = harness.rows("users")
    swapped = [{"tool_call_id": run["tools"][0]["tool_call_id"], "tool_name": "send_notification",
                "tool_args": {"recipient": "evil@example.com", "message": "hi"}, "confirmed": True}]
    response = api.continue_(run["run_id"], swapped, stream=False)
    assert response.status_code == 422
    assert response.get_json()["detail"] == \
        f"Tool call {run['tools'][0]['tool_call_id']!r} is a call of delete_records, not send_notification."
    assert harness.rows("users") == before and harness.rows("outbox") == 0
    assert get_run(api, run["run_id"])["status"] == "PAUSED"


def test_17_an_unknown_tool_call_id_is_refused_and_the_real_call_stays_pending(api, harness, fake_model):
    run = pause_on(api, fake_model)
    response = api.continue_(run["run_id"], [{"tool_call_id": "fc_nope", "tool_name": "delete_records",
                                              "confirmed": True}], stream=False)
    assert response.status_code == 422 and response.get_json()["detail"] == "This run has no tool call 'fc_nope'."
    assert get_run(api, run["run_id"])["tools"][0]["requires_confirmation"] is True


@pytest.mark.parametrize("tools", ["[]", ""], ids=["empty-list", "no-tools"])
def test_18_a_paused_run_with_no_decisions_answers_paused_again(api, harness, fake_model, tools):
    run = pause_on(api, fake_model)
    model_calls = len(fake_model.requests)
    response = api.continue_(run["run_id"], tools, stream=False)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["content"], body["tools"][0]["confirmed"]) == ("PAUSED", PAUSED_TEXT, None)
    assert len(fake_model.requests) == model_calls


def test_19_20_session_id_must_match_when_sent_and_may_be_left_out(api, harness, fake_model):
    run = pause_on(api, fake_model, session_id="sE")
    pause_on(api, fake_model, session_id="sF")  # the same person's other session
    tools = documented(run["tools"][0])
    for elsewhere in ("another_session", "sF"):
        wrong = api.continue_(run["run_id"], tools, session_id=elsewhere)
        assert wrong.status_code == 404 and wrong.get_json() == {"detail": f"No runs found for run ID {run['run_id']}"}
        assert api.get(f"/agents/data_manager/runs/{run['run_id']}", query_string={"session_id": elsewhere}) \
            .status_code == 404
    assert get_run(api, run["run_id"], session_id="sE")["status"] == "PAUSED"
    # The reference answers 400 without session_id (capture 20); the run id is enough for us.
    fake_model.script(Turn(text="Done."))
    assert api.continue_(run["run_id"], tools, stream=False).get_json()["status"] == "COMPLETED"


def test_21_22_two_calls_in_one_turn_one_confirmed_one_rejected(api, harness, fake_model):
    run = pause_on(api, fake_model, DELETE_50, NOTIFY_ADMIN)
    assert [t["tool_name"] for t in run["tools"]] == ["delete_records", "send_notification"]  # capture 21
    assert all(t["requires_confirmation"] for t in run["tools"]) and len(run["requirements"]) == 2
    fake_model.script(Turn(text="Deleted; no notification sent."))
    before = harness.rows("users")
    first, second = run["tools"]
    body = api.continue_(run["run_id"], documented(first) + documented(second, confirmed=False),
                         stream=False).get_json()
    assert body["status"] == "COMPLETED"
    assert [(t["confirmed"], t["tool_call_error"]) for t in body["tools"]] == [(True, False), (False, True)]
    assert harness.rows("users") == before - 50 and harness.rows("outbox") == 0
    outputs = fake_model.requests[-1].tool_outputs()
    assert [call_id for call_id, _ in outputs] == [first["tool_call_id"], second["tool_call_id"]], \
        "one model call with both outcomes"


def test_23_a_call_left_out_stays_pending_and_nothing_of_the_turn_runs_yet(api, harness, fake_model):
    run = pause_on(api, fake_model, DELETE_50, NOTIFY_ADMIN)
    first, second = run["tools"]
    before, model_calls = harness.rows("users"), len(fake_model.requests)

    partial = api.continue_(run["run_id"], documented(first), stream=False)
    assert partial.status_code == 200
    body = partial.get_json()
    assert body["status"] == "PAUSED"
    assert [(t["confirmed"], t["requires_confirmation"]) for t in body["tools"]] == [(True, False), (None, True)]
    assert [r["tool_execution"]["tool_call_id"] for r in body["requirements"]] == [second["tool_call_id"]]
    assert harness.rows("users") == before and len(fake_model.requests) == model_calls, \
        "no call of the turn runs until every gated one is decided"

    fake_model.script(Turn(text="Both done."))
    # Echoing the first decision again is fine; the second one completes the turn.
    body = api.continue_(run["run_id"], documented(first) + documented(second), stream=False).get_json()
    assert body["status"] == "COMPLETED"
    assert harness.rows("users") == before - 50 and harness.rows("outbox") == 1


def test_23b_confirmed_null_leaves_every_call_pending(api, harness, fake_model):
    run = pause_on(api, fake_model, DELETE_50, NOTIFY_ADMIN)
    echoed = [{**tool, "confirmed": None} for tool in run["tools"]]
    body = api.continue_(run["run_id"], echoed, stream=False).get_json()
    assert body["status"] == "PAUSED" and [t["confirmed"] for t in body["tools"]] == [None, None]


def test_a_decision_that_contradicts_an_earlier_one_is_a_409(api, harness, fake_model):
    run = pause_on(api, fake_model, DELETE_50, NOTIFY_ADMIN)
    first, second = run["tools"]
    api.continue_(run["run_id"], documented(first, confirmed=False), stream=False)
    response = api.continue_(run["run_id"], documented(first) + documented(second), stream=False)
    assert response.status_code == 409 and response.get_json()["detail"] == \
        f"Tool call {first['tool_call_id']!r} was already rejected."
    assert response.get_json()["tools"][1]["confirmed"] is None, "all or nothing: the second stays pending"


def test_04_04b_a_model_failure_during_a_continue_is_a_502_and_the_same_continue_retries(
        api, harness, fake_model):
    run = pause_on(api, fake_model)
    fake_model.script(Turn(status=401, error_message="Incorrect API key provided"))  # 401s are not retried
    before = harness.rows("users")
    payload = documented(run["tools"][0])

    failed = api.continue_(run["run_id"], payload, stream=False)
    assert failed.status_code == 502
    body = failed.get_json()
    assert body["status"] == "ERROR" and "rejected the API key (401)" in body["detail"]
    assert [e["event"] for e in body["events"]] == ["RunError"]
    assert body["tools"][0]["result"].startswith("Deleted 50 records"), "the tool had run"
    assert harness.rows("users") == before - 50

    fake_model.script(Turn(text="Recovered: 50 users deleted."))
    retried = api.continue_(run["run_id"], payload, stream=False)
    assert retried.status_code == 200
    assert (retried.get_json()["status"], retried.get_json()["content"]) == \
        ("COMPLETED", "Recovered: 50 users deleted.")
    assert harness.rows("users") == before - 50, "the retry did not run the tool again"


def test_26_a_rejected_continue_streams_no_tool_events(api, harness, fake_model):
    run = pause_on(api, fake_model)
    fake_model.script(Turn(text="Fine, I left them."))
    stream = events(api.continue_(run["run_id"], documented(run["tools"][0], confirmed=False)))
    assert names(stream) == ["RunContinued", "ModelRequestStarted", "RunContent", "ModelRequestCompleted",
                             "RunContentCompleted", "RunCompleted"]


def test_a_partial_continue_streams_a_run_paused_with_the_rest(api, harness, fake_model):
    run = pause_on(api, fake_model, DELETE_50, NOTIFY_ADMIN)
    stream = events(api.continue_(run["run_id"], documented(run["tools"][0])))
    assert names(stream) == ["RunContentCompleted", "RunPaused"]
    assert [t["confirmed"] for t in stream[-1][1]["tools"]] == [True, None]


def test_a_model_failure_while_streaming_ends_with_run_error(api, harness, fake_model):
    run = pause_on(api, fake_model)
    fake_model.script(Turn(status=401, error_message="bad key"))
    stream = events(api.continue_(run["run_id"], documented(run["tools"][0])))
    assert names(stream)[:3] == ["RunContinued", "ToolCallStarted", "ToolCallCompleted"]
    assert names(stream)[-1] == "RunError" and "401" in stream[-1][1]["content"]


def test_30_a_model_that_forgot_the_chain_gets_the_whole_conversation_again(api, harness, fake_model):
    run = pause_on(api, fake_model)
    fake_model.forget_responses()  # the model server restarted, or the chain expired
    fake_model.script(Turn(text="Done after a replay."))
    body = api.continue_(run["run_id"], documented(run["tools"][0]), stream=False).get_json()
    assert (body["status"], body["content"]) == ("COMPLETED", "Done after a replay.")
    assert fake_model.requests[-1].previous_response_id is None, "the context was replayed in full"


def test_31_a_message_sent_while_paused_rejects_the_pending_call_with_it(api, harness, fake_model):
    run = pause_on(api, fake_model, session_id="s31")
    fake_model.script(Turn(text="OK, I won't delete anything."))
    before = harness.rows("users")
    answer = api.run("Actually, don't. Just say hello.", session_id="s31", stream=False).get_json()
    # The reference starts a second run and leaves this one PAUSED forever; we resolve it, in the same run.
    assert (answer["run_id"], answer["status"]) == (run["run_id"], "COMPLETED")
    [tool] = answer["tools"]
    assert (tool["confirmed"], tool["confirmation_note"]) == (False, "Actually, don't. Just say hello.")
    assert harness.rows("users") == before
    late = api.continue_(run["run_id"], documented(tool), stream=False)
    assert late.status_code == 409 and harness.rows("users") == before


def test_fields_for_other_kinds_of_pause_are_understood_and_refused_for_a_confirmation(api, harness, fake_model):
    run = pause_on(api, fake_model)
    [tool] = run["tools"]
    external = [{**tool, "external_execution_required": True, "result": "I deleted them myself"}]
    response = api.continue_(run["run_id"], external, stream=False)
    assert response.status_code == 422 and "takes no result from the client" in response.get_json()["detail"]
    with_input = [{**tool, "requires_user_input": True, "user_input_schema": [{"name": "count", "value": 5}]}]
    response = api.continue_(run["run_id"], with_input, stream=False)
    assert response.status_code == 422 and "does not ask for input" in response.get_json()["detail"]
    assert harness.rows("outbox") == 0 and get_run(api, run["run_id"])["status"] == "PAUSED"


def test_cancel_a_paused_run(api, harness, fake_model):
    run = pause_on(api, fake_model)
    response = api.post(f"/agents/data_manager/runs/{run['run_id']}/cancel")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "CANCELLED" and body["tools"][0]["confirmed"] is False
    again = api.post(f"/agents/data_manager/runs/{run['run_id']}/cancel")
    assert again.status_code == 409 and again.get_json()["status"] == "CANCELLED"
    assert api.continue_(run["run_id"], documented(run["tools"][0])).status_code == 409


def test_27_a_plain_text_run_streams_its_reply(api, fake_model):
    fake_model.script(Turn(text="Hello! I can delete records or send notifications when asked."))
    stream = events(api.run("Hello there", session_id="sH4"))
    assert names(stream) == ["RunStarted", "ModelRequestStarted", "RunContent", "ModelRequestCompleted",
                             "RunContentCompleted", "RunCompleted"]
    assert "".join(p["content"] for n, p in stream if n == "RunContent") == stream[-1][1]["content"] == \
        "Hello! I can delete records or send notifications when asked."


def test_a_run_that_needs_no_confirmation_streams_through(api, harness, fake_model):
    """A tool that needs no confirmation runs on the way, announced like any other."""
    fake_model.script(Turn(tool_calls=[ToolCall("count_records", {"table_name": "users"})]),
                      Turn(text="There are many users."))
    stream = events(api.run("How many users?"))
    assert names(stream) == ["RunStarted", "ModelRequestStarted", "ModelRequestCompleted", "ToolCallStarted",
                             "ToolCallCompleted", "ModelRequestStarted", "RunContent", "ModelRequestCompleted",
                             "RunContentCompleted", "RunCompleted"]
    tool = dict(stream)["ToolCallCompleted"]["tool"]
    assert (tool["tool_name"], tool["confirmed"], tool["requires_confirmation"]) == ("count_records", None, False)
    assert stream[-1][1]["content"] == "There are many users."


def test_edits_count_only_where_the_tool_allows_them(app, api, harness, fake_model, monkeypatch):
    """An editable tool: edited arguments are validated, approved as edited (or left pending with a
    fresh preview); a non-editable one refuses (test 15)."""
    monkeypatch.setitem(app.extensions["agents"]._agents, "greeter", GREETER)
    fake_model.script(Turn(tool_calls=[ToolCall("greet", {"name": "Bob"})]))
    run = paused(api, "greet bob", agent="greeter")
    [call] = run["tools"]
    assert call["preview"] == "Greets Bob."

    bad = api.continue_(run["run_id"], [{**call, "tool_args": {"name": 5}, "confirmed": True}], agent="greeter")
    assert bad.status_code == 422 and "expected a string" in bad.get_json()["detail"]

    edited = api.continue_(run["run_id"], [{**call, "tool_args": {"name": "Alice"}, "confirmed": None}],
                           agent="greeter", stream=False).get_json()
    assert edited["status"] == "PAUSED", "an edit without a decision waits for one"
    assert (edited["tools"][0]["tool_args"], edited["tools"][0]["preview"]) == ({"name": "Alice"}, "Greets Alice.")

    fake_model.script(Turn(text="Greeted."))
    done = api.continue_(run["run_id"], [{"tool_call_id": call["tool_call_id"], "tool_args": {"name": "Carol"},
                                          "confirmed": True}], agent="greeter", stream=False).get_json()
    assert done["status"] == "COMPLETED" and done["tools"][0]["result"] == "Hello, Carol!"
    assert json.loads(json.dumps(done["tools"][0]["tool_args"])) == {"name": "Carol"}
