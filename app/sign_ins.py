"""Who a request's credentials name, remembered between requests: a browser's login session (its
cookie's token), a personal API token, and the account an API `user_id` names (with the service key).
Reading it is a statement on every page, fragment, stream and API call; remembering it is only safe if
every process forgets it as soon as it changes anywhere: a disabled account, a signed-out browser, a
revoked token or a new role must take effect at once.

So it is remembered only on PostgreSQL, and only while this process LISTENs: triggers on `accounts`,
`login_sessions` (migration 0009) and `api_tokens` (0010) NOTIFY `sign_ins_changed` with every change
(of a token: its revocation or deletion), and a process forgets everything it remembers when that
arrives, when its listener (re)connects (a change may have been announced meanwhile), and when one of
its own sessions commits such a change (so its next request does not wait for the notification). A
value read before a change and offered after it is not kept (`generation`). Entries also expire after
ENTRY_SECONDS, a backstop for a change no trigger sees (say, rows restored with triggers disabled).
SQLite reads every time: its processes cannot tell each other.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime
from itertools import chain

import sqlalchemy as sa
from flask import current_app, has_app_context

from app.extensions import db
from app.models import Account, LoginSession, utcnow

CHANNEL = "sign_ins_changed"
ENTRY_SECONDS = 30.0
MAX_ENTRIES = 20_000       # a process remembering more forgets all at once (no bookkeeping per entry)
TABLES = frozenset({Account.__tablename__, LoginSession.__tablename__})


class SignIns:
    """This process's remembered sign-ins (one per app: `app.extensions["sign_ins"]`)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[tuple, tuple[float, object]] = {}  # key -> (monotonic deadline, value)
        self._generation = 0
        self._listening: threading.Event | None = None  # set while the listener hears CHANNEL

    def listen_with(self, listening: threading.Event) -> None:
        self._listening = listening

    def _on(self) -> bool:
        return self._listening is not None and self._listening.is_set()

    def get(self, key: tuple):
        """The value remembered for `key`, or None."""
        if not self._on():
            return None
        entry = self._entries.get(key)
        if entry is None or time.monotonic() >= entry[0]:
            return None
        return entry[1]

    def generation(self) -> int | None:
        """Taken before the read whose result `put` may keep; None while nothing may be kept."""
        return self._generation if self._on() else None

    def put(self, key: tuple, generation: int | None, value, expires_at: datetime | None = None) -> None:
        """Keep `value`, read after `generation()` said `generation`, unless anything changed since."""
        lifetime = ENTRY_SECONDS
        if expires_at is not None:
            lifetime = min(lifetime, (expires_at - utcnow()).total_seconds())
        with self._lock:
            if generation is None or generation != self._generation or lifetime <= 0:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + lifetime, value)

    def forget_all(self, _payload: str = "") -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()


def sign_ins() -> SignIns:
    return current_app.extensions["sign_ins"]


def forget_sign_ins_at_commit() -> None:
    """This session changed what a remembered credential depends on, in a table whose writes are not
    all such changes (`api_tokens`: a revocation, not a last use): this process forgets at its commit."""
    db.session.info["sign_ins_changed"] = True


def init_app(app) -> SignIns:
    """The app's remembered sign-ins; `events.init_app` hands CHANNEL and the listener's state to it."""
    app.extensions["sign_ins"] = SignIns()
    return app.extensions["sign_ins"]


# A session that changed accounts or login sessions makes its process forget at its commit (after it:
# a read between the two would otherwise be kept with the old values).

@sa.event.listens_for(sa.orm.Session, "after_flush")
def _flushed(session, _flush_context) -> None:
    if any(getattr(row, "__tablename__", None) in TABLES for row in chain(session.new, session.dirty, session.deleted)):
        session.info["sign_ins_changed"] = True


@sa.event.listens_for(sa.orm.Session, "do_orm_execute")
def _executed(state) -> None:
    if (state.is_insert or state.is_update or state.is_delete) and \
            getattr(state.statement.table, "name", None) in TABLES:
        state.session.info["sign_ins_changed"] = True


@sa.event.listens_for(sa.orm.Session, "after_commit")
def _committed(session) -> None:
    if session.info.pop("sign_ins_changed", False) and has_app_context():
        sign_ins_of_app = current_app.extensions.get("sign_ins")
        if sign_ins_of_app is not None:
            sign_ins_of_app.forget_all()


@sa.event.listens_for(sa.orm.Session, "after_rollback")
def _rolled_back(session) -> None:
    session.info.pop("sign_ins_changed", None)
