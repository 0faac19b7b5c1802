"""The run's event log: numbered events written with the transaction that caused them, and the
wake-ups that let streams follow a run without polling the database.

Writing: `append()` queues an event in the current session; when the transaction commits (or when
the agent loop calls `write()` to fold its lease check in), the run's events get their numbers from one
`UPDATE runs SET last_seq = last_seq + n ... RETURNING` (which locks the run row, so numbers are
committed in order and a reader's cursor never skips one) and are inserted in one statement.

Following: each process has a `Hub`. After a commit, the events it wrote are handed to the streams
of this process that watch the run (from memory: no query), and only those streams are woken. Runs
executed by another process are announced by PostgreSQL `NOTIFY run_events` (a listener thread), and,
as the fallback (SQLite with several workers, or while the listener reconnects), by one poller per
process that asks for the `last_seq` of every watched run in a single query.

Relaying: a reply's words are stored a few times a second, but this process's streams see them sooner:
the agent loop hands the reply so far to the hub (`relay`), and each watch turns it into a `text`
event with no seq of its own, placed by `at` like the stored ones. A watch trims
the words it already relayed from the stored text events that follow, so a stream and the REST API's
deltas see each word once; a reload reads the stored reply and its events, which always agree. Every
delta is relayed as it arrives; a watch may take them less often (`Watch.hold_relays`: the page renders
a reply at most every few tens of milliseconds) and is then not woken by them meanwhile, and a watch
that only waits for the run to settle takes none (`Watch.relays`).
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from flask import current_app

from app.extensions import begin_reads, db
from app.models import CallChange, CallStatus, Run, RunEvent, RunStatus, ToolCall, utcnow

log = logging.getLogger(__name__)

CHANNEL = "run_events"
POLL_SECONDS = 1.0            # the fallback when no NOTIFY can arrive (SQLite across processes)
POLL_SECONDS_LISTENING = 5.0  # a safety net only: NOTIFY wakes streams at once
RECENT_EVENTS = 256           # events kept in memory per watched run
_PENDING = "run_events.pending"
_WRITTEN = "run_events.written"
_NUMBERED = "run_events.numbered"  # events of runs created in this transaction (append_to_new_run)


@dataclass(frozen=True, slots=True)
class Event:
    run_id: str
    seq: int | None  # None: words relayed from memory, not stored yet (Watch._placing)
    type: str
    data: dict
    created_at: datetime
    # The rows of the calls the event is about, by id, as this process wrote them (never stored: None
    # when read from the database): this process's streams render their cards without reading them.
    calls: dict[str, dict] | None = None
    # Likewise the message it is about, as this process wrote it: the whole new row for user_message and
    # message_started, what the turn's end changed for message_completed (the REST API's run views).
    row: dict | None = None


class _Queued(NamedTuple):
    """An event waiting for its transaction's numbering (`append`)."""
    run_id: str
    type: str
    data: dict
    calls: dict[str, dict] | None = None
    row: dict | None = None


def relay(run_id: str, message_id: int, reply: str) -> None:
    """The reply so far, not all stored yet: for this process's streams of the run (see `Hub.relay`)."""
    current_app.extensions["run_events"].relay(run_id, message_id, reply)


def relayed(run_id: str, message_id: int) -> None:
    """The reply's relaying ended (its turn ended, or stopped): forget its words."""
    current_app.extensions["run_events"].relay(run_id, message_id, None)


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------

def append(run_id: str, type: str, data: dict | None = None, calls: dict[str, dict] | None = None,
           row: dict | None = None) -> None:
    """Queue an event in the current transaction; it is numbered and written when that commits.
    `calls`, `row`: the rows it is about, for this process's watchers (`Event.calls`, `Event.row`)."""
    db.session.info.setdefault(_PENDING, []).append(_Queued(run_id, type, data or {}, calls, row))


def append_to_new_run(run_id: str, seq: int, type: str, data: dict | None = None,
                      created_at: datetime | None = None, row: dict | None = None) -> None:
    """Queue an event of a run inserted by this same transaction, already numbered: the caller gave the
    new row `last_seq` = the highest of these numbers, so nothing needs the row's lock or an UPDATE
    (nobody else can see the run before the commit)."""
    db.session.info.setdefault(_NUMBERED, []).append(
        {"run_id": run_id, "seq": seq, "type": type, "data": data or {}, "created_at": created_at or utcnow(),
         "row": row})


def inserted_with_new_run(run_id: str) -> None:
    """The caller's own statement inserted the events `append_to_new_run` queued for this run: nothing
    more to insert; they are published after the commit like the others."""
    numbered = db.session.info.get(_NUMBERED) or []
    db.session.info[_NUMBERED] = [row for row in numbered if row["run_id"] != run_id]
    db.session.info.setdefault(_WRITTEN, []).extend(Event(**row) for row in numbered if row["run_id"] == run_id)


