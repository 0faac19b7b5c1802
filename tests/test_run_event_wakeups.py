"""Streams follow a run from this process's memory when this process wrote its events, and from the
database when another process may have: the NOTIFY of a commit can reach the listener before that
commit is published in memory, and a NOTIFY skipped for that reason must not be lost if the commit fails."""
import re
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from app.agent import events
from app.extensions import db
from app.models import Message, Role, Run, RunEvent, RunStatus, utcnow
from tests.conftest import Browser, on_each_statement
from tests.fake_openai import ToolCall as ModelToolCall, Turn

DELETE_50 = ModelToolCall("delete_records", {"table_name": "users", "count": 50})


def _on_commit(hook):
    """Call `hook` when the app database's transaction commits (as the DBAPI commit starts)."""
    sa.event.listen(db.engine, "commit", hook)
    return lambda: sa.event.remove(db.engine, "commit", hook)


def _another_process_writes(run_id: str, seq: int, text: str) -> None:
    with db.engine.begin() as other:
        other.execute(sa.update(Run).where(Run.id == run_id).values(last_seq=seq))
        other.execute(sa.insert(RunEvent).values(run_id=run_id, seq=seq, type="text", created_at=utcnow(),
                                                 data={"message_id": 1, "text": text, "at": 0}))


def test_a_stream_reads_what_this_process_wrote_from_memory_even_when_its_notify_comes_first(app, harness):
    run_id = harness.stored_run(RunStatus.COMPLETED)
    hub = app.extensions["run_events"]
    with app.app_context(), hub.watch(run_id) as watch:
        assert watch.read_after(0) == ([], RunStatus.COMPLETED)  # the first read asks the database
        db.session.rollback()
        # The listener hands over this commit's NOTIFY while the commit is still under way.
        remove = _on_commit(lambda conn: hub.notify(f"{run_id} 1"))
        try:
            events.append(run_id, "text", {"message_id": 1, "text": "hello", "at": 0})
            db.session.commit()
        finally:
            remove()
        batch, status = watch.read_after(0)
    assert [(event.seq, event.data["text"]) for event in batch] == [(1, "hello")]
    assert status is None  # from memory: no query for what this process wrote


def test_a_notify_skipped_while_this_process_commits_wakes_the_stream_when_that_commit_fails(app, harness):
    run_id = harness.stored_run(RunStatus.COMPLETED)
    hub = app.extensions["run_events"]
    with app.app_context(), hub.watch(run_id) as watch:
        watch.read_after(0)
        db.session.rollback()
        # Another process writes event 1; its NOTIFY arrives while this process commits event 2 ...
        _another_process_writes(run_id, 1, "theirs")

        def notify_then_fail(conn):
            hub.notify(f"{run_id} 1")
            raise RuntimeError("the database went away mid-commit")

        generation = watch.generation
        remove = _on_commit(notify_then_fail)
        try:
            events.append(run_id, "text", {"message_id": 1, "text": "ours", "at": 6})
            try:
                db.session.commit()
            except RuntimeError:
                db.session.rollback()
        finally:
            remove()
        # ... which fails: the skipped NOTIFY was not this process's, so the stream is woken to read.
        assert watch.generation != generation
        batch, status = watch.read_after(0)
    assert [(event.seq, event.data["text"]) for event in batch] == [(1, "theirs")]
    assert status == RunStatus.COMPLETED


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)  # SQLite has no NOTIFY
def test_a_step_that_commits_as_it_runs_is_read_from_memory_even_when_its_notify_comes_first(app, harness):
    """PostgreSQL: a step that is one statement runs without a transaction around it, so it has
    committed, and its NOTIFY may be handed over, before `db.session.commit()` says so."""
    from app.agent.loop import _message_text_update
    from app.agent.recovery import WORKER_ID, lease_until

    run_id = harness.stored_run(RunStatus.RUNNING)
    hub = app.extensions["run_events"]
    with app.app_context(), hub.watch(run_id) as watch:
        db.session.execute(sa.update(Run).where(Run.id == run_id).values(lease_owner=WORKER_ID,
                                                                          lease_until=lease_until()))
        message_id = db.session.execute(sa.insert(Message).values(
            session_id=db.session.get(Run, run_id).session_id, run_id=run_id, role="assistant", content="",
            state="streaming", created_at=utcnow()).returning(Message.id)).scalar_one()
        db.session.commit()
        assert watch.read_after(0) == ([], RunStatus.RUNNING)
        db.session.rollback()

        def listener_hands_over_its_notify(conn, cursor, statement, *args):
            if "UPDATE messages SET content" in statement:
                hub.notify(f"{run_id} 1")

        sa.event.listen(db.engine, "after_cursor_execute", listener_hands_over_its_notify)
        try:
            events.append(run_id, "text", {"message_id": message_id, "text": "hello", "at": 0})
            assert events.write(run_id, WORKER_ID, lease_until(), then=(
                events.Then(_message_text_update, {"message_id": message_id, "text": "hello"}),))
            db.session.commit()
        finally:
            sa.event.remove(db.engine, "after_cursor_execute", listener_hands_over_its_notify)
        batch, status = watch.read_after(0)
        assert [(event.seq, event.data["text"]) for event in batch] == [(1, "hello")]
        assert status is None  # from memory: no query for what this process wrote
        assert db.session.get(Message, message_id).content == "hello"


