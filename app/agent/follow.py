"""Following a run: the one loop behind every way of watching one (the page's event stream, the REST
API's stream, and the API's wait for a run to settle). Callers only frame what it yields.

It replays the events after a cursor, then tails new ones until the run stops. Between reads it holds
no database connection and waits for the run's wake-ups (`app.agent.events.Hub`: events this process
committed arrive from memory; NOTIFY or the poller announce other processes' writes). A read that
finds the database away or the pool dry is retried with backoff (a stream's response has begun: too
late for a 503); after about a minute the iterator ends and a browser reconnects by itself.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import TypeVar

from flask import current_app

from app.agent.events import Event, Watch
from app.extensions import TRANSIENT_DB_ERRORS, begin_reads, db
from app.models import RunStatus

log = logging.getLogger(__name__)

PING_SECONDS = 15.0
GIVE_UP_AFTER = 30  # failed reads in a row (about a minute)

# The one map from a run's events to the status they leave it in.
STATUS_AFTER = {
    "run_started": RunStatus.RUNNING,
    "run_resumed": RunStatus.RUNNING,
    "run_paused": RunStatus.PAUSED,
    "run_completed": RunStatus.COMPLETED,
    "run_failed": RunStatus.FAILED,
    "run_cancelled": RunStatus.CANCELLED,
}

Chunk = TypeVar("Chunk")


def status_after(batch: list[Event], status: str | None) -> str | None:
    """The status the newest state change in `batch` recorded, else `status`."""
    return next((STATUS_AFTER[e.type] for e in reversed(batch) if e.type in STATUS_AFTER), status)


def follow(run_id: str, cursor: int, render: Callable[[list[Event]], Chunk],
           finish: Callable[[str | None], Chunk], *, hold_paused: bool = False,
           timeout: float | None = None, wait_out_errors: bool = True, watch: Watch | None = None,
           first: tuple[int, list[Event], str | None] | None = None,
           status: str | None = None, relays: bool = True) -> Iterator[Chunk | None]:
    """Yield `render(events)` for each batch after `cursor` (skipping falsy results), then
    `finish(status)` once the run has stopped (paused; with `hold_paused` only finished; None: the run
    is gone), then end. Yields None after PING_SECONDS without output (a caller may send a keep-alive).
    With `timeout`, ends after that many seconds without `finish`. `render` and `finish` may read the
    database: on SQLite, from a read-only snapshot that never waits for the write lock.
    `wait_out_errors` False raises a failed read at once (an answer not yet begun can still say 503).
    `watch` (opened by the caller, who closes it) and `first` (the generation before it read, and what
    `watch.read_after(cursor)` returned) let a caller check the run before its answer begins, with the
    same statement that reads the first events. `status`: the run's status at `cursor`, for a `watch`
    opened `before_write` (its first read is then from memory, which does not say it). `relays` False:
    words relayed from memory are not followed (the stored text events carry them a little later)."""
    hub = current_app.extensions["run_events"]
    deadline = None if timeout is None else time.monotonic() + timeout
    db.session.remove()
    with (nullcontext(watch) if watch is not None else hub.watch(run_id)) as watch:
        watch.relays = relays
        last_sent = time.monotonic()
        failures = 0
        while True:
            seen = watch.generation
            try:
                if first is not None:
                    (seen, batch, read_status), first = first, None
                else:
                    batch, read_status = watch.read_after(cursor)
                if read_status is not None:  # read from the database: the status of the same snapshot
                    status = None if read_status == "gone" else read_status
                else:
                    status = status_after(batch, status)
                stopped = status is None or status in RunStatus.FINISHED or \
                    (status == RunStatus.PAUSED and not hold_paused)
                if batch or stopped:
                    begin_reads()  # a connection only if rendering reads (words in memory do not)
                chunk = render(batch) if batch else (finish(status) if stopped else None)
            except TRANSIENT_DB_ERRORS as exc:
                if not wait_out_errors:
                    raise
                # Nothing of this step was sent: read again shortly.
                db.session.remove()
                failures += 1
                if failures == 1 or failures == GIVE_UP_AFTER:
                    log.warning("following %s waits for the database (%d): %s", run_id, failures, exc)
                if failures == GIVE_UP_AFTER:
                    return
                time.sleep(min(5.0, 0.25 * failures) * random.uniform(0.5, 1.5))
                continue
            failures = 0
            db.session.remove()
            if batch:
                cursor = next((event.seq for event in reversed(batch) if event.seq is not None), cursor)
                if chunk:
                    yield chunk
                    last_sent = time.monotonic()
                continue
            if stopped:
                if chunk is not None:
                    yield chunk
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            if now - last_sent >= PING_SECONDS:
                yield None
                last_sent = now = time.monotonic()
            wait = PING_SECONDS - (now - last_sent)
            if deadline is not None:
                wait = min(wait, deadline - now)
            watch.wait(seen, wait)