@dataclass(frozen=True, slots=True)
class Then:
    """A write of the run's step that happens only when the run's row matched (see `write`): on
    PostgreSQL it is folded into the statement that numbers the events, after the run's row is taken
    (the lock order); on SQLite it runs right after that statement. `build(gate)` is cached and returns
    the statement: as it is with `gate` None, else with `gate` added to its WHERE. Its bound parameters'
    names are its own (they share one statement with the events')."""
    build: Callable
    params: dict | list
    folded_params: dict | None = None  # PostgreSQL's, where they differ (several rows as one JSON array)


def write(run_id: str, lease_owner: str | None = None, lease_until: datetime | None = None,
          run_values: dict | None = None, then: tuple[Then, ...] = ()) -> bool:
    """Write the run's queued events now. With `lease_owner`, in the same statement renew the lease
    of a running run we own (and set `run_values` on it: a new status ends the run's step in the
    statement that numbers its events); False (write nothing, the caller rolls back) when it is no
    longer ours: cancelled, or recovered by another worker. `then`: the step's other writes, done only
    when it is ours (one statement with the events' on PostgreSQL, which commits as it runs when no
    transaction is open: the caller commits or rolls back right after, in any case)."""
    return _write(db.session(), run_id, lease_owner, lease_until, run_values, then)


_COMMITS_AS_IT_RUNS = {"isolation_level": "AUTOCOMMIT"}


def _take_queued(session: sa.orm.Session, run_id: str) -> list:
    queued = session.info.get(_PENDING) or []
    session.info[_PENDING] = [event for event in queued if event[0] != run_id]
    return [event for event in queued if event[0] == run_id]


# The hot write statements are built once per shape, with everything that varies bound (named events_*,
# never a column's name), and run with `_params`: building a statement cost more than running it.
_BOUND_TYPES = {"run_id": sa.String(40), "count": sa.Integer(), "now": sa.DateTime(timezone=True),
                "lease_owner": sa.String(80), "lease_until": sa.DateTime(timezone=True),
                "resume_after": sa.String(40), "queued": sa.JSON()}


def _bound(name: str):
    return sa.bindparam(f"events_{name}", type_=_BOUND_TYPES[name])


def _params(run_id: str, count: int, lease_owner: str | None = None, lease_until: datetime | None = None,
            run_values: dict | None = None, now: datetime | None = None) -> dict:
    params = {"events_run_id": run_id, "events_count": count, "events_now": now or utcnow(),
              "events_lease_owner": lease_owner, "events_lease_until": lease_until}
    params.update((f"events_set_{column}", value) for column, value in (run_values or {}).items())
    return params


@functools.cache
def _resumes():
    """Whether the run resumes now: it is paused and none of its calls but `events_resume_after` is
    pending (a scalar subquery). Aliases: as a subquery of an UPDATE of these tables it must read the
    rows as they were."""
    runs, calls = Run.__table__, ToolCall.__table__
    others, before = calls.alias("other_calls"), runs.alias("run_before")
    others_pending = sa.exists().where(others.c.run_id == _bound("run_id"), others.c.status == CallStatus.PENDING,
                                       others.c.id != _bound("resume_after"))
    return sa.select(sa.and_(before.c.status == RunStatus.PAUSED, ~others_pending)) \
        .where(before.c.id == _bound("run_id")).scalar_subquery()


@functools.cache
def _numbering(with_lease: bool, run_columns: tuple[str, ...] = (), resume: bool = False):
    """The UPDATE that numbers `events_count` new events of the run. `with_lease`: only a running run
    under our lease, renewed. `run_columns`: also set these (`events_set_<column>`). `resume`: when
    `_resumes`, queue the run again and count one event more (its run_resumed)."""
    runs = Run.__table__
    count, values = _bound("count"), {"updated_at": _bound("now")}
    if resume:
        count = count + sa.case((_resumes(), 1), else_=0)
        values["status"] = sa.case((_resumes(), RunStatus.QUEUED), else_=runs.c.status)
    update = sa.update(runs).where(runs.c.id == _bound("run_id")).values(last_seq=runs.c.last_seq + count, **values)
    if with_lease:
        update = update.where(runs.c.status == RunStatus.RUNNING, runs.c.lease_owner == _bound("lease_owner")) \
            .values(lease_until=_bound("lease_until"))
    if run_columns:
        update = update.values({column: sa.bindparam(f"events_set_{column}", type_=runs.c[column].type)
                                for column in run_columns})
    return update


@functools.cache
def _numbered(with_lease: bool, run_columns: tuple[str, ...] = ()):
    """`_numbering` returning the run's new last_seq."""
    return _numbering(with_lease, run_columns).returning(Run.__table__.c.last_seq)


@functools.cache
def _event_insert():
    return sa.insert(RunEvent.__table__)


