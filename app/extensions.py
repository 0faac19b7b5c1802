"""Flask extensions, created unbound here and bound in `create_app` (so tests can build many apps).

Flask-Migrate is not here: it (and Alembic) is only needed by the `flask db` commands, so `create_app`
imports it itself, and a web worker never does."""
import contextvars
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


@contextmanager
def patient_checkouts():
    token = _patient.set(True)
    try:
        yield
    finally:
        _patient.reset(token)