def test_a_notify_of_another_process_held_during_such_a_step_wakes_the_stream_after_it(app, harness):
    run_id = harness.stored_run(RunStatus.RUNNING)
    hub = app.extensions["run_events"]
    with app.app_context(), hub.watch(run_id) as watch:
        watch.read_after(0)
        db.session.rollback()
        generation = watch.generation
        with hub.writing(run_id):
            hub.notify(f"{run_id} 1")   # this process's own, arriving early
            hub.notify(f"{run_id} 2")   # another process's
            assert watch.generation == generation  # held while the step is in flight
            hub.committing(run_id, 1)
        assert watch.generation != generation  # event 2 is not this process's: read the database

        generation = watch.generation
        with hub.writing(run_id):
            hub.notify(f"{run_id} 3")
            hub.committing(run_id, 3)
        assert watch.generation == generation  # only its own: nothing to read



def test_a_notify_that_arrives_during_a_read_sends_the_stream_back_only_for_what_that_read_missed(app, harness):
    """Another process's commit is announced while a stream reads the database: if that read returned the
    event, the next read is from memory; if the event came after the read's snapshot, it is read."""
    run_id = harness.stored_run(RunStatus.RUNNING)
    hub = app.extensions["run_events"]
    during_read = []

    def listener_hands_over(conn, cursor, statement, *args):
        if "FROM runs LEFT OUTER JOIN run_events" in statement and during_read:
            during_read.pop()()

    with app.app_context(), hub.watch(run_id) as watch:
        _another_process_writes(run_id, 1, "theirs")
        sa.event.listen(db.engine, "after_cursor_execute", listener_hands_over)
        try:
            during_read.append(lambda: hub.notify(f"{run_id} 1"))
            batch, status = watch.read_after(0)
            assert [event.seq for event in batch] == [1] and status == RunStatus.RUNNING
            db.session.rollback()
            assert watch.read_after(1) == ([], None)  # from memory: that read had event 1

            hub.notify(run_id)  # a poll saw a change: the next read asks the database, and meanwhile
            during_read.append(lambda: (_another_process_writes(run_id, 2, "more"), hub.notify(f"{run_id} 2")))
            assert watch.read_after(1) == ([], RunStatus.RUNNING)  # ... event 2 comes after its snapshot
            db.session.rollback()
            batch, status = watch.read_after(1)
        finally:
            sa.event.remove(db.engine, "after_cursor_execute", listener_hands_over)
    assert [event.seq for event in batch] == [2] and status == RunStatus.RUNNING


def test_a_read_that_finds_another_processs_events_wakes_the_runs_other_streams_here(app, harness):
    """Two streams of one run in this process: when one reads events another process wrote, the other is
    woken to read them too (their NOTIFY, arriving after that read, names nothing new and wakes nobody)."""
    run_id = harness.stored_run(RunStatus.RUNNING)
    hub = app.extensions["run_events"]
    with app.app_context(), hub.watch(run_id) as waiting:
        assert waiting.read_after(0) == ([], RunStatus.RUNNING)
        db.session.rollback()
        _another_process_writes(run_id, 1, "theirs")
        generation = waiting.generation
        with hub.watch(run_id) as joining:  # a stream that opens now reads the database first
            assert [event.seq for event in joining.read_after(0)[0]] == [1]
            db.session.rollback()
        hub.notify(f"{run_id} 1")  # the NOTIFY, late
        assert waiting.generation != generation
        batch, status = waiting.read_after(0)
    assert [event.seq for event in batch] == [1] and status == RunStatus.RUNNING


def test_a_stream_that_starts_at_the_newest_event_is_read_from_memory_after_its_notify(app, harness):
    """A stream resumed at the run's newest event (a reload), whose NOTIFY arrives during its first read:
    its next reads are from memory, not the database's (the run's last seq counts as seen)."""
    run_id = harness.stored_run(RunStatus.RUNNING)
    hub = app.extensions["run_events"]
    with app.app_context(), hub.watch(run_id) as watch:
        _another_process_writes(run_id, 1, "theirs")

        def listener_hands_over(conn, cursor, statement, *args):
            if "FROM runs LEFT OUTER JOIN run_events" in statement:
                hub.notify(f"{run_id} 1")

        sa.event.listen(db.engine, "after_cursor_execute", listener_hands_over)
        try:
            assert watch.read_after(1) == ([], RunStatus.RUNNING)
        finally:
            sa.event.remove(db.engine, "after_cursor_execute", listener_hands_over)
        db.session.rollback()
        assert watch.read_after(1) == ([], None)