def _write(session: sa.orm.Session, run_id: str, lease_owner: str | None, lease_until: datetime | None,
           run_values: dict | None = None, then: tuple[Then, ...] = ()) -> bool:
    mine = _take_queued(session, run_id)
    if lease_owner is None and not mine and not then:
        return True
    now = utcnow()
    params = _params(run_id, len(mine), lease_owner, lease_until, run_values, now)
    run_columns = tuple(sorted(run_values or ()))
    postgres = session.get_bind().dialect.name == "postgresql"
    if then and postgres:
        for step in then:
            params.update(step.params if step.folded_params is None else step.folded_params)
        statement = _numbered_then(lease_owner is not None, run_columns, tuple(step.build for step in then))
        params["events_queued"] = _queued(mine)
        if session.in_transaction():
            last_seq = session.execute(statement, params).scalar()
        else:
            # The step is this one statement: it commits as it runs, with no BEGIN and no COMMIT round
            # trip around it (it writes nothing unless the run is ours, so nothing is left to roll
            # back). The caller's commit then only publishes its events.
            session.connection(execution_options=_COMMITS_AS_IT_RUNS)
            hub = current_app.extensions["run_events"]
            with hub.writing(run_id):
                last_seq = session.execute(statement, params).scalar()
                if last_seq is not None and mine:
                    hub.committing(run_id, last_seq)
    elif mine and postgres:
        # One statement: the UPDATE numbers the events in a CTE, the INSERT writes them from its row
        # (none when the lease check failed). The NOTIFY is delivered at commit; repeats within one
        # transaction collapse into one.
        seqs = session.execute(_numbered_and_inserted(lease_owner is not None, run_columns),
                               {**params, "events_queued": _queued(mine)}).scalars().all()
        last_seq = max(seqs) if seqs else None
    else:
        last_seq = session.execute(_numbered(lease_owner is not None, run_columns), params).scalar()
        if last_seq is not None and mine:
            session.execute(_event_insert(), _rows(run_id, last_seq, mine, now))
        if last_seq is not None:
            for step in then:
                session.execute(step.build(None), step.params)
    if last_seq is None:
        return False
    if mine:
        session.info.setdefault(_WRITTEN, []).extend(_written(run_id, last_seq, mine, now))
    return True


def _rows(run_id: str, last_seq: int, mine: list, now: datetime) -> list[dict]:
    first = last_seq - len(mine) + 1
    return [{"run_id": run_id, "seq": first + i, "type": queued.type, "data": queued.data, "created_at": now}
            for i, queued in enumerate(mine)]


def _written(run_id: str, last_seq: int, mine: list, now: datetime) -> list[Event]:
    first = last_seq - len(mine) + 1
    return [Event(run_id, first + i, queued.type, queued.data, now, queued.calls, queued.row)
            for i, queued in enumerate(mine)]


def _queued(mine: list) -> list[dict]:
    return [{"type": queued.type, "data": queued.data} for queued in mine]


@functools.cache
def _numbered_insert(update, resume: bool):
    """PostgreSQL: the run's UPDATE as a CTE ("bumped": last_seq, and whether it `resumed`) and the INSERT
    of its events (`events_queued`, a JSON array) numbered from it. `events_count` of them are written in
    any case; with `resume`, the one after them (run_resumed) only when the run resumed."""
    from sqlalchemy.dialects import postgresql  # here: a SQLite worker never loads the dialect

    runs, events_table = Run.__table__, RunEvent.__table__
    # The payload names the new last_seq too: a process that wrote these events itself need not read them.
    payload = runs.c.id + " " + sa.cast(runs.c.last_seq, sa.Text)
    bumped = update.returning(runs.c.last_seq, sa.func.pg_notify(CHANNEL, payload),
                              (_resumes() if resume else sa.false()).label("resumed")).cte("bumped")
    # The events travel as one bound JSON array, not a VALUES list: a VALUES list with data is not
    # cacheable, so SQLAlchemy compiled the whole statement again at every write (~3 ms of CPU).
    elements = sa.func.json_array_elements(_bound("queued")).table_valued(
        sa.column("value", postgresql.JSON), with_ordinality="ordinality").render_derived(name="queued")
    queued = sa.select((elements.c.ordinality - 1).label("ord"), elements.c.value["type"].astext.label("type"),
                       elements.c.value["data"].label("data")).subquery("queued")
    always = _bound("count")
    count = always + sa.case((bumped.c.resumed, 1), else_=0) if resume else always
    numbered = sa.select(_bound("run_id"), bumped.c.last_seq - count + 1 + queued.c.ord,
                         queued.c.type, queued.c.data, _bound("now")) \
        .select_from(bumped).join(queued, sa.or_(queued.c.ord < always, bumped.c.resumed))
    return bumped, sa.insert(events_table).from_select(["run_id", "seq", "type", "data", "created_at"], numbered)


@functools.cache
def _numbered_and_inserted(with_lease: bool, run_columns: tuple[str, ...]):
    """PostgreSQL: `_numbering` and the INSERT of the events in one statement, returning their seqs."""
    _, insert = _numbered_insert(_numbering(with_lease, run_columns), False)
    return insert.returning(RunEvent.__table__.c.seq)


