"""Flask extensions, created unbound here and bound in `create_app` (so tests can build many apps).

Flask-Migrate is not here: it (and Alembic) is only needed by the `flask db` commands, so `create_app`
imports it itself, and a web worker never does."""
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
# "Busy or away right now", not "wrong": a pool with no free connection, a lost or refused
# connection. Background work waits these out; a request answers 503.
TRANSIENT_DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
csrf = CSRFProtect()
login_manager = LoginManager()
htmx = Htmx()
