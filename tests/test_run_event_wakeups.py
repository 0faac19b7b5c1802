"""Streams follow a run from this process's memory when this process wrote its events, and from the
database when another process may have: the NOTIFY of a commit can reach the listener before that
commit is published in memory, and a NOTIFY skipped for that reason must not be lost if the commit fails."""
import sqlalchemy as sa

from app.agent import events
from app.extensions import db
from app.models import Run, RunEvent, RunStatus, utcnow


def _on_commit(hook):
    """Call `hook` when the app database's transaction commits (as the DBAPI commit starts)."""
    sa.event.listen(db.engine, "commit", hook)
    return lambda: sa.event.remove(db.engine, "commit", hook)


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
        with db.engine.begin() as other:
            other.execute(sa.update(Run).where(Run.id == run_id).values(last_seq=1))
            other.execute(sa.insert(RunEvent).values(run_id=run_id, seq=1, type="text", created_at=utcnow(),
                                                     data={"message_id": 1, "text": "theirs", "at": 0}))

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