@functools.cache
def _numbered_then(with_lease: bool, run_columns: tuple[str, ...], then: tuple[Callable, ...]):
    """PostgreSQL: `_numbering`, the INSERT of the events and the step's other writes (`Then.build`,
    each gated on the run's row: an uncorrelated EXISTS runs first, so the run's row is taken before
    any other, the lock order) in one statement, returning the run's new last_seq (no row: not ours)."""
    bumped, insert = _numbered_insert(_numbering(with_lease, run_columns), False)
    ours = sa.exists(sa.select(bumped.c.last_seq))
    statement = sa.select(bumped.c.last_seq).add_cte(insert.cte("inserted"))
    for i, build in enumerate(then):
        statement = statement.add_cte(build(ours).cte(f"then_{i}"))
    return statement


@functools.cache
def _with_call(call_update, with_lease: bool, resume: bool, read: Callable | None = None):
    """PostgreSQL: one statement that numbers and inserts the run's events and changes one of its calls
    (`call_update`, a CallChange's statement). An uncorrelated EXISTS runs first: the run's row is
    taken before the call's (the lock order). `read(changed, run_id)`: a SELECT whose rows the same
    statement reads, joined to the write's row as read_<column>; it sees the database as it was before
    the statement (the changed call's old row: the caller has its new one)."""
    bumped, insert = _numbered_insert(_numbering(with_lease, (), resume), resume)
    changed = call_update.where(sa.exists(sa.select(bumped.c.last_seq))) \
        .returning(sa.true().label("matched")).cte("changed")
    statement = sa.select(bumped.c.last_seq, bumped.c.resumed, changed).select_from(bumped) \
        .outerjoin(changed, sa.true())
    if read is not None:
        rows = read(changed, _bound("run_id")).subquery("read")
        statement = statement.add_columns(*(column.label(f"read_{column.name}") for column in rows.c)) \
            .outerjoin(rows, sa.true())
    return statement.add_cte(insert.cte("inserted"))


@functools.cache
def _returning_resumed(call_update):
    return call_update.returning(_resumes().label("resumed"))


@dataclass(frozen=True, slots=True)
class CallWritten:
    """What `write_with_call` did: `ours` False when the run's row did not match (with a lease: no longer
    ours); `call` the call's RETURNING row (None: it matched nothing); `resumed` the run was queued again;
    `last_seq` the run's last event now (its own events included); `read` the rows its `read` read
    (dicts, unordered; PostgreSQL only)."""
    ours: bool
    call: sa.Row | None
    resumed: bool = False
    last_seq: int | None = None
    read: tuple[dict, ...] = ()

    @property
    def ok(self) -> bool:
        return self.ours and self.call is not None


def write_with_call(run_id: str, change: CallChange, lease_owner: str | None = None,
                    lease_until: datetime | None = None, resume_after: str | None = None,
                    read: Callable | None = None) -> CallWritten:
    """Write the run's queued events with the change of one of its calls (`ToolCall.cas`): on PostgreSQL
    one statement that takes the run's row first (the lock order), on SQLite three. With `lease_owner`
    the run must still be running under our lease (renewed). With `resume_after` (the id of a call just
    decided and no longer pending) a paused run is queued again, with a `run_resumed` event, when none
    of its other calls is pending. `read` (PostgreSQL; a cached builder, see `_with_call`): rows to read
    in the same statement. Unless `.ok`, the caller rolls back (events may have been written)."""
    session = db.session()
    resume = resume_after is not None
    mine = _take_queued(session, run_id)
    now = utcnow()
    params = {**_params(run_id, len(mine), lease_owner, lease_until, now=now), **change.params(run_id),
              "events_resume_after": resume_after}
    read_rows: tuple[dict, ...] = ()
    if session.get_bind().dialect.name == "postgresql":
        statement = _with_call(change.statement(), lease_owner is not None, resume, read)
        rows = session.execute(statement, {**params, "events_queued": _queued(
            mine + [_Queued(run_id, "run_resumed", {})] if resume else mine)}).all()
        if not rows:
            return CallWritten(False, None)
        row = rows[0]
        if read is not None:
            read_rows = tuple(values for values in (
                {name[5:]: value for name, value in r._mapping.items() if name.startswith("read_")} for r in rows)
                if any(value is not None for value in values.values()))
        resumed = bool(row.resumed)
        if resumed:
            mine.append(_Queued(run_id, "run_resumed", {}))
        last_seq = row.last_seq
        call = row if row.matched else None
    else:
        call = session.execute(_returning_resumed(change.statement()) if resume else change.statement(),
                               params).first()
        if call is None:
            return CallWritten(True, None)
        resumed = resume and bool(call.resumed)
        if resumed:
            mine.append(_Queued(run_id, "run_resumed", {}))
            params.update(events_count=len(mine), events_set_status=RunStatus.QUEUED)
        last_seq = session.execute(_numbered(lease_owner is not None, ("status",) if resumed else ()), params).scalar()
        if last_seq is None:
            return CallWritten(False, call)
        if mine:
            session.execute(_event_insert(), _rows(run_id, last_seq, mine, now))
    if mine:
        if change.whole_row and call is not None:  # its events go to this process's streams with its new row
            card = {name: getattr(call, name) for name in change.returned}
            mine = [queued._replace(calls={change.call_id: card}) if queued.type == "tool_call_updated"
                    and queued.data.get("call_id") == change.call_id else queued for queued in mine]
        session.info.setdefault(_WRITTEN, []).extend(_written(run_id, last_seq, mine, now))
    return CallWritten(True, call, resumed, last_seq, read_rows)


