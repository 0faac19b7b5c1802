"""Agents, sessions and run lists: the reference's shapes (I1_get_sessions.json), paging, the pending
approvals of a conversation (`/sessions/{id}/runs?status=PAUSED`), rename and delete."""
from __future__ import annotations

from tests.api.apiclient import DELETE_50, documented, paused
from tests.fake_openai import Turn

SESSION_FIELDS = {"session_id", "session_name", "session_state", "created_at", "updated_at", "session_type",
                  "user_id", "agent_id", "metrics"}


def test_agents(api):
    agent, ops_desk = api.get("/agents").get_json()  # the two built-in agents
    assert (agent["id"], agent["name"]) == ("data_manager", "Data Manager")
    assert (ops_desk["id"], ops_desk["name"]) == ("ops_desk", "Ops Desk")
    gated = {t["name"]: t["requires_confirmation"] for t in agent["tools"]["tools"]}
    assert gated == {"list_tables": False, "count_records": False, "delete_records": True,
                     "send_notification": True}
    assert api.get("/agents/data_manager").get_json() == agent
    assert api.get("/agents/nope").status_code == 404


def test_sessions_are_paged_and_sorted(api, fake_model):
    fake_model.respond_with(lambda request: Turn(text="Noted."))
    for name in ("first", "second", "third"):
        assert api.run(f"this is the {name} one", session_id=name, user_id="u", stream=False).status_code == 200
    page = api.get("/sessions", query_string={"user_id": "u", "limit": 2}).get_json()
    assert [s["session_id"] for s in page["data"]] == ["third", "second"], "newest first"
    assert page["meta"] == {"page": 1, "limit": 2, "total_pages": 2, "total_count": 3}
    assert SESSION_FIELDS <= set(page["data"][0])
    assert (page["data"][0]["session_name"], page["data"][0]["session_type"], page["data"][0]["user_id"]) == \
        ("this is the third one", "agent", "u")
    rest = api.get("/sessions", query_string={"user_id": "u", "limit": 2, "page": 2}).get_json()
    assert [s["session_id"] for s in rest["data"]] == ["first"]
    oldest = api.get("/sessions", query_string={"user_id": "u", "sort_order": "asc"}).get_json()
    assert [s["session_id"] for s in oldest["data"]] == ["first", "second", "third"]
    assert api.get("/sessions", query_string={"user_id": "u", "type": "team"}).get_json()["data"] == []
    for bad in ({"limit": 0}, {"limit": "many"}, {"page": 0}, {"sort_by": "name"}, {"sort_order": "up"}):
        response = api.get("/sessions", query_string=bad)
        assert response.status_code == 422 and "detail" in response.get_json(), bad


def test_a_new_session_is_made_without_session_id(api, fake_model):
    fake_model.script(Turn(text="One."), Turn(text="Two."))
    first = api.run("hello", stream=False).get_json()
    second = api.run("hello", stream=False).get_json()
    assert first["session_id"] != second["session_id"]
    # Sessions we named can be used by that name too.
    fake_model.script(Turn(text="Three."))
    third = api.run("again", session_id=first["session_id"], stream=False).get_json()
    assert third["session_id"] == first["session_id"]


def test_a_conversations_pending_approvals(api, harness, fake_model):
    fake_model.script(Turn(text="Hi."), Turn(tool_calls=[DELETE_50]))
    api.run("hello", session_id="s1", stream=False)
    run = paused(api, session_id="s1")
    pending = api.get("/sessions/s1/runs", query_string={"status": "PAUSED"}).get_json()
    assert [r["run_id"] for r in pending] == [run["run_id"]]
    assert [r["status"] for r in api.get("/sessions/s1/runs").get_json()] == ["COMPLETED", "PAUSED"]
    by_agent = api.get("/agents/data_manager/runs", query_string={"session_id": "s1", "status": "paused"})
    assert [r["run_id"] for r in by_agent.get_json()] == [run["run_id"]]
    assert api.get("/agents/data_manager/runs", query_string={"session_id": "nope"}).get_json() == []
    bad = api.get("/sessions/s1/runs", query_string={"status": "WAITING"})
    assert bad.status_code == 422 and "status must be one of" in bad.get_json()["detail"]

    detail = api.get("/sessions/s1").get_json()
    assert detail["session_id"] == "s1" and detail["session_name"] == "hello"
    assert [m["role"] for m in detail["chat_history"]] == ["user", "assistant", "user", "assistant"]


def test_rename_and_delete(api, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]))
    run = paused(api, session_id="doomed")
    renamed = api.post("/sessions/doomed/rename", json={"session_name": "Cleanup  of users"})
    assert renamed.status_code == 200 and renamed.get_json()["session_name"] == "Cleanup of users"
    assert renamed.get_json() == api.get("/sessions/doomed").get_json(), "the detail, as GET answers it"
    as_form = api.post("/sessions/doomed/rename", data={"session_name": "Cleanup"})
    assert as_form.get_json()["session_name"] == "Cleanup"
    assert api.post("/sessions/doomed/rename", json={}).status_code == 422

    assert api.delete("/sessions/doomed").status_code == 204
    assert api.get("/sessions/doomed").status_code == 404
    assert api.get(f"/agents/data_manager/runs/{run['run_id']}").status_code == 404, "its runs went with it"
    assert api.continue_(run["run_id"], documented(run["tools"][0])).status_code == 404
    assert api.delete("/sessions/doomed").status_code == 404


def test_a_session_whose_run_is_answering_cannot_be_deleted(api, harness, fake_model):
    fake_model.script(Turn(text="Hi."), Turn(text="word " * 400, token_delay=0.01))
    first = api.run("hello", session_id="busy", stream=False).get_json()
    chat_id = harness.run(first["run_id"]).session_id
    run_id = harness.send(chat_id, "talk a lot")
    harness.wait(run_id, "running")
    response = api.delete("/sessions/busy")
    assert response.status_code == 409 and "cancel its run first" in response.get_json()["detail"]
    assert api.post(f"/agents/data_manager/runs/{run_id}/cancel").get_json()["status"] == "CANCELLED"
    assert api.delete("/sessions/busy").status_code == 204
