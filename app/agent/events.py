"""The run's event log: append inside the caller's transaction, read after a cursor, wait for more.

Waiting uses an in-process condition (instant for runs executed by this process) and falls back to
polling, which is what carries wake-ups across processes until LISTEN/NOTIFY lands.
"""
from __future__ import annotations

import threading

import sqlalchemy as sa

from app.extensions import db
from app.models import Run, RunEvent

_changed = threading.Condition()
_generation: dict[str, int] = {}


def append(run_id: str, type: str, data: dict | None = None) -> int:
    """Add an event to the current transaction; the caller commits, then calls `notify(run_id)`."""
    seq = db.session.execute(
        sa.update(Run).where(Run.id == run_id)
        .values(last_seq=Run.last_seq + 1)
        .returning(Run.last_seq)
    ).scalar_one()
    db.session.add(RunEvent(run_id=run_id, seq=seq, type=type, data=data or {}))
    return seq


def read_after(run_id: str, cursor: int, limit: int = 500) -> list[RunEvent]:
    return list(db.session.scalars(
        sa.select(RunEvent).where(RunEvent.run_id == run_id, RunEvent.seq > cursor)
        .order_by(RunEvent.seq).limit(limit)))


def notify(run_id: str) -> None:
    with _changed:
        _generation[run_id] = _generation.get(run_id, 0) + 1
        _changed.notify_all()


def generation(run_id: str) -> int:
    with _changed:
        return _generation.get(run_id, 0)


def wait(run_id: str, seen_generation: int, timeout: float) -> None:
    """Block until this process appends to the run (after `seen_generation`) or `timeout` passes."""
    with _changed:
        _changed.wait_for(lambda: _generation.get(run_id, 0) != seen_generation, timeout=timeout)