@sa.event.listens_for(sa.orm.Session, "before_commit")
def _write_queued(session: sa.orm.Session) -> None:
    if numbered := session.info.pop(_NUMBERED, None):
        session.flush()  # the new runs' rows first
        session.execute(_event_insert(), [{k: v for k, v in row.items() if k != "row"} for row in numbered])
        session.info.setdefault(_WRITTEN, []).extend(Event(**row) for row in numbered)
    while queued := session.info.get(_PENDING):
        _write(session, queued[0][0], None, None)
    if written := session.info.get(_WRITTEN):
        # Said before the COMMIT: its NOTIFY can reach this process's listener before after_commit
        # publishes these events, and must not send their watchers to the database for them.
        hub = current_app.extensions["run_events"]
        for event in written:
            hub.committing(event.run_id, event.seq)


@sa.event.listens_for(sa.orm.Session, "after_commit")
def _publish_written(session: sa.orm.Session) -> None:
    written = session.info.pop(_WRITTEN, None)
    if written:
        hub = current_app.extensions["run_events"]
        by_run: dict[str, list[Event]] = {}
        for event in written:
            by_run.setdefault(event.run_id, []).append(event)
        for run_id, batch in by_run.items():
            hub.publish(run_id, batch)


@sa.event.listens_for(sa.orm.Session, "after_rollback")
def _forget_queued(session: sa.orm.Session) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_NUMBERED, None)
    if written := session.info.pop(_WRITTEN, None):
        hub = current_app.extensions["run_events"]
        for run_id in {event.run_id for event in written}:
            hub.abandon(run_id)


# ---------------------------------------------------------------------------------------------------
# Following
# ---------------------------------------------------------------------------------------------------

class _Channel:
    """One watched run in this process."""

    def __init__(self):
        # An RLock, as a Condition's own default: a plain lock makes Condition.wait test ownership with a
        # non-blocking acquire, which under gevent yields while holding it, and `Hub.committing` takes it
        # inside a write transaction (SQLite's write lock must never be held across a greenlet switch).
        lock = threading.RLock()
        self.changed = threading.Condition(lock)  # notified on every change, relayed words included
        self.stored = threading.Condition(lock)   # notified on every change but relayed words
        self.generation = 0   # bumped on every wake-up but relayed words (which `Watch.wait` looks at)
        self.external = 0     # bumped when another process may have written, and what is unknown (poll)
        self.noted = 0        # the highest seq a NOTIFY named that this process had not seen then
        self.watchers = 0
        self.recent: dict[int, Event] = {}
        self.highest = 0      # the highest seq this process has seen for the run
        self.committing = 0   # the highest seq this process is committing (published once committed)
        self.writing = 0      # statements of this process in flight that commit as they run (`Hub.writing`)
        self.held = 0         # the highest seq a NOTIFY named meanwhile
        self.replies: dict[int, str] = {}  # replies this process is streaming: their words so far

    def wake(self, events: list[Event] | None = None) -> None:
        with self.changed:
            if events is None:
                self.external += 1
            else:
                for event in events:
                    self.recent[event.seq] = event
                    self.highest = max(self.highest, event.seq)
                if len(self.recent) > RECENT_EVENTS:
                    for seq in sorted(self.recent)[:-RECENT_EVENTS]:
                        del self.recent[seq]
            self.bump()

    def note(self, seq: int) -> None:
        """A NOTIFY named event `seq`: watchers that do not hold it by their next read read the database."""
        with self.changed:
            self.noted = max(self.noted, seq)
            self.bump()

    def bump(self) -> None:
        """Wake every watcher (the caller holds the lock)."""
        self.generation += 1
        self.changed.notify_all()
        self.stored.notify_all()

    def relay(self, message_id: int, reply: str | None) -> None:
        with self.changed:
            if reply is None:
                self.replies.pop(message_id, None)
                return
            self.replies[message_id] = reply
            self.changed.notify_all()  # only the watchers taking relayed words now (`Watch.wait`)


ENDED = -1  # Watch.placed: the reply has ended (nothing more is relayed)


@dataclass(frozen=True, slots=True)
class _RunFields:
    id: str
    session_id: str
    agent_id: str


