"""Leases and recovery: who executes a run, and what happens when that worker dies.

A worker holds a run's lease (`lease_owner`, `lease_until`) while it executes it and renews it with
every commit (`commit_owned`) and from the executor's heartbeat (`renew_leases`). A lease that lapses
means the worker died: `recover` fails the run (its executing calls become outcome_unknown, never
re-run) and resubmits queued runs nobody holds. `submit` hands a run to this process's executor.
"""
from __future__ import annotations

import os
import socket
import time
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from app.agent import events
from app.extensions import db
from app.models import CallStatus, Message, Run, RunStatus, ToolCall, utcnow


WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


INTERRUPTED = "Interrupted: the server stopped while this reply was being written. Retry to continue."


def submit(run_id: str, *, model_first: bool = False) -> None:
    """Hand the run to the background executor. Call it with no transaction open: under gevent,
    starting a worker switches greenlets, and one holding SQLite's write lock would stall the rest.

    model_first: the run's next step is a model request, so let it send that before this request
    renders its response (under gevent the executor's greenlet would otherwise wait, which is time
    to first token). Not after a decision: the next step is a tool, and a tool blocked in C (a
    locked SQLite file) would hold the decision's response back with it."""
    current_app.extensions["run_executor"].submit(run_id)
    if model_first:
        time.sleep(0)


def recover() -> None:
    """Fail runs whose worker died (their executing calls become outcome_unknown, never re-run), expire
    approvals past their time, and pick up queued runs nobody is working on. Safe to call from every
    process at once."""
    now = utcnow()
    stale = db.session.scalars(sa.select(Run.id).where(
        Run.status == RunStatus.RUNNING, Run.lease_until < now)).all()
    for run_id in stale:
        if not Run.transition(run_id, RunStatus.RUNNING, RunStatus.FAILED, error=INTERRUPTED,
                               lease_owner=None, lease_until=None, extra=[Run.lease_until < now]):
            db.session.rollback()
            continue
        for call_id in db.session.scalars(sa.select(ToolCall.id).where(
                ToolCall.run_id == run_id, ToolCall.status == CallStatus.EXECUTING)):
            ToolCall.transition(call_id, CallStatus.EXECUTING, CallStatus.OUTCOME_UNKNOWN)
            events.append(run_id, "tool_call_updated", {"call_id": call_id, "status": CallStatus.OUTCOME_UNKNOWN})
        db.session.execute(sa.update(Message).where(Message.run_id == run_id, Message.state == "streaming")
                           .values(state="interrupted"))
        events.append(run_id, "run_failed")
        db.session.commit()
    from app.agent.expiry import expire_overdue  # expiry queues runs through submit (this module)
    expire_overdue()  # from the stored time, so approvals expire across restarts
    queued = db.session.scalars(sa.select(Run.id).where(Run.status == RunStatus.QUEUED)).all()
    db.session.rollback()
    for run_id in queued:
        submit(run_id)


def lease_until():
    """A worker that stops renewing its lease for RUN_LEASE_SECONDS is presumed dead."""
    return utcnow() + timedelta(seconds=current_app.config.get("RUN_LEASE_SECONDS", 30))


def renew_leases(run_ids: list[str]) -> None:
    """The executor's heartbeat: extend the leases of the runs this process is executing."""
    db.session.execute(sa.update(Run.__table__).where(
        Run.id.in_(run_ids), Run.status == RunStatus.RUNNING, Run.lease_owner == WORKER_ID)
        .values(lease_until=lease_until()))
    db.session.commit()


def commit_owned(run_id: str, then: tuple[events.Then, ...] = ()) -> bool:
    """Commit the executor's transaction if the run is still ours (renewing the lease in the same
    statement that numbers the events, which also makes the step's `then` writes); otherwise roll back
    and return False: cancelled, or recovered by another worker."""
    if events.write(run_id, WORKER_ID, lease_until(), then=then):
        db.session.commit()
        return True
    db.session.rollback()
    return False