# A message's or a decision's answer opens the run's stream; the watch the command opened before it
# wrote is kept for that stream (`Hub.hand_over`), whose first read then needs no database.

@contextmanager
def _run_reads(app):
    """The statements that read the run or its events, as they are sent."""
    seen = []

    def note(conn, cursor, sql, *args):
        if sql.lstrip().upper().startswith("SELECT") and ("FROM runs" in sql or "run_events" in sql):
            seen.append(sql)

    with on_each_statement(app, note):
        yield seen


def _message(browser, fake_model, turn) -> tuple[str, int]:
    """Send a message that pauses the run on a card; (run id, the cursor its answer's stream starts at)."""
    fake_model.script(turn)
    chat = browser.new_chat()
    page = browser.post(f"/chats/{chat}/messages", {"message": "delete 50 users"}).data.decode()
    run_id, after = re.search(r"/runs/(run_\w+)/events\?after=(\d+)", page).groups()
    return run_id, int(after)


def test_the_stream_a_message_opens_here_reads_nothing_and_shows_everything(app, browser, fake_model, harness):
    run_id, after = _message(browser, fake_model, Turn(text="This needs your approval.", tool_calls=[DELETE_50]))
    harness.wait(run_id, "paused")
    with _run_reads(app) as reads:
        stream = browser.events(run_id, after=after)
    assert reads == [], "the kept watch heard every event since before the message was written"
    html = "".join(event["data"] for event in stream)
    assert "This needs your approval." in html and "delete_records" in html
    assert stream[-1]["event"] == "done", "the stream ends at the pause, as one that read the database"

    # Its second stream (a reload's, a reconnect's) reads the database as before.
    with _run_reads(app) as reads:
        again = browser.events(run_id, after=after)
    replayed = "".join(event["data"] for event in again)
    assert reads and "This needs your approval." in replayed and "delete_records" in replayed


def test_the_stream_a_decision_opens_here_reads_nothing(app, browser, fake_model, harness):
    run_id, after = _message(browser, fake_model, Turn(tool_calls=[DELETE_50]))
    [call] = harness.calls(harness.wait(run_id, "paused").id)
    browser.events(run_id, after=after)
    fake_model.script(Turn(text="Deleted them."))
    answer = browser.post(f"/runs/{run_id}/calls/{call.id}/approve").data.decode()
    after = int(re.search(rf"/runs/{run_id}/events\?after=(\d+)", answer).group(1))
    harness.wait(run_id, "completed")
    with _run_reads(app) as reads:
        stream = browser.events(run_id, after=after)
    assert reads == []
    assert "Deleted them." in "".join(event["data"] for event in stream)


def test_a_kept_watch_is_only_for_its_owners_stream_from_its_cursor(app, browser, fake_model, harness):
    run_id, after = _message(browser, fake_model, Turn(tool_calls=[DELETE_50]))
    harness.wait(run_id, "paused")
    stranger = Browser(app)
    assert stranger.client.get(f"/runs/{run_id}/events?after={after}").status_code == 404
    with _run_reads(app) as reads:
        earlier = browser.events(run_id, after=0)  # another cursor: the database, and not the kept watch
    assert reads and "delete_records" in "".join(event["data"] for event in earlier)
    with _run_reads(app) as reads:
        browser.events(run_id, after=after)
    assert reads == [], "still kept for the stream it was kept for"


def test_an_admin_who_decides_anothers_call_gets_no_stream_of_that_run(app, browser, fake_model, harness):
    run_id, _ = _message(browser, fake_model, Turn(tool_calls=[DELETE_50]))
    [call] = harness.calls(harness.wait(run_id, "paused").id)
    admin = Browser(app, role=Role.ADMIN)
    fake_model.script(Turn(text="Deleted them."))
    answer = admin.post(f"/runs/{run_id}/calls/{call.id}/approve")
    assert answer.status_code == 200 and "Approved by" in answer.data.decode()
    after = re.search(rf"/runs/{run_id}/events\?after=(\d+)", answer.data.decode()).group(1)
    assert admin.client.get(f"/runs/{run_id}/events?after={after}").status_code == 404


def test_a_kept_watch_no_stream_takes_is_let_go(app, browser, fake_model, harness, monkeypatch):
    monkeypatch.setattr(events, "HAND_OVER_SECONDS", 0.0)
    hub = app.extensions["run_events"]
    run_id, _ = _message(browser, fake_model, Turn(tool_calls=[DELETE_50]))
    harness.wait(run_id, "paused")
    _message(browser, fake_model, Turn(text="Another chat."))  # keeping another watch lets the first go
    assert run_id not in hub._parked and run_id not in hub._channels