class Watch:
    """A stream's view of one run: read what came after a cursor, and wait for more."""

    def __init__(self, hub: "Hub", run_id: str, channel: _Channel, owner_id: int | None = None,
                 before_write: bool = False):
        self.hub, self.run_id, self.channel, self.owner_id = hub, run_id, channel, owner_id
        self.run = None  # the run's id, session_id and agent_id: from the last database read, or `HandOver.keep`
        # The first read asks the database, unless the watch was opened before the events it is for
        # were written: each of those then reaches it (from this process, or announced by a NOTIFY or
        # the poll), and memory has them.
        self._external_seen = channel.external if before_write else -1
        self.placed: dict[int, int] = {}  # per reply seen: the characters it has handed out (or ENDED)
        self.relays = True         # False: relayed words are never handed out (stored events carry them)
        self._relays_from = 0.0    # relayed words are held until then (`hold_relays`)

    @property
    def generation(self) -> int:
        return self.channel.generation

    def hold_relays(self, until: float) -> None:
        """Hand out no relayed words before `until` (time.monotonic()); they wait in memory, and do not
        wake this watch meanwhile. Stored events are handed out as ever."""
        self._relays_from = until

    def read_after(self, cursor: int, limit: int = 500) -> tuple[list[Event], str | None]:
        """The events after `cursor`, then the words relayed since (see `_placing`), and the run's
        status when the database was read (None when the events came from memory; "gone" when the run
        no longer exists).

        Events this process committed come from memory. On the first read, after a poll found the run
        changed, and when a NOTIFY named an event this process has not seen (read by then: it may
        arrive during the read that returns it), the database is asked, for the events and the run's
        status in one statement (so both are one snapshot). With `owner_id`, another account's run
        reads as "gone"."""
        channel = self.channel
        if channel.external == self._external_seen and channel.noted <= channel.highest:
            batch, seq = [], cursor + 1
            while (event := channel.recent.get(seq)) is not None:
                batch.append(event)
                seq += 1
            if batch or cursor >= channel.highest:
                # a gap after it (evicted, or published out of order) is read next time
                return self._placing(batch, cursor), None
        self._external_seen = channel.external
        try:
            begin_reads()  # a request's first read joins its transaction
            query = sa.select(Run.status, Run.session_id, Run.agent_id, Run.last_seq, RunEvent.seq, RunEvent.type,
                              RunEvent.data, RunEvent.created_at) \
                .select_from(Run).outerjoin(RunEvent, sa.and_(RunEvent.run_id == Run.id, RunEvent.seq > cursor)) \
                .where(Run.id == self.run_id).order_by(RunEvent.seq).limit(limit)
            if self.owner_id is not None:
                query = query.where(Run.owner_id == self.owner_id)
            rows = db.session.execute(query).all()
        except Exception:
            self._external_seen = -1  # not read: the next read asks the database again
            raise
        if not rows:
            return [], "gone"
        self.run = _RunFields(self.run_id, rows[0].session_id, rows[0].agent_id)
        batch = [Event(self.run_id, row.seq, row.type, row.data or {}, row.created_at)
                 for row in rows if row.seq is not None]
        with channel.changed:
            if rows[0].last_seq > channel.highest:
                # Events this process had not seen: its other watchers of the run look too (their NOTIFY
                # may have come during this read, or come later, and then wakes nobody).
                channel.highest = rows[0].last_seq
                channel.bump()
        if len(batch) == limit:
            self._external_seen = -1  # more may follow: the next read asks the database again
        return self._placing(batch, cursor), rows[0].status

    def _placing(self, batch: list[Event], cursor: int) -> list[Event]:
        """`batch` with the stored words this watch already relayed trimmed from its text events, then
        a text event with no seq (and the whole `reply` so far) for each reply whose relayed words go
        past what the watch has handed out. Only replies whose start or stored words it has seen are
        relayed (a stream places them after what it knows), and none after their message_completed."""
        placed = self.placed
        relaying = self.relays and time.monotonic() >= self._relays_from
        if not batch and not (relaying and self.channel.replies):
            return batch
        out = []
        for event in batch:
            if event.type == "text" and (at := event.data.get("at")) is not None:
                message_id, text = event.data["message_id"], event.data.get("text", "")
                known = placed.get(message_id, 0)
                if known != ENDED:
                    if at < known:  # relayed already, all or some of it
                        skip = min(len(text), known - at)
                        event = Event(event.run_id, event.seq, event.type,
                                      {**event.data, "text": text[skip:], "at": at + skip}, event.created_at)
                    placed[message_id] = max(known, at + len(text))
            elif event.type == "message_started":
                placed.setdefault(event.data["message_id"], 0)
            elif event.type == "message_completed":
                placed[event.data["message_id"]] = ENDED
            out.append(event)
        if relaying and self.channel.replies:
            with self.channel.changed:
                replies = list(self.channel.replies.items())
            for message_id, reply in replies:
                known = placed.get(message_id)
                if known is not None and known != ENDED and len(reply) > known:
                    out.append(Event(self.run_id, None, "text", {"message_id": message_id, "text": reply[known:],
                                                                 "at": known, "reply": reply}, utcnow()))
                    placed[message_id] = len(reply)
        return out

    def wait(self, seen_generation: int, timeout: float) -> None:
        """Block until the run is woken after `seen_generation`, words are relayed that this watch may
        take now (held ones: when `hold_relays` lets them out), or `timeout` passes."""
        channel = self.channel
        end = time.monotonic() + timeout
        with channel.changed:
            while channel.generation == seen_generation:
                now = time.monotonic()
                if now >= end:
                    return
                if not self.relays:
                    channel.stored.wait(end - now)
                elif now < self._relays_from:
                    channel.stored.wait(min(end, self._relays_from) - now)
                elif self._relayed_unplaced():
                    return
                else:
                    channel.changed.wait(end - now)

    def _relayed_unplaced(self) -> bool:
        """Words relayed past what this watch has handed out, that `_placing` would hand out (the caller
        holds the lock)."""
        for message_id, reply in self.channel.replies.items():
            known = self.placed.get(message_id)
            if known is not None and known != ENDED and len(reply) > known:
                return True
        return False


