"""The run's event log: append inside the caller's transaction, read after a cursor, wait for more.

Wake-ups: appends in this process wake local waiters at once. On PostgreSQL every append also sends
`NOTIFY run_events, '<run id>'` (delivered at commit), and a listener in each process turns those
into local wake-ups, so a stream served by one worker or host follows a run executed by another.
Polling remains as the fallback (SQLite across processes, or while the listener reconnects).
"""
from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

from app.extensions import db
from app.models import Run, RunEvent

log = logging.getLogger(__name__)

CHANNEL = "run_events"

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
    if db.session.get_bind().dialect.name == "postgresql":
        # Transactional: sent at commit, and repeats within one transaction collapse into one.
        db.session.execute(sa.select(sa.func.pg_notify(CHANNEL, run_id)))
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
    """Block until the run gets a new event (after `seen_generation`) or `timeout` passes."""
    with _changed:
        _changed.wait_for(lambda: _generation.get(run_id, 0) != seen_generation, timeout=timeout)


class Listener:
    """LISTENs on PostgreSQL in a background thread and wakes this process's waiters."""

    def __init__(self, url: sa.URL):
        self.conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.listening = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="run-events-listener", daemon=True)

    def start(self) -> "Listener":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg
        backoff = 0.5
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    backoff = 0.5
                    while not self._stopped.is_set():
                        for note in conn.notifies(timeout=1.0):
                            notify(note.payload)
            except Exception as exc:  # the database went away: poll meanwhile, reconnect soon
                if self.listening.is_set():
                    log.warning("event listener lost its connection (%s); reconnecting", exc)
                self.listening.clear()
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        self.listening.clear()
