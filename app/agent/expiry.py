"""Approvals that wait too long expire, from the time stored on the call (`ToolCall.expires_at`), so
it holds across restarts and on every worker: the sweeper expires overdue calls (`expire_overdue`) and
every decision checks the stored time itself first (`expire_if_due`), since the sweeper may not have
run yet. An expired call never executes; once no call of its turn is pending, the run goes on and
the model reads "Not executed: the approval expired."
"""
from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from app.agent import events
from app.agent.recovery import submit
from app.extensions import db
from app.models import CallStatus, Run, RunStatus, ToolCall, utcnow



def is_due(call: ToolCall, now: datetime | None = None) -> bool:
    if call.status != CallStatus.PENDING or call.expires_at is None:
        return False
    expires = call.expires_at if call.expires_at.tzinfo else call.expires_at.replace(tzinfo=timezone.utc)
    return expires <= (now or utcnow())


def expire_if_due(call: ToolCall, now: datetime | None = None) -> bool:
    """In a transaction that holds the run's row (Run.lock): expire the call if its time has passed,
    and queue its run again if nothing of the turn is pending any more. True if the run was resumed
    (the caller submits it after its commit)."""
    if not is_due(call, now):
        return False
    return _expire(call.run_id, call.id, now or utcnow())


def _expire(run_id: str, call_id: str, now: datetime) -> bool:
    if not ToolCall.transition(call_id, CallStatus.PENDING, CallStatus.EXPIRED, decided_by="expired",
                               decided_at=now, extra_where=[ToolCall.expires_at <= now]):
        return False
    events.append(run_id, "tool_call_updated", {"call_id": call_id, "status": CallStatus.EXPIRED})
    still_pending = db.session.scalar(sa.select(sa.func.count()).select_from(ToolCall).where(
        ToolCall.run_id == run_id, ToolCall.status == CallStatus.PENDING))
    resumed = still_pending == 0 and Run.transition(run_id, RunStatus.PAUSED, RunStatus.QUEUED)
    if resumed:
        events.append(run_id, "run_resumed")
    return resumed


def expire_overdue(limit: int = 500) -> int:
    """The sweeper's step: expire every overdue pending call, one run per transaction. Safe to run
    from every process at once (a compare-and-set on each call)."""
    now = utcnow()
    overdue = db.session.execute(sa.select(ToolCall.run_id, ToolCall.id).where(
        ToolCall.status == CallStatus.PENDING, ToolCall.expires_at <= now)
        .order_by(ToolCall.run_id, ToolCall.created_at, ToolCall.position).limit(limit)).all()
    db.session.rollback()
    expired = 0
    by_run: dict[str, list[str]] = {}
    for run_id, call_id in overdue:
        by_run.setdefault(run_id, []).append(call_id)
    for run_id, call_ids in by_run.items():
        Run.lock(run_id)
        resumed = False
        for call_id in call_ids:
            resumed = _expire(run_id, call_id, now) or resumed
            expired += 1
        db.session.commit()
        if resumed:
            submit(run_id)
    return expired