HAND_OVER_SECONDS = 10.0  # how long a command's watch waits for its answer's stream (`Hub.hand_over`)


class HandOver:
    """A watch a command opened before it wrote, for the stream its answer opens (`Hub.hand_over`):
    `keep` says where that stream starts and what the run is there."""

    def __init__(self, watch: Watch, owner_id: int, stack: ExitStack):
        self.watch, self.owner_id, self.stack = watch, owner_id, stack
        self.cursor: int | None = None
        self.status: str | None = None
        self.kept_at = 0.0

    def keep(self, cursor: int, status: str, session_id: str, agent_id: str) -> None:
        """Keep the watch for a stream of the run from `cursor`, where the run is `status`."""
        self.cursor, self.status, self.kept_at = cursor, status, time.monotonic()
        self.watch.run = _RunFields(self.watch.run_id, session_id, agent_id)


class Hub:
    """This process's wake-ups for run streams (one per app)."""

    def __init__(self, app):
        self.app = app
        self.listener: Listener | None = None
        self._lock = threading.Lock()
        self._channels: dict[str, _Channel] = {}
        self._parked: dict[str, HandOver] = {}  # watches kept for a stream (`hand_over`), by run
        self._poller: threading.Thread | None = None
        self._stopped = threading.Event()

    def relay(self, run_id: str, message_id: int, reply: str | None) -> None:
        """A reply this process is streaming, so far (None: it ended): its watchers are woken and
        place the words not yet handed out. Nothing is kept for a run nobody here watches."""
        channel = self._channels.get(run_id)
        if channel is not None:
            channel.relay(message_id, reply)

    def publish(self, run_id: str, events: list[Event]) -> None:
        """Events this process just committed: hand them to the run's watchers and wake them."""
        channel = self._channels.get(run_id)
        if channel is not None:
            channel.wake(events)

    def committing(self, run_id: str, seq: int) -> None:
        """This process is committing the run's events up to `seq`: `publish` will hand them over."""
        channel = self._channels.get(run_id)
        if channel is not None:
            with channel.changed:
                channel.committing = max(channel.committing, seq)

    def abandon(self, run_id: str) -> None:
        """The commit announced by `committing` did not happen: a NOTIFY skipped meanwhile may have been
        another process's, so the watchers read the database again."""
        channel = self._channels.get(run_id)
        if channel is None:
            return
        with channel.changed:
            abandoned, channel.committing = channel.committing > channel.highest, channel.highest
        if abandoned:
            channel.wake()

    def notify(self, note: str) -> None:
        """Another process may have changed the run (a NOTIFY "<run id> <last_seq>", or a run id from
        the poller): its watchers read the database again, unless this process has that event or is
        committing it (it wrote it)."""
        run_id, _, seq = note.partition(" ")
        channel = self._channels.get(run_id)
        if channel is None:
            return
        if seq.isdigit():
            with channel.changed:
                if channel.writing:
                    channel.held = max(channel.held, int(seq))
                    return
            if int(seq) > max(channel.highest, channel.committing):
                channel.note(int(seq))
            return
        channel.wake()

    @contextmanager
    def writing(self, run_id: str) -> Iterator[None]:
        """Around a statement that commits as it runs (PostgreSQL autocommit): its NOTIFY may arrive
        before this process can say which events it is committing (`committing`, inside the block), so
        the run's NOTIFYs are held until then; one naming a later event (another process's) wakes the
        watchers as the block ends."""
        channel = self._channels.get(run_id)
        if channel is None:
            yield
            return
        with channel.changed:
            channel.writing += 1
        try:
            yield
        finally:
            with channel.changed:
                channel.writing -= 1
                held = channel.held if channel.held > max(channel.highest, channel.committing) else 0
                if not channel.writing:
                    channel.held = 0
            if held:
                channel.note(held)

    @contextmanager
    def watch(self, run_id: str, owner_id: int | None = None, before_write: bool = False) -> Iterator[Watch]:
        """Watch a run. `before_write`: opened before the caller writes the events it will read (a
        command whose answer waits for the run), so its reads need no database until another process
        is heard of; the caller then knows the run's status where it starts reading (`follow`)."""
        with self._lock:
            channel = self._channels.get(run_id)
            if channel is None:
                channel = self._channels[run_id] = _Channel()
            channel.watchers += 1
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll, name="run-events-poller", daemon=True)
                self._poller.start()
        try:
            yield Watch(self, run_id, channel, owner_id, before_write)
        finally:
            with self._lock:
                channel.watchers -= 1
                if channel.watchers == 0:
                    del self._channels[run_id]

    @contextmanager
    def hand_over(self, run_id: str, owner_id: int) -> Iterator["HandOver"]:
        """For a command whose answer opens the run's stream (a page's message or decision): a watch
        opened before the command writes and, if the command then `keep`s it, kept for that stream
        (`take_over`), so the stream's first read needs no database. Closed if it is not kept, and
        when no stream of this owner took it within HAND_OVER_SECONDS."""
        stack = ExitStack()
        watch = stack.enter_context(self.watch(run_id, owner_id, before_write=True))
        handing = HandOver(watch, owner_id, stack)
        try:
            yield handing
        finally:
            if handing.cursor is None:
                stack.close()
        if handing.cursor is not None:
            with self._lock:
                expired = self._parked_expired()
                previous = self._parked.pop(run_id, None)
                self._parked[run_id] = handing
            for stale in expired + ([previous] if previous is not None else []):
                stale.stack.close()

    def take_over(self, run_id: str, owner_id: int, cursor: int) -> "HandOver | None":
        """The watch a command of this owner kept for the run's stream from `cursor` (`hand_over`), now
        the caller's to close (`HandOver.stack`), or None."""
        with self._lock:
            handing = self._parked.get(run_id)
            if handing is None or handing.owner_id != owner_id or handing.cursor != cursor:
                return None
            del self._parked[run_id]
        return handing

    def _parked_expired(self) -> list["HandOver"]:
        """Under `_lock`: remove the kept watches no stream took in time, and return them to close."""
        now = time.monotonic()
        expired = [run_id for run_id, handing in self._parked.items() if handing.kept_at + HAND_OVER_SECONDS < now]
        return [self._parked.pop(run_id) for run_id in expired]

    def stop(self) -> None:
        self._stopped.set()
        if self.listener is not None:
            self.listener.stop()

    def _poll(self) -> None:
        """The fallback for writes no NOTIFY announces: one query for every watched run's last_seq."""
        while not self._stopped.wait(self._poll_seconds()):
            with self._lock:
                expired = self._parked_expired()
            for handing in expired:
                handing.stack.close()
            with self._lock:
                watched = {run_id: channel.highest for run_id, channel in self._channels.items()}
            if not watched:
                continue
            try:
                with self.app.app_context():
                    begin_reads()
                    ids = list(watched)
                    latest = {}
                    for start in range(0, len(ids), 500):
                        latest.update(db.session.execute(sa.select(Run.id, Run.last_seq).where(
                            Run.id.in_(ids[start:start + 500]))).all())
                    db.session.remove()
            except Exception as exc:  # the database is away: streams keep waiting, we try again
                log.warning("polling watched runs failed: %s", exc)
                continue
            for run_id, highest in watched.items():
                if latest.get(run_id, highest + 1) > highest:  # newer events, or the run is gone
                    self.notify(run_id)

    def _poll_seconds(self) -> float:
        listening = self.listener is not None and self.listener.listening.is_set()
        return POLL_SECONDS_LISTENING if listening else POLL_SECONDS


