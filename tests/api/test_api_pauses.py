"""The other kinds of pause over the REST API, in the reference's shapes: a call that asks for input
(`requires_user_input`, `user_input_schema` with values sent back), one the person runs themselves
(`external_execution_required`, `result` sent back), an approval whose preview changed (409 with the
current state), and an edit the model is told about."""
from __future__ import annotations

from tests.api.apiclient import documented, paused
from tests.fake_openai import ToolCall, Turn


def pause_on(api, fake_model, call: ToolCall) -> dict:
    fake_model.script(Turn(tool_calls=[call]))
    return paused(api, "go", agent="ops_desk")


def test_a_call_that_asks_for_input_lists_its_fields_and_runs_with_the_values_sent_back(api, harness, fake_model):
    run = pause_on(api, fake_model, ToolCall("schedule_maintenance", {"table_name": "orders"}))
    [tool] = run["tools"]
    assert (tool["requires_user_input"], tool["requires_confirmation"], tool["answered"]) == (True, False, False)
    assert tool["user_input_schema"] == [{"name": "window", "field_type": "str", "value": None,
                                          "description": 'When: "tonight 22:00", "Saturday 06:00" or "Sunday 02:00".'}]
    assert run["requirements"][0]["tool_execution"]["user_input_schema"][0]["name"] == "window"

    wrong = [{**tool, "user_input_schema": [{"name": "window", "value": "never"}]}]
    response = api.continue_(run["run_id"], wrong, agent="ops_desk", stream=False)
    assert response.status_code == 422 and "window" in response.get_json()["detail"]
    not_asked = [{**tool, "user_input_schema": [{"name": "table_name", "value": "users"}]}]
    response = api.continue_(run["run_id"], not_asked, agent="ops_desk", stream=False)
    assert response.status_code == 422 and "asks only for window" in response.get_json()["detail"]
    confirm_only = [{"tool_call_id": tool["tool_call_id"], "confirmed": True}]
    response = api.continue_(run["run_id"], confirm_only, agent="ops_desk", stream=False)
    assert response.status_code == 422 and "asks for input" in response.get_json()["detail"]

    fake_model.script(Turn(text="Scheduled."))
    answer = [{**tool, "user_input_schema": [{**tool["user_input_schema"][0], "value": "Sunday 02:00"}]}]
    body = api.continue_(run["run_id"], answer, agent="ops_desk", stream=False).get_json()
    assert body["status"] == "COMPLETED"
    [done] = body["tools"]
    assert done["result"].startswith("Maintenance of orders scheduled for Sunday 02:00.") and done["answered"] is True
    assert done["user_input_schema"][0]["value"] == "Sunday 02:00" and harness.rows("outbox") == 1
    told = [m for m in body["messages"] if m["role"] == "tool"][0]["content"]
    assert told.startswith('The person filled in: window: "Sunday 02:00".')
    calls_to_model = len(fake_model.requests)
    again = api.continue_(run["run_id"], answer, agent="ops_desk", stream=False)
    assert again.status_code == 409 and again.get_json()["status"] == "COMPLETED", "a decision is single-use"
    assert harness.rows("outbox") == 1 and len(fake_model.requests) == calls_to_model


def test_a_handed_over_call_takes_the_result_the_model_reads_and_never_runs(api, harness, fake_model):
    run = pause_on(api, fake_model, ToolCall("restart_service", {"service": "worker", "reason": "stuck"}))
    [tool] = run["tools"]
    assert (tool["external_execution_required"], tool["requires_confirmation"]) == (True, False)
    response = api.continue_(run["run_id"], [{**tool, "confirmed": True}], agent="ops_desk", stream=False)
    assert response.status_code == 422 and "send its result" in response.get_json()["detail"]

    fake_model.script(Turn(text="Good."))
    body = api.continue_(run["run_id"], [{**tool, "result": {"restarted": True}}], agent="ops_desk",
                         stream=False).get_json()
    assert body["status"] == "COMPLETED"
    assert (body["tools"][0]["result"], body["tools"][0]["tool_call_error"]) == ('{"restarted": true}', False)
    assert [out for _, out in fake_model.requests[-1].tool_outputs()] == ['{"restarted": true}']


def test_an_approval_whose_preview_changed_is_a_409_with_the_new_preview_and_runs_nothing(api, harness,
                                                                                          fake_model, app):
    import sqlalchemy as sa

    from app.extensions import db
    run = pause_on(api, fake_model, ToolCall("delete_records", {"table_name": "users", "count": 50}))
    [tool] = run["tools"]
    with app.app_context(), db.engines["workspace"].begin() as conn:
        conn.execute(sa.text("DELETE FROM users WHERE id IN (SELECT id FROM users ORDER BY id LIMIT 100)"))
    shrunk = harness.rows("users")

    response = api.continue_(run["run_id"], documented(tool), agent="ops_desk", stream=False)
    body = response.get_json()
    assert response.status_code == 409 and "The preview changed" in body["detail"]
    assert body["status"] == "PAUSED" and f"of {shrunk:,} rows in users" in body["tools"][0]["preview"]
    assert harness.rows("users") == shrunk and len(fake_model.requests) == 1, "nothing ran, no model call"

    fake_model.script(Turn(text="Deleted."))
    body = api.continue_(run["run_id"], documented(tool), agent="ops_desk", stream=False).get_json()
    assert body["status"] == "COMPLETED" and harness.rows("users") == shrunk - 50


def test_an_edit_is_approved_as_edited_and_the_model_is_told_what_changed(api, harness, fake_model):
    run = pause_on(api, fake_model, ToolCall("delete_records", {"table_name": "events", "count": 5000}))
    [tool] = run["tools"]
    before = harness.rows("events")
    fake_model.script(Turn(text="Deleted ten."))
    edited = [{**tool, "tool_args": {"table_name": "events", "count": 10}, "confirmed": True}]
    body = api.continue_(run["run_id"], edited, agent="ops_desk", stream=False).get_json()
    assert body["status"] == "COMPLETED" and harness.rows("events") == before - 10
    assert body["tools"][0]["tool_args"] == {"table_name": "events", "count": 10}
    assert fake_model.requests[-1].tool_outputs()[0][1].startswith(
        "The person edited the arguments: count: 5000 → 10.\nDeleted 10 records")
