"""Flask extensions, created unbound here and bound in `create_app` (so tests can build many apps).

Flask-Migrate is not here: it (and Alembic) is only needed by the `flask db` commands, so `create_app`
imports it itself, and a web worker never does."""
import contextvars
import time
from contextlib import contextmanager

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from htmx_flask import Htmx
import sqlalchemy as sa
from sqlalchemy import MetaData

# Named constraints keep Alembic migrations identical on SQLite and PostgreSQL.
naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=naming_convention))
csrf = CSRFProtect()
login_manager = LoginManager()
htmx = Htmx()
# Limits are declared where they apply (views); storage is RATELIMIT_STORAGE_URI (memory:// per process
# by default, redis://… when several hosts must share the counts).
limiter = Limiter(key_func=get_remote_address, headers_enabled=True)

# "Busy or away right now", not "wrong": a pool with no free connection, a lost or refused
# connection. A stream waits these out and reads again; a request answers 503.
TRANSIENT_DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)

_patient = contextvars.ContextVar("patient_checkouts", default=False)  # per thread and per greenlet
PATIENT_CHECKOUT_ROUNDS = 12  # pool timeouts a background checkout sits through before it gives up
# A pooled connection idle longer than this is pinged before use. A busy worker reuses its connections
# within milliseconds, so it almost never pays the round trip that SQLAlchemy's pool_pre_ping costs on
# every checkout (a quarter of the round trips of a pause+continue cycle were pings).
PING_AFTER_IDLE_SECONDS = 2.0
CONNECTION_OK = 0  # libpq's CONNECTION_OK (psycopg.pq.ConnStatus.OK), without importing psycopg for SQLite


class PatientQueuePool(sa.pool.QueuePool):
    """PostgreSQL's pool. A request that waits pool_timeout for a connection gets a 503 (load is shed
    where a person can retry); background work (runs, lease heartbeats, the sweeper) waits longer
    instead, inside `patient_checkouts()`: the PostgreSQL benchmark's burst of 1,000 messages kept the
    pool dry past the timeout, and the runs it reached mid-reply failed ("Something went wrong")."""

    def _do_get(self):
        for round_ in range(1, PATIENT_CHECKOUT_ROUNDS + 1):
            try:
                return super()._do_get()
            except sa.exc.TimeoutError:
                if not _patient.get() or round_ == PATIENT_CHECKOUT_ROUNDS:
                    raise


@sa.event.listens_for(PatientQueuePool, "checkin")
def _idle_from_now(dbapi_connection, record) -> None:
    record.info["idle_since"] = time.monotonic()


@sa.event.listens_for(PatientQueuePool, "checkout")
def _check_before_use(dbapi_connection, record, proxy) -> None:
    """Replace a connection the server dropped, with every other one of the pool, before a request uses
    it. A server that closes a connection (a restart, pg_terminate_backend) has already said so in its
    socket, which is read here without a round trip; one idle for PING_AFTER_IDLE_SECONDS is also
    pinged, for a connection lost without a word (a firewall's idle timeout). A goodbye still on its
    way fails the statement instead, and SQLAlchemy then lets the pool's connections go; a request's
    first read reads once more on a new one (`_read_once_more_on_a_dropped_connection`; the sign-in
    read, on a connection of its own, in app.accounts)."""
    try:
        # Never blocks. The first read takes the server's last words, if any, the second its closing.
        dbapi_connection.pgconn.consume_input()
        dbapi_connection.pgconn.consume_input()
        if dbapi_connection.pgconn.status != CONNECTION_OK:
            raise ConnectionError("the server ended this connection")
        idle_since = record.info.get("idle_since")
        if idle_since is not None and time.monotonic() - idle_since >= PING_AFTER_IDLE_SECONDS:
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True  # the ping opens no transaction (as SQLAlchemy's own)
            dbapi_connection.execute(";")
            dbapi_connection.autocommit = autocommit
    except Exception:
        raise sa.exc.InvalidatePoolError() from None


@sa.event.listens_for(sa.orm.Session, "do_orm_execute")
def _begin_reads_now(state) -> None:
    """The first statement after `begin_reads` takes the read-only connection. (Registered before the
    listener below, so it runs first: a session it begins is in a transaction there.)"""
    session = state.session
    if session.info.pop(_READS_NEXT, False) and not session.in_transaction():
        session.connection(execution_options=reads_only(db.engine))


@sa.event.listens_for(sa.orm.Session, "do_orm_execute")
def _read_once_more_on_a_dropped_connection(state):
    """A read that begins a session's transaction, on a pooled connection the server had just dropped
    (its goodbye still on the way at checkout, `_check_before_use`), runs once more: SQLAlchemy has let
    the pool's connections go by then, so it gets a new one. Only then: nothing is pending, queued
    (session.info) or read yet, so there is nothing for the failed transaction to have lost."""
    session = state.session
    if not state.is_select or session.in_transaction() or any(session.info.values()) or session.new or session.dirty \
            or session.deleted:
        return None
    try:
        return state.invoke_statement()
    except sa.exc.DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        session.rollback()
        return state.invoke_statement()


def reads_only(engine: sa.Engine) -> dict:
    """Execution options of a connection that only reads. SQLite: a plain BEGIN on a WAL snapshot, which
    never waits for the write lock (app/__init__.py). PostgreSQL: autocommit, where each statement reads
    the latest commit as it would in a READ COMMITTED transaction, without a BEGIN and a ROLLBACK round
    trip around it."""
    return _AUTOCOMMIT if engine.dialect.name == "postgresql" else _READ_ONLY


_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}
_READ_ONLY = {"read_only": True}


_READS_NEXT = "reads_only_next"  # session.info: `begin_reads` was called and nothing has been executed since


def begin_reads() -> None:
    """The session's next statements only read (`reads_only`), unless it is in a transaction already,
    which they then join: on PostgreSQL no BEGIN and, above all, no ROLLBACK at the end, at which
    psycopg forgets its prepared statements. The connection is taken when the first of them runs: a
    stream's batch that renders from memory (most of a reply's words) takes none."""
    session = db.session()
    if not session.in_transaction():
        session.info[_READS_NEXT] = True


@sa.event.listens_for(sa.orm.Session, "after_transaction_create")
def _reads_began_otherwise(session, transaction) -> None:
    """A transaction begun by other means (a write, `Session.connection`, a commit) is not the reads'."""
    session.info.pop(_READS_NEXT, None)


def end_reads() -> None:
    """Commit a transaction that only read, keeping what it read loaded, so that no pooled connection
    (and on SQLite no write lock) is held through what comes next: a slow password hash, or a rate
    limit's counting, which may switch greenlets."""
    session = db.session()
    if session.in_transaction() and not (session.new or session.dirty or session.deleted):
        session.expire_on_commit = False
        try:
            session.commit()
        finally:
            session.expire_on_commit = True


@contextmanager
def patient_checkouts():
    token = _patient.set(True)
    try:
        yield
    finally:
        _patient.reset(token)