def init_app(app, sign_ins=None) -> Hub:
    """The process's hub; on PostgreSQL its listener also tells `sign_ins` (app.sign_ins) of changes."""
    hub = app.extensions["run_events"] = Hub(app)
    with app.app_context():
        if db.engine.dialect.name == "postgresql" and app.config.get("RUN_EVENTS_LISTEN", True):
            handlers = {CHANNEL: hub.notify}
            on_listen = None
            if sign_ins is not None:
                from app.sign_ins import CHANNEL as SIGN_INS_CHANNEL
                handlers[SIGN_INS_CHANNEL] = sign_ins.forget_all
                on_listen = sign_ins.forget_all  # what changed while it was not listening is unknown
            hub.listener = Listener(db.engine.url, handlers, on_listen=on_listen)
            if sign_ins is not None:
                sign_ins.listen_with(hub.listener.listening)
            hub.listener.start()
    return hub


class Listener:
    """LISTENs on PostgreSQL channels in a background thread and hands each payload to its channel's
    handler (here: wake this process's watchers, forget remembered sign-ins; in a worker: take a queued
    run). `on_listen` runs each time it starts listening (again), before `listening` is set."""

    def __init__(self, url: sa.URL, handlers: dict[str, Callable[[str], None]],
                 on_listen: Callable[[], None] | None = None):
        self.conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.handlers, self.on_listen = handlers, on_listen
        self.listening = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"listen-{'+'.join(handlers)}", daemon=True)

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
                    for channel in self.handlers:
                        conn.execute(f"LISTEN {channel}")
                    if self.on_listen is not None:
                        self.on_listen()
                    self.listening.set()
                    backoff = 0.5
                    while not self._stopped.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self.handlers[note.channel](note.payload)
            except Exception as exc:  # the database went away: poll meanwhile, reconnect soon
                if self.listening.is_set():
                    log.warning("listener on %s lost its connection (%s); reconnecting", ", ".join(self.handlers), exc)
                self.listening.clear()
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        self.listening.clear()
