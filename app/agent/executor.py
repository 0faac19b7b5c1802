"""Runs execute here, outside any request: closing the tab never stops one.

By default every web process executes the runs its requests start (one command runs everything). With
RUN_EXECUTION=workers the web processes only record runs and announce them (`WorkerHandOff`), and
`flask --app app worker` processes (`serve_forever`), on this host or others sharing the PostgreSQL
database, pick them up. Two processes that both try a run are safe: taking it is a compare-and-set.

Each job gets its own app context (so its own database session). A heartbeat renews the leases of
the runs this process is executing (one statement every third of RUN_LEASE_SECONDS), so a model that
thinks for minutes or a slow tool is not mistaken for a dead worker; a sweeper thread recovers now and
then, so runs whose worker died are failed cleanly and queued runs are picked up after a restart.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import sqlalchemy as sa

from app.agent.events import Listener
from app.extensions import db, patient_checkouts
from app.models import Run, RunStatus

log = logging.getLogger(__name__)

QUEUED_CHANNEL = "runs_queued"   # NOTIFY payload: the id of a run a web process queued for the workers
POLL_SECONDS = 0.5               # queued runs are looked for this often when no NOTIFY can arrive (SQLite)
POLL_SECONDS_LISTENING = 5.0     # a safety net only: NOTIFY announces them at once
STOP_GRACE_SECONDS = 25.0        # SIGTERM: runs in flight get this long; the rest are left to the leases


@dataclass(frozen=True)
class RunSteps:
    """What the executor calls, each inside an app context: handed in by create_app."""
    execute: Callable[[str], None]            # drive one run until it pauses or ends
    recover: Callable[[], None]               # fail runs of dead workers, resubmit queued ones
    renew_leases: Callable[[list[str]], None]  # extend the leases of the runs we are executing


class RunExecutor:
    def __init__(self, app, steps: RunSteps, max_workers: int = 200, sweep_seconds: float | None = 15.0,
                 lease_seconds: float = 30.0):
        self.app = app
        self.steps = steps
        self.pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="run")
        self.sweep_seconds = sweep_seconds
        self.heartbeat_seconds = lease_seconds / 3
        self.executing: set[str] = set()
        self.accepted: set[str] = set()  # submitted and not finished yet (queued here or executing)
        self._sweeper: threading.Thread | None = None
        self._heart: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def submit(self, run_id: str) -> None:
        if self._stopped.is_set():
            return  # stopping: the run stays queued for another process
        self._start_sweeper()
        with self._lock:
            self.accepted.add(run_id)
        self.pool.submit(self._execute, run_id)

    def submit_new(self, run_ids: list[str]) -> None:
        """Submit the runs this process has not accepted yet (a poll sees a run again until it starts)."""
        with self._lock:
            fresh = [run_id for run_id in run_ids if run_id not in self.accepted]
        for run_id in fresh:
            self.submit(run_id)

    def _execute(self, run_id: str) -> None:
        with self._lock:
            self.executing.add(run_id)
            if self._heart is None:
                self._heart = threading.Thread(target=self._beat, name="run-leases", daemon=True)
                self._heart.start()
        try:
            self._in_context(self.steps.execute, run_id)
        finally:
            with self._lock:
                self.executing.discard(run_id)
                self.accepted.discard(run_id)

    def _beat(self) -> None:
        while not self._stopped.wait(self.heartbeat_seconds):
            with self._lock:
                run_ids = list(self.executing)
            if run_ids:
                self._in_context(self.steps.renew_leases, run_ids)

    def _in_context(self, step: Callable, *args) -> None:
        with self.app.app_context(), patient_checkouts():
            try:
                step(*args)
            except Exception:
                log.exception("background %s%s failed", step.__name__, args)
            finally:
                db.session.remove()

    def _start_sweeper(self) -> None:
        if self.sweep_seconds and self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep, name="run-sweeper", daemon=True)
            self._sweeper.start()

    def _sweep(self) -> None:
        while not self._stopped.is_set():
            self._in_context(self.steps.recover)
            if self._stopped.wait(self.sweep_seconds):
                return

    def start(self) -> None:
        """Begin sweeping at once (servers call this; tests that want it do too)."""
        self._start_sweeper()

    def shutdown(self) -> None:
        self._stopped.set()
        self.pool.shutdown(wait=True, cancel_futures=False)

    def stop_taking_runs(self, grace: float) -> bool:
        """Take no new runs, drop the ones not started (they stay queued for another worker), and wait
        up to `grace` seconds for those in flight. False if some were still running."""
        self._stopped.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._lock:
                if not self.executing:
                    return True
            time.sleep(0.05)
        return False


class WorkerHandOff:
    """The web processes' executor under RUN_EXECUTION=workers: a queued run is announced to the
    workers (NOTIFY on PostgreSQL; on SQLite they find it by polling) and executed by none of us."""

    def __init__(self, app):
        self.app = app

    def submit(self, run_id: str) -> None:
        engine = db.engine
        if engine.dialect.name == "postgresql":
            # Its own short autocommit statement: the command that queued the run has committed.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.select(sa.func.pg_notify(QUEUED_CHANNEL, run_id)))

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


class QueuedRuns:
    """A worker's intake: hands every queued run to the executor as soon as it is announced (LISTEN
    on PostgreSQL), and looks for queued runs itself now and then (the only way on SQLite, and the
    safety net while the listener reconnects)."""

    def __init__(self, app, executor: RunExecutor):
        self.app, self.executor = app, executor
        self.listener: Listener | None = None
        self._stopped = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="queued-runs", daemon=True)

    def start(self) -> "QueuedRuns":
        with self.app.app_context():
            if db.engine.dialect.name == "postgresql":
                self.listener = Listener(db.engine.url, {QUEUED_CHANNEL: self.executor.submit}).start()
        self._poller.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self.listener is not None:
            self.listener.stop()
        self._poller.join(timeout=5)

    def _poll(self) -> None:
        while not self._stopped.wait(self._poll_seconds()):
            try:
                with self.app.app_context():
                    queued = db.session.scalars(sa.select(Run.id).where(Run.status == RunStatus.QUEUED)).all()
                    db.session.remove()
            except Exception as exc:  # the database is away: try again at the next tick
                log.warning("looking for queued runs failed: %s", exc)
                continue
            self.executor.submit_new(queued)

    def _poll_seconds(self) -> float:
        listening = self.listener is not None and self.listener.listening.is_set()
        return POLL_SECONDS_LISTENING if listening else POLL_SECONDS


def serve_forever(app, executor: RunExecutor, grace: float = STOP_GRACE_SECONDS) -> bool:
    """A worker process: execute queued runs until SIGTERM or SIGINT, then stop cleanly. Returns
    whether every run in flight finished within `grace` (the others are recovered through their
    leases by another worker)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    executor.start()
    intake = QueuedRuns(app, executor).start()
    log.info("worker ready: executing queued runs")
    while not stop.wait(1.0):
        pass
    log.info("worker stopping: no new runs; waiting up to %.0f s for %d in flight", grace, len(executor.executing))
    intake.stop()
    finished = executor.stop_taking_runs(grace)
    if not finished:
        log.warning("worker stopped with runs in flight: %s (their leases will lapse)", sorted(executor.executing))
    return finished
