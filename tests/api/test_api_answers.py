"""An answer that waited for its run to settle (`stream=false`), and a streamed one, show the run exactly
as it is stored, although they are built from what this process wrote (`app.api.run_views`) and read no
message or call: through a streamed reply, several calls decided over several continues, an edit, a
rejection with a note, a second pause in the same run, and a second run in the same session. A GET of
a run this process answered reads only the run."""
from __future__ import annotations

import threading
from contextlib import contextmanager

from tests.api.apiclient import DELETE_50, NOTIFY_ADMIN, documented, events, names, paused
from app.api import serialize
from tests.api.test_api_continue import GREETER, get_run
from tests.conftest import on_each_statement
from tests.fake_openai import ToolCall, Turn


@contextmanager
def answer_reads(app):
    """The statements this thread (the test client runs the view in it) sends that read messages."""
    seen, me = [], threading.get_ident()

    def note(conn, cursor, sql, *args):
        if threading.get_ident() == me and sql.lstrip().upper().startswith("SELECT") and "messages" in sql:
            seen.append(sql)

    with on_each_statement(app, note):
        yield seen


def stored(app, run_id: str) -> dict:
    """The run's JSON read from the database (as a GET that remembers nothing answers it)."""
    with app.app_context():
        return serialize.run_json(serialize.load_run_by_id(run_id))


def continued(api, run_id: str, tools: list[dict], agent: str = "data_manager") -> dict:
    response = api.continue_(run_id, tools, agent=agent, stream=False)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_the_answers_of_a_whole_flow_are_the_run_as_stored_and_read_nothing(app, api, harness, fake_model):
    fake_model.script(Turn(text="I'll delete the 50 oldest users, then tell the admin. " * 8,
                           tool_calls=[DELETE_50, NOTIFY_ADMIN]))
    with answer_reads(app) as reads:
        run = paused(api, "Delete 50 old users and tell the admin", session_id="s1")
    assert reads == [], "the pause's answer came from what the run's own writes handed over"
    assert run == stored(app, run["run_id"])
    first, second = run["tools"]

    with answer_reads(app) as reads:
        partial = continued(api, run["run_id"], documented(first))
    assert reads == [] and partial["status"] == "PAUSED"
    assert partial == stored(app, run["run_id"])

    # The rejected call's note, the approved call's result and a second pause of the same run.
    fake_model.script(Turn(text="Deleted. Should I also tidy the orders?",
                           tool_calls=[ToolCall("delete_records", {"table_name": "orders", "count": 5})]))
    with answer_reads(app) as reads:
        again = continued(api, run["run_id"], documented(first) + [
            {**documented(second, confirmed=False)[0], "confirmation_note": "not now"}])
    assert reads == [] and again["status"] == "PAUSED" and len(again["tools"]) == 3
    assert again == stored(app, run["run_id"])

    fake_model.script(Turn(text="All done: " + "fifty users and five orders are gone. " * 6))
    with answer_reads(app) as reads:
        done = continued(api, run["run_id"], documented(again["tools"][2]))
    assert reads == [] and done["status"] == "COMPLETED"
    assert done == stored(app, run["run_id"])
    assert done["content"].startswith("All done: fifty users")

    # A second run of the session shows only its own messages and calls.
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Gone too."))
    with answer_reads(app) as reads:
        second_run = paused(api, "And 50 more", session_id="s1")
    assert reads == [] and second_run == stored(app, second_run["run_id"])
    assert [m["role"] for m in second_run["messages"]] == ["system", "user", "assistant"]
    with answer_reads(app) as reads:
        finished = continued(api, second_run["run_id"], documented(second_run["tools"][0]))
    assert reads == [] and finished == stored(app, second_run["run_id"])


def test_an_edited_call_is_answered_as_stored(app, api, harness, fake_model, monkeypatch):
    monkeypatch.setitem(app.extensions["agents"]._agents, "greeter", GREETER)
    fake_model.script(Turn(tool_calls=[ToolCall("greet", {"name": "Bob"})]))
    run = paused(api, "greet bob", agent="greeter")
    [call] = run["tools"]
    with answer_reads(app) as reads:
        edited = continued(api, run["run_id"], [{**call, "tool_args": {"name": "Alice"}, "confirmed": None}],
                           agent="greeter")
    assert reads == [] and edited["tools"][0]["preview"] == "Greets Alice."
    assert edited == stored(app, run["run_id"])

    fake_model.script(Turn(text="Greeted."))
    done = continued(api, run["run_id"], [{"tool_call_id": call["tool_call_id"], "tool_args": {"name": "Carol"},
                                           "confirmed": True}], agent="greeter")
    assert done["tools"][0]["result"] == "Hello, Carol!"
    assert done == stored(app, run["run_id"])


def test_a_streamed_pause_and_continue_read_nothing_and_end_with_the_run_as_stored(app, api, harness, fake_model):
    fake_model.script(Turn(text="Deleting the 50 oldest users. " * 6, tool_calls=[DELETE_50]),
                      Turn(text="Done: 50 users are gone."))
    with answer_reads(app) as reads:
        stream = events(api.run("Delete 50 old users", session_id="s2"))
    assert reads == [], "the stream followed the run from what its own writes handed over"
    assert names(stream)[-1] == "RunPaused"
    pause = stream[-1][1]
    as_stored = stored(app, pause["run_id"])
    assert (pause["tools"], pause["requirements"]) == (as_stored["tools"], as_stored["requirements"])
    assert "".join(p["content"] for n, p in stream if n == "RunContent") == as_stored["messages"][2]["content"]

    with answer_reads(app) as reads:
        stream = events(api.continue_(pause["run_id"], documented(pause["tools"][0])))
    assert reads == []
    assert names(stream)[:3] == ["RunContinued", "ToolCallStarted", "ToolCallCompleted"]
    as_stored = stored(app, pause["run_id"])
    assert dict(stream)["ToolCallCompleted"]["tool"] == as_stored["tools"][0]
    assert stream[-1][0] == "RunCompleted" and stream[-1][1]["content"] == as_stored["content"] == \
        "Done: 50 users are gone."


def test_reading_a_run_this_process_answered_reads_only_the_run(app, api, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Deleted."))
    run = paused(api, "Delete 50 old users")
    with answer_reads(app) as reads:
        seen = get_run(api, run["run_id"])
    assert reads == [] and seen == run == stored(app, run["run_id"])
    listed = api.get("/agents/data_manager/runs").get_json()
    assert [r["run_id"] for r in listed] == [run["run_id"]] and listed[0] == run
