"""The run state machine, end to end through the real openai SDK, the fake model server and a real
database (SQLite and PostgreSQL): pause, approve, reject, exactly-once, model failures."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from app.agent import commands
from app.agent.refusals import Refusal
from app.web.errors import status_of
from app.extensions import db
from tests.conftest import wait_for_a_lock_waiter
from tests.fake_openai import ToolCall, Turn

DELETE_50 = ToolCall("delete_records", {"table_name": "users", "count": 50})


@pytest.mark.parametrize("openai_api", ["responses", "chat"], indirect=True)
def test_approved_delete_runs_once_and_the_reply_continues(harness, fake_model, openai_api):
    fake_model.script(
        Turn(text="I'll delete the 50 oldest users.", tool_calls=[DELETE_50]),
        Turn(text="Deleted 50 records; the users table is tidier now."),
    )
    owner, chat = harness.chat()
    before = harness.rows("users")

    run_id = harness.send(chat, "Delete 50 old records from the users table")
    assert harness.wait(run_id).status == "paused"
    [call] = harness.calls(run_id)
    assert (call.name, call.arguments, call.status) == ("delete_records", {"table_name": "users", "count": 50}, "pending")
    assert harness.rows("users") == before, "nothing runs before the approval"

    assert harness.decide(owner, run_id, call.id, approve=True) in ("approved", "executing", "done")
    assert harness.wait(run_id).status == "completed"
    [call] = harness.calls(run_id)
    assert call.status == "done"
    assert call.result == f"Deleted 50 records from users. {before - 50:,} remain."
    assert harness.rows("users") == before - 50
    assert harness.messages(chat) == [
        ("user", "Delete 50 old records from the users table"),
        ("assistant", "I'll delete the 50 oldest users."),
        ("assistant", "Deleted 50 records; the users table is tidier now."),
    ]
    # The model was told the tool's real result.
    assert fake_model.requests[-1].tool_outputs()[-1][1] == call.result


def test_rejection_with_reason_is_what_the_model_reads(harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Understood, I left the users alone."))
    owner, chat = harness.chat()
    before = harness.rows("users")
    run_id = harness.send(chat, "Delete 50 old records from the users table")
    [call] = harness.calls(harness.wait(run_id, "paused").id)

    harness.decide(owner, run_id, call.id, approve=False, reason="those are our beta testers")
    assert harness.wait(run_id).status == "completed"
    [call] = harness.calls(run_id)
    assert (call.status, call.reason, call.result) == ("rejected", "those are our beta testers", None)
    assert harness.rows("users") == before
    assert fake_model.requests[-1].tool_outputs() == [(call.call_id, "Rejected by the user: those are our beta testers")]
    assert harness.messages(chat)[-1] == ("assistant", "Understood, I left the users alone.")


def test_rejection_without_reason_says_so_plainly(harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="OK."))
    owner, chat = harness.chat()
    run_id = harness.send(chat, "delete 50 users")
    [call] = harness.calls(harness.wait(run_id, "paused").id)
    harness.decide(owner, run_id, call.id, approve=False)
    harness.wait(run_id, "completed")
    assert fake_model.requests[-1].tool_outputs() == [(call.call_id, "Rejected by the user.")]


def test_concurrent_approvals_execute_the_tool_exactly_once(harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Done."))
    owner, chat = harness.chat()
    before = harness.rows("users")
    run_id = harness.send(chat, "Delete 50 old records from the users table")
    [call] = harness.calls(harness.wait(run_id, "paused").id)

    outcomes, barrier = [], threading.Barrier(12)

    def approve():
        barrier.wait()
        try:
            outcomes.append("approved" if harness.decide(owner, run_id, call.id, approve=True) else None)
        except Refusal as exc:
            outcomes.append((status_of(exc), str(exc)))

    threads = [threading.Thread(target=approve) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count("approved") == 1
    conflicts = [o for o in outcomes if o != "approved"]
    assert len(conflicts) == 11 and all(status == 409 and "already" in text for status, text in conflicts)
    assert harness.wait(run_id).status == "completed"
    assert harness.rows("users") == before - 50, "the tool ran exactly once"


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_a_decision_that_waited_for_the_winner_is_told_the_call_was_already_decided(app, harness, fake_model):
    """PostgreSQL re-reads the locked run after the wait, not the call joined to it: the loser reads the
    call as pending, and by then the approved tool has changed the rows its preview shows."""
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Done."))
    owner, chat = harness.chat()
    run_id = harness.send(chat, "Delete 50 old records from the users table")
    [call] = harness.calls(harness.wait(run_id, "paused").id)
    outcome = []

    def approve():
        try:
            harness.decide(owner, run_id, call.id, approve=True)
            outcome.append("approved")
        except Refusal as exc:
            outcome.append((status_of(exc), str(exc)))

    with app.app_context(), db.engine.connect() as winner:
        winner.execute(sa.text("SELECT id FROM runs WHERE id = :id FOR UPDATE"), {"id": run_id})
        loser = threading.Thread(target=approve)
        loser.start()
        wait_for_a_lock_waiter(winner, "the second decision waits for the run's lock")
        # What the winner's approval and the tool's run did meanwhile.
        winner.execute(sa.text("UPDATE tool_calls SET status = 'done' WHERE id = :id"), {"id": call.id})
        with db.engines["workspace"].begin() as workspace:
            workspace.execute(sa.text("DELETE FROM users WHERE id IN (SELECT id FROM users ORDER BY created_at LIMIT 50)"))
        winner.commit()
    loser.join()

    assert outcome == [(409, "This call was already done.")]
    assert harness.calls(run_id)[0].status == "done", "the loser changed nothing"


def test_deciding_an_already_decided_call_is_a_conflict_with_its_state(harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Done."))
    owner, chat = harness.chat()
    run_id = harness.send(chat, "delete")
    [call] = harness.calls(harness.wait(run_id, "paused").id)
    harness.decide(owner, run_id, call.id, approve=False)
    with pytest.raises(Refusal) as error:
        harness.decide(owner, run_id, call.id, approve=True)
    assert status_of(error.value) == 409
    assert error.value.call.status == "rejected"


def test_unknown_and_foreign_ids_are_not_found(harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]))
    owner, chat = harness.chat()
    stranger = harness.account()
    run_id = harness.send(chat, "delete")
    [call] = harness.calls(harness.wait(run_id, "paused").id)
    for who, run, call_id in [(owner, "run_nope", call.id), (owner, run_id, "tc_nope"), (stranger, run_id, call.id)]:
        with pytest.raises(Refusal) as error:
            harness.decide(who, run, call_id, approve=True)
        assert status_of(error.value) == 404
    assert harness.calls(run_id)[0].status == "pending"


def test_invalid_arguments_go_back_to_the_model_and_the_run_continues(harness, fake_model):
    fake_model.script(
        Turn(tool_calls=[ToolCall("delete_records", {"table_name": "users", "count": "lots"})]),
        Turn(text="Sorry, I need a number. How many?"),
    )
    owner, chat = harness.chat()
    before = harness.rows("users")
    run_id = harness.send(chat, "delete lots of users")
    assert harness.wait(run_id).status == "completed", "no card for garbage arguments"
    [call] = harness.calls(run_id)
    assert call.status == "failed" and "count" in call.error
    [(_, output)] = fake_model.requests[-1].tool_outputs()
    assert output.startswith("Error: Invalid arguments") and "count" in output
    assert harness.rows("users") == before


def test_unparseable_arguments_and_unknown_tools_are_tool_errors(harness, fake_model):
    fake_model.script(
        Turn(tool_calls=[ToolCall("delete_records", '{"table_name": "users", "count": 5'),
                         ToolCall("drop_database", {})]),
        Turn(text="Let me try that differently."),
    )
    _, chat = harness.chat()
    run_id = harness.send(chat, "do it")
    assert harness.wait(run_id).status == "completed"
    outputs = dict(fake_model.requests[-1].tool_outputs())
    assert len(outputs) == 2
    assert all(text.startswith("Error:") for text in outputs.values())
    assert any("Unknown tool 'drop_database'" in text for text in outputs.values())


@pytest.mark.parametrize("arguments", [
    {"table_name": "accounts", "count": 1},
    {"table_name": "users; DROP TABLE users;--", "count": 1},
    {"table_name": "users", "count": 10**12},
])
def test_arguments_outside_the_tools_schema_never_reach_a_card(harness, fake_model, arguments):
    """The Data Manager's tools are strict (Literal tables, a bounded count): a bad call fails at once,
    the model reads why, and nobody is asked to approve it."""
    fake_model.script(Turn(tool_calls=[ToolCall("delete_records", arguments)]), Turn(text="I cannot do that."))
    _, chat = harness.chat()
    before = harness.rows("users")
    run_id = harness.send(chat, "delete")
    assert harness.wait(run_id).status == "completed", "never paused"
    [call] = harness.calls(run_id)
    assert call.status == "failed" and call.error.startswith("Invalid arguments: Invalid arguments for delete_records")
    assert harness.rows("users") == before
    [(_, output)] = fake_model.requests[-1].tool_outputs()
    assert output.startswith("Error: Invalid arguments") and "input should be" in output, "the model read why"


def test_tools_without_confirmation_run_at_once(harness, fake_model):
    fake_model.script(Turn(tool_calls=[ToolCall("count_records", {"table_name": "orders"})]),
                      Turn(text="There are 3,000 orders."))
    _, chat = harness.chat()
    run_id = harness.send(chat, "How many rows in orders?")
    assert harness.wait(run_id).status == "completed"
    [call] = harness.calls(run_id)
    assert (call.status, call.decided_by) == ("done", "auto")
    assert call.result == f"orders has {harness.rows('orders'):,} records."


def test_a_gated_call_holds_back_every_call_of_its_turn(harness, fake_model):
    fake_model.script(Turn(tool_calls=[ToolCall("count_records", {"table_name": "users"}), DELETE_50]),
                      Turn(text="Done."))
    owner, chat = harness.chat()
    run_id = harness.send(chat, "count then delete")
    harness.wait(run_id, "paused")
    count_call, delete_call = harness.calls(run_id)
    assert (count_call.status, delete_call.status) == ("approved", "pending"), "nothing ran yet"
    harness.decide(owner, run_id, delete_call.id, approve=True)
    harness.wait(run_id, "completed")
    assert [c.status for c in harness.calls(run_id)] == ["done", "done"]


def test_two_gated_calls_each_get_their_own_outcome(harness, fake_model):
    notify = ToolCall("send_notification", {"recipient": "ops@example.com", "message": "cleanup done"})
    fake_model.script(Turn(tool_calls=[DELETE_50, notify]), Turn(text="Half done."))
    owner, chat = harness.chat()
    before = harness.rows("users")
    run_id = harness.send(chat, "delete and notify")
    delete_call, notify_call = harness.calls(harness.wait(run_id, "paused").id)
    harness.decide(owner, run_id, notify_call.id, approve=False, reason="not yet")
    assert harness.run(run_id).status == "paused", "still waiting for the other card"
    harness.decide(owner, run_id, delete_call.id, approve=True)
    harness.wait(run_id, "completed")
    assert [c.status for c in harness.calls(run_id)] == ["done", "rejected"]
    assert harness.rows("users") == before - 50


def test_deciding_the_last_pending_card_resumes_the_run_once_and_the_event_log_has_no_gap(harness, fake_model):
    # The decision's compare-and-set, its event and the run's resumption are written together: the
    # first decision leaves the run paused, the second resumes it, every event numbered in order.
    from app.models import RunEvent
    notify = ToolCall("send_notification", {"recipient": "ops@example.com", "message": "cleanup done"})
    fake_model.script(Turn(tool_calls=[DELETE_50, notify]), Turn(text="Done."))
    owner, chat = harness.chat()
    run_id = harness.send(chat, "delete and notify")
    delete_call, notify_call = harness.calls(harness.wait(run_id, "paused").id)
    paused_at = harness.run(run_id).last_seq
    harness.decide(owner, run_id, delete_call.id, approve=True)
    assert harness.run(run_id).status == "paused", "the other card still waits"
    assert harness.run(run_id).last_seq == paused_at + 1, "one event: the card's, no resumption"
    harness.decide(owner, run_id, notify_call.id, approve=True)
    run = harness.wait(run_id, "completed")
    with harness.app.app_context():
        logged = db.session.execute(sa.select(RunEvent.seq, RunEvent.type, RunEvent.data)
                                    .where(RunEvent.run_id == run_id).order_by(RunEvent.seq)).all()
    assert [seq for seq, _, _ in logged] == list(range(1, run.last_seq + 1))
    after_pause = [(type, data.get("call_id"), data.get("status")) for seq, type, data in logged if seq > paused_at]
    assert after_pause[:6] == [
        ("tool_call_updated", delete_call.id, "approved"),
        ("tool_call_updated", notify_call.id, "approved"), ("run_resumed", None, None),
        ("tool_call_updated", delete_call.id, "executing"), ("tool_call_updated", delete_call.id, "done"),
        ("tool_call_updated", notify_call.id, "executing"),
    ]
    assert [c.status for c in harness.calls(run_id)] == ["done", "done"]


def test_a_message_typed_while_a_card_waits_rejects_it_with_that_reason(harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="OK, I will not delete anything."))
    _, chat = harness.chat()
    before = harness.rows("users")
    run_id = harness.send(chat, "delete 50 users")
    harness.wait(run_id, "paused")
    assert harness.send(chat, "No wait, keep them") == run_id
    harness.wait(run_id, "completed")
    [call] = harness.calls(run_id)
    assert (call.status, call.reason) == ("rejected", "No wait, keep them")
    assert harness.rows("users") == before
    request = fake_model.requests[-1]
    assert request.tool_outputs() == [(call.call_id, "Rejected by the user: No wait, keep them")]
    assert request.last_user_text() == "No wait, keep them"


def test_a_second_message_while_the_agent_answers_is_refused(harness, fake_model):
    fake_model.script(Turn(text="a slow answer " * 20, token_delay=0.05))
    _, chat = harness.chat()
    run_id = harness.send(chat, "hello")
    with pytest.raises(Refusal) as error:
        harness.send(chat, "are you there?")
    assert status_of(error.value) == 409
    harness.wait(run_id, "completed", timeout=20)


@pytest.mark.parametrize("text", ["", "   \n ", "x" * 8001])
def test_empty_or_oversized_messages_are_refused_and_nothing_is_stored(harness, text):
    _, chat = harness.chat()
    with pytest.raises(Refusal) as error:
        harness.send(chat, text)
    assert status_of(error.value) in (413, 422)
    assert harness.messages(chat) == []


@pytest.mark.parametrize("turn, expected", [
    (Turn(status=401, error_message="Incorrect API key provided"), "rejected the API key (401)"),
    (Turn(status=429, error_message="Rate limit reached"), "rate-limited"),
    (Turn(status=500, error_message="The server had an error"), "answered with an error (500)"),
])
def test_model_errors_fail_the_run_with_a_readable_message(harness, fake_model, turn, expected):
    fake_model.script(turn, turn, turn)  # the SDK retries once
    _, chat = harness.chat()
    run = harness.wait(harness.send(chat, "hello"))
    assert run.status == "failed"
    assert expected in run.error


def test_a_stream_cut_short_keeps_the_partial_reply_and_retry_continues(harness, app, fake_model):
    fake_model.script(Turn(text="The first part of a long answer that never", cut_after=3),
                      Turn(text="Here is the whole answer."))
    owner, chat = harness.chat()
    run_id = harness.send(chat, "tell me")
    run = harness.wait(run_id)
    assert run.status == "failed" and "broke off" in run.error or "reach" in run.error
    partial = harness.messages(chat)[-1]
    assert partial[0] == "assistant" and partial[1].startswith("The first part")

    with app.app_context():
        from app.agent import commands
        commands.retry(owner, run_id)
    assert harness.wait(run_id).status == "completed"
    assert harness.messages(chat)[-1] == ("assistant", "Here is the whole answer.")
    # The broken-off text is kept for the person but not fed back to the model as if it were said.
    assert all(item.get("content") != partial[1] for item in fake_model.requests[-1].items())


def test_a_model_timeout_fails_the_run(harness, app, fake_model):
    app.extensions["model"].client = app.extensions["model"].client.with_options(timeout=0.3, max_retries=0)
    fake_model.script(Turn(text="too late", delay=2))
    _, chat = harness.chat()
    run = harness.wait(harness.send(chat, "hello"))
    assert (run.status, run.error) == ("failed", "The model did not answer in time.")


def test_a_chained_turn_sends_only_what_came_after_the_chain_head(harness, fake_model):
    fake_model.script(Turn(text="One."), Turn(text="Two."), Turn(text="Three."))
    _, chat = harness.chat()
    for word in ("first", "second", "third"):
        assert harness.wait(harness.send(chat, word)).status == "completed"
    first, second, third = fake_model.requests[-3:]
    assert first.previous_response_id is None and first.items() == [{"role": "user", "content": "first"}]
    assert third.previous_response_id is not None
    assert third.items() == [{"role": "user", "content": "third"}]


def test_an_expired_response_chain_is_replayed_in_full(harness, fake_model):
    fake_model.script(Turn(text="Deleting.", tool_calls=[DELETE_50]), Turn(text="All done."))
    owner, chat = harness.chat()
    run_id = harness.send(chat, "Delete 50 old records from the users table")
    [call] = harness.calls(harness.wait(run_id, "paused").id)
    fake_model.forget_responses()  # e.g. the pause outlived the server's memory of the chain

    harness.decide(owner, run_id, call.id, approve=True)
    assert harness.wait(run_id).status == "completed"
    chained, replayed = fake_model.requests[-2:]
    assert chained.previous_response_id is not None and chained.turn is None  # refused: unknown chain
    assert replayed.previous_response_id is None
    assert replayed.items()[0] == {"role": "user", "content": "Delete 50 old records from the users table"}
    assert replayed.tool_outputs()[0][0] == call.call_id


def test_cancel_stops_a_streaming_run(harness, app, fake_model):
    fake_model.script(Turn(text="word " * 200, token_delay=0.02))
    owner, chat = harness.chat()
    run_id = harness.send(chat, "write a lot")
    harness.wait(run_id, "running")
    with app.app_context():
        from app.agent import commands
        commands.cancel(owner, run_id)
    assert harness.run(run_id).status == "cancelled"
    text_then = harness.messages(chat)[-1][1]
    import time
    time.sleep(0.3)
    assert harness.messages(chat)[-1][1] == text_then, "nothing is written after the stop"
    assert harness.run(run_id).status == "cancelled"


def test_a_stop_while_the_model_is_silent_stores_none_of_its_late_reply(harness, app, fake_model):
    # Nothing of a turn is written before its first words, so a Stop before them leaves no reply
    # behind, and the words that come after the Stop are never stored.
    fake_model.script(Turn(text="Too late to matter.", delay=1.0))
    owner, chat = harness.chat()
    run_id = harness.send(chat, "think first")
    harness.wait(run_id, "running")
    with app.app_context():
        from app.agent import commands
        commands.cancel(owner, run_id)
    import time
    time.sleep(1.5)  # the model has answered by now
    assert harness.run(run_id).status == "cancelled"
    assert [role for role, _ in harness.messages(chat)] == ["user"]


def test_a_stop_arriving_mid_flush_never_deadlocks(harness, app, fake_model, caplog):
    """Stop locks the run and then its streaming message; a flush of streamed text must take them in
    the same order. Here the executor is held right after its flush touched the message, until the
    Stop has taken the run (or 2 s pass): on PostgreSQL, message-then-run against run-then-message
    is a deadlock, and one of the two dies with a database error. (On PostgreSQL the flush is one
    statement, the message's UPDATE folded into the run's: held after it, the same.)"""
    fake_model.script(Turn(text="word " * 200, token_delay=0.02))
    in_flush, stop_took_run = threading.Event(), threading.Event()

    def hold_the_first_flush(conn, cursor, statement, parameters, context, executemany):
        if threading.current_thread().name.startswith("run") and "UPDATE messages SET content" in statement:
            if not in_flush.is_set():
                in_flush.set()
                stop_took_run.wait(2)
        elif threading.current_thread() is threading.main_thread() and statement.startswith("UPDATE runs SET status"):
            stop_took_run.set()

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "after_cursor_execute", hold_the_first_flush)
    try:
        owner, chat = harness.chat()
        run_id = harness.send(chat, "write a lot")
        assert in_flush.wait(10)
        with app.app_context():
            assert commands.cancel(owner, run_id).status == "cancelled"
    finally:
        sa.event.remove(engine, "after_cursor_execute", hold_the_first_flush)
    assert harness.wait(run_id, "cancelled").status == "cancelled"
    assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]


def test_a_decision_racing_a_typed_message_never_deadlocks(harness, fake_model):
    """Both touch the same run's calls; each must end as a success or a clear 409, never a database
    error (on PostgreSQL, locking call-then-run against run-then-call deadlocks)."""
    notify = ToolCall("send_notification", {"recipient": "ops@example.com", "message": "done"})
    for attempt in range(5):
        fake_model.script(Turn(tool_calls=[DELETE_50, notify]), Turn(text="ok"))
        owner, chat = harness.chat()
        run_id = harness.send(chat, "delete and notify")
        harness.wait(run_id, "paused")
        _, second = harness.calls(run_id)
        outcomes, barrier = [], threading.Barrier(2)

        def approve():
            barrier.wait()
            try:
                outcomes.append(harness.decide(owner, run_id, second.id, approve=True))
            except Refusal as exc:
                outcomes.append(status_of(exc))

        def type_message():
            barrier.wait()
            try:
                harness.send(chat, "never mind")
                outcomes.append("sent")
            except Refusal as exc:
                outcomes.append(status_of(exc))

        threads = [threading.Thread(target=approve), threading.Thread(target=type_message)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(outcomes) == 2 and "sent" in outcomes, outcomes
        assert harness.wait(run_id).status == "completed"
        assert harness.calls(run_id)[0].status == "rejected"
