"""Runs execute here, in the web process but outside any request: closing the tab never stops one.

Each job gets its own app context (so its own database session). A heartbeat renews the leases of
the runs this process is executing (one statement every third of RUN_LEASE_SECONDS), so a model that
thinks for minutes or a slow tool is not mistaken for a dead worker; a sweeper thread calls
`recovery.recover()` now and then, so runs whose worker died are failed cleanly and queued runs are
picked up after a restart.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from app.extensions import db, patient_checkouts

log = logging.getLogger(__name__)


class RunExecutor:
    def __init__(self, app, max_workers: int = 200, sweep_seconds: float | None = 15.0,
                 lease_seconds: float = 30.0):
        self.app = app
        self.pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="run")
        self.sweep_seconds = sweep_seconds
        self.heartbeat_seconds = lease_seconds / 3
        self.executing: set[str] = set()
        self._sweeper: threading.Thread | None = None
        self._heart: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def submit(self, run_id: str) -> None:
        self._start_sweeper()
        self.pool.submit(self._execute, run_id)

    def _execute(self, run_id: str) -> None:
        with self._lock:
            self.executing.add(run_id)
            if self._heart is None:
                self._heart = threading.Thread(target=self._beat, name="run-leases", daemon=True)
                self._heart.start()
        try:
            self._in_context("execute", run_id)
        finally:
            with self._lock:
                self.executing.discard(run_id)

    def _beat(self) -> None:
        while not self._stopped.wait(self.heartbeat_seconds):
            with self._lock:
                run_ids = list(self.executing)
            if run_ids:
                self._in_context("renew_leases", run_ids)

    def _in_context(self, name: str, *args) -> None:
        from app.agent import loop, recovery
        job = {"execute": loop.execute, "renew_leases": recovery.renew_leases, "recover": recovery.recover}[name]
        with self.app.app_context(), patient_checkouts():
            try:
                job(*args)
            except Exception:
                log.exception("background %s%s failed", name, args)
            finally:
                db.session.remove()

    def _start_sweeper(self) -> None:
        if self.sweep_seconds and self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep, name="run-sweeper", daemon=True)
            self._sweeper.start()

    def _sweep(self) -> None:
        while True:
            self._in_context("recover")
            if self._stopped.wait(self.sweep_seconds):
                return

    def start(self) -> None:
        """Begin sweeping at once (the server calls this; tests that want it do too)."""
        self._start_sweeper()

    def shutdown(self) -> None:
        self._stopped.set()
        self.pool.shutdown(wait=True, cancel_futures=False)
