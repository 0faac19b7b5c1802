"""A reply's words reach this process's streams from memory before they are stored (app.agent.events:
`relay`, `Watch`): between the stored text events, placed by `at`, and never twice."""
import time

from app.agent import events
from app.extensions import db
from app.models import RunStatus


def _store(run_id: str, *queued: tuple[str, dict]) -> None:
    for type, data in queued:
        events.append(run_id, type, data)
    db.session.commit()


def _words(batch) -> list[tuple[int | None, str]]:
    return [(event.seq, event.data["text"]) for event in batch if event.type == "text"]


def test_relayed_words_come_between_the_stored_ones_and_none_twice(app, harness):
    run_id = harness.stored_run(RunStatus.RUNNING)
    hub = app.extensions["run_events"]
    seen = []
    with app.app_context(), hub.watch(run_id) as watch:
        cursor = 0

        def read():
            nonlocal cursor
            batch, _ = watch.read_after(cursor)
            db.session.rollback()
            cursor = max([cursor] + [event.seq for event in batch if event.seq is not None])
            seen.extend(_words(batch))
            return batch

        read()
        _store(run_id, ("message_started", {"message_id": 7}), ("text", {"message_id": 7, "text": "Hello", "at": 0}))
        read()
        events.relay(run_id, 7, "Hello wor")
        events.relay(run_id, 7, "Hello world, how")  # two relays before the stream reads: one event
        assert _words(read()) == [(None, " world, how")]
        assert read() == []  # nothing new
        # The stored write covers what was relayed and more: only the rest is handed out.
        _store(run_id, ("text", {"message_id": 7, "text": " world, how are", "at": 5}))
        assert _words(read()) == [(3, " are")]
        _store(run_id, ("text", {"message_id": 7, "text": " you?", "at": 20}),
               ("message_completed", {"message_id": 7, "state": "done"}))
        read()
        events.relay(run_id, 7, "Hello world, how are you? (late)")  # after the reply ended: not shown
        assert read() == []
        events.relayed(run_id, 7)
    assert "".join(text for _, text in seen) == "Hello world, how are you?"


def test_a_stream_that_joined_mid_reply_gets_relayed_words_after_the_stored_ones_it_has_seen(app, harness):
    run_id = harness.stored_run(RunStatus.RUNNING)
    hub = app.extensions["run_events"]
    with app.app_context():
        _store(run_id, ("message_started", {"message_id": 7}), ("text", {"message_id": 7, "text": "One", "at": 0}))
        with hub.watch(run_id) as watch:  # a reload: its page shows the stored reply up to seq 2
            watch.read_after(2)
            db.session.rollback()
            events.relay(run_id, 7, "One two")
            assert watch.read_after(2)[0] == []  # it cannot place words it has not seen the start of
            _store(run_id, ("text", {"message_id": 7, "text": " two three", "at": 3}))
            events.relay(run_id, 7, "One two three four")
            batch, _ = watch.read_after(2)
            db.session.rollback()
            assert _words(batch) == [(3, " two three"), (None, " four")]
            assert batch[-1].data["reply"] == "One two three four"  # the whole reply, for a stream's view
            events.relayed(run_id, 7)


def test_a_stream_holding_relayed_words_gets_them_when_its_hold_ends_without_more_words(app, harness):
    """The page holds relayed words for a few tens of milliseconds after each render; words that came
    meanwhile are shown when the hold ends, not when the model sends more."""
    run_id = harness.stored_run(RunStatus.RUNNING)
    hub = app.extensions["run_events"]
    with app.app_context(), hub.watch(run_id) as watch:
        _store(run_id, ("message_started", {"message_id": 7}), ("text", {"message_id": 7, "text": "One", "at": 0}))
        watch.read_after(0)
        db.session.rollback()
        held_until = time.monotonic() + 0.2
        watch.hold_relays(held_until)
        seen = watch.generation
        events.relay(run_id, 7, "One two")
        assert watch.read_after(2)[0] == []  # held
        watch.wait(seen, 30)  # the model says nothing more: the hold's end wakes the watch
        assert held_until <= time.monotonic() < held_until + 20  # then, not at the timeout
        assert _words(watch.read_after(2)[0]) == [(None, " two")]
        events.relayed(run_id, 7)


def test_a_watch_that_takes_no_relayed_words_is_not_woken_by_them(app, harness):
    """The REST API's wait for a run to settle follows only stored events, which carry every word."""
    run_id = harness.stored_run(RunStatus.RUNNING)
    hub = app.extensions["run_events"]
    with app.app_context(), hub.watch(run_id) as watch:
        watch.relays = False
        _store(run_id, ("message_started", {"message_id": 7}), ("text", {"message_id": 7, "text": "One", "at": 0}))
        watch.read_after(0)
        db.session.rollback()
        seen = watch.generation
        events.relay(run_id, 7, "One two")
        started = time.monotonic()
        watch.wait(seen, 0.3)
        assert time.monotonic() - started >= 0.3  # not woken
        assert watch.read_after(2)[0] == []
        _store(run_id, ("text", {"message_id": 7, "text": " two", "at": 3}))
        batch, _ = watch.read_after(2)
        db.session.rollback()
        assert _words(batch) == [(3, " two")]  # all of it, as stored
        events.relayed(run_id, 7)
