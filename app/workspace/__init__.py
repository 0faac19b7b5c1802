"""The sandbox workspace: sample data that the demo tools act on.

It lives in its own database (given here as a SQLAlchemy Engine), on its own `MetaData`, and is
never part of the app's schema or migrations. Works on SQLite and PostgreSQL (psycopg 3).
"""
from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

__all__ = [
    "DATA_TABLES", "MAX_DELETE", "TABLES", "WorkspaceMismatch", "count_rows", "ensure_workspace", "events",
    "metadata", "orders", "outbox", "recent_outbox", "users",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


metadata = sa.MetaData(naming_convention={
    "ix": "ix_ws_%(column_0_label)s",
    "uq": "uq_ws_%(table_name)s_%(column_0_name)s",
    "pk": "pk_ws_%(table_name)s",
})

users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("email", sa.String(255), nullable=False, unique=True),  # unique: also what stops a double seed
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=_utcnow, index=True),
)

# user_id is deliberately not a foreign key: deleting old users must not fail (PostgreSQL) nor
# silently cascade into orders; this is sample data, not a model of integrity.
orders = sa.Table(
    "orders", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, nullable=False, index=True),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=_utcnow, index=True),
)

events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False, default=dict),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=_utcnow, index=True),
)

# Notifications "sent" by the send_notification tool.
outbox = sa.Table(
    "outbox", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("owner_id", sa.Integer, nullable=True, index=True),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("recipient", sa.String(255), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=_utcnow),
)

#: Tables the tools may read and delete from, in display order.
DATA_TABLES: tuple[str, ...] = ("users", "orders", "events")
#: Every workspace table by name.
TABLES: dict[str, sa.Table] = {t.name: t for t in (users, orders, events, outbox)}
#: The most rows one delete may remove.
MAX_DELETE = 10_000

SEED_USERS, SEED_ORDERS, SEED_EVENTS = 1200, 3000, 5000
SEED_SPAN = timedelta(days=730)


class WorkspaceMismatch(RuntimeError):
    """A table with a workspace table's name exists but has other columns (wrong database?)."""


# -- set-up -----------------------------------------------------------------------------------------------

def ensure_workspace(engine: sa.Engine, seed: bool = True, *, now: datetime | None = None) -> bool:
    """Create the workspace tables if missing and, if `seed` and there is no data yet, add sample data.

    Sample data goes in only when users, orders and events are all empty, so a workspace whose
    users were all deleted is not topped up with a second set of orders. Idempotent, and safe when
    several processes call it at once (the loser of a race sees the winner's tables and rows).
    `now` anchors the seeded timestamps (default: the current time). Returns True if this call seeded.

    Raises WorkspaceMismatch if a table of the same name exists with different columns, which means
    the engine points at some other database (e.g. the app's own): the tools would delete real rows.
    """
    attempts = 6
    for attempt in range(attempts):
        try:
            metadata.create_all(engine, checkfirst=True)
            _check_columns(engine)
            if not seed:
                return False
            return _seed_if_empty(engine, now or _utcnow())
        except sa_exc.IntegrityError:
            # Another process seeded (unique email) or created a table type (PostgreSQL pg_type) first.
            if attempt == attempts - 1:
                raise
        except (sa_exc.OperationalError, sa_exc.ProgrammingError):
            # "table already exists" / DuplicateTable / "database is locked" while another process works.
            if attempt == attempts - 1:
                raise
        time.sleep(0.05 * (attempt + 1))
    return False  # pragma: no cover - the loop returns or raises


def _check_columns(engine: sa.Engine) -> None:
    inspector = sa.inspect(engine)
    for table in TABLES.values():
        found = {c["name"] for c in inspector.get_columns(table.name)}
        expected = {c.name for c in table.columns}
        if found != expected:
            raise WorkspaceMismatch(
                f"table {table.name!r} has columns {sorted(found)}, expected {sorted(expected)}: "
                "the workspace must be its own database, not the app's")


def _is_empty(conn: sa.Connection) -> bool:
    for name in DATA_TABLES:
        if conn.execute(sa.select(TABLES[name].c.id).limit(1)).first() is not None:
            return False
    return True


def _seed_if_empty(engine: sa.Engine, now: datetime) -> bool:
    with engine.begin() as conn:
        if not _is_empty(conn):
            return False
        rng = random.Random(42)
        user_rows = _user_rows(rng, now)
        conn.execute(users.insert(), user_rows)  # first: a concurrent seeder fails here on the unique email
        user_ids = conn.execute(sa.select(users.c.id).order_by(users.c.id)).scalars().all()
        joined = [(uid, row["created_at"]) for uid, row in zip(user_ids, user_rows, strict=True)]
        conn.execute(orders.insert(), _order_rows(rng, now, joined))
        conn.execute(events.insert(), _event_rows(rng, now, joined))
    return True


# -- sample data ------------------------------------------------------------------------------------------

_FIRST_NAMES = (
    "Alice", "Amara", "Ana", "Andrew", "Aisha", "Ben", "Bianca", "Carlos", "Chen", "Chloe", "Daniel", "Diego",
    "Elena", "Emily", "Emma", "Ethan", "Farah", "Fatima", "Gabriel", "Grace", "Hana", "Hannah", "Hiroshi",
    "Ines", "Isaac", "Ivan", "Jack", "James", "Jin", "Julia", "Kai", "Karim", "Laura", "Leo", "Lucas",
    "Lucia", "Maya", "Mei", "Mia", "Mohammed", "Nadia", "Noah", "Nora", "Olivia", "Omar", "Pablo", "Priya",
    "Rafael", "Ravi", "Rosa", "Sam", "Sara", "Sofia", "Tariq", "Thomas", "Valentina", "Wei", "Yara",
    "Yusuf", "Zoe",
)
_LAST_NAMES = (
    "Adams", "Ahmed", "Alvarez", "Andersen", "Baker", "Bianchi", "Brown", "Chen", "Clark", "Costa", "Da Silva",
    "Davis", "Dubois", "Evans", "Fischer", "Garcia", "Gonzalez", "Gupta", "Hall", "Hansen", "Hernandez",
    "Ito", "Jackson", "Johnson", "Kim", "Kowalski", "Kumar", "Lee", "Lopez", "Martin", "Martinez", "Meyer",
    "Miller", "Moore", "Muller", "Nakamura", "Nguyen", "Novak", "O'Brien", "Okafor", "Patel", "Perez",
    "Petrov", "Rossi", "Sanchez", "Santos", "Schmidt", "Singh", "Smith", "Suzuki", "Tanaka", "Taylor",
    "Thompson", "Wang", "Weber", "White", "Williams", "Wilson", "Yilmaz", "Zhang",
)
_DOMAINS = ("example.com", "example.org", "example.net")  # reserved domains: nothing is ever really sent
_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled", "refunded")
_EVENT_KINDS = ("page_view", "login", "logout", "search", "signup", "purchase", "password_reset", "export")
_EVENT_WEIGHTS = (45, 18, 10, 12, 4, 6, 2, 3)
_PATHS = ("/", "/pricing", "/docs", "/account", "/orders", "/search", "/blog", "/support", "/cart")
_SEARCHES = ("invoice", "refund", "shipping", "api key", "export csv", "pricing", "password", "team plan")


def _stamp(now: datetime, seconds_ago: float) -> datetime:
    return (now - timedelta(seconds=int(seconds_ago))).replace(microsecond=0)


def _user_rows(rng: random.Random, now: datetime) -> list[dict[str, Any]]:
    span = SEED_SPAN.total_seconds()
    ages = sorted((rng.uniform(0, span) for _ in range(SEED_USERS)), reverse=True)  # oldest first
    taken: set[str] = set()
    rows = []
    for age in ages:
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        f, l_ = first.lower(), last.lower().replace(" ", "").replace("'", "")
        local = rng.choice((f"{f}.{l_}", f"{f[0]}{l_}", f"{f}{l_[0]}", f"{f}_{l_}", f"{l_}.{f}"))
        email = f"{local}@{rng.choice(_DOMAINS)}"
        while email in taken:
            email = f"{local}{rng.randint(2, 999)}@{rng.choice(_DOMAINS)}"
        taken.add(email)
        rows.append({"name": f"{first} {last}", "email": email, "created_at": _stamp(now, age)})
    return rows


def _order_rows(rng: random.Random, now: datetime, user_list: list[tuple[int, datetime]]) -> list[dict]:
    rows = []
    for _ in range(SEED_ORDERS):
        user_id, joined = rng.choice(user_list)
        age = rng.uniform(0, max((now - joined).total_seconds(), 1.0))
        if age < 14 * 86400:  # recent orders are mostly still on their way
            status = rng.choices(_STATUSES, (20, 25, 30, 20, 4, 1))[0]
        else:
            status = rng.choices(("delivered", "cancelled", "refunded"), (84, 10, 6))[0]
        amount = max(199, min(250_000, int(rng.lognormvariate(8.2, 0.9))))
        rows.append({"user_id": user_id, "amount_cents": amount, "status": status,
                     "created_at": _stamp(now, age)})
    rows.sort(key=lambda r: r["created_at"])
    return rows


def _event_rows(rng: random.Random, now: datetime, user_list: list[tuple[int, datetime]]) -> list[dict]:
    rows = []
    span = SEED_SPAN.total_seconds()
    for _ in range(SEED_EVENTS):
        kind = rng.choices(_EVENT_KINDS, _EVENT_WEIGHTS)[0]
        user_id, joined = rng.choice(user_list)
        age = rng.uniform(0, min(span, max((now - joined).total_seconds(), 1.0)))
        payload: dict[str, Any] = {"user_id": user_id}
        if kind == "page_view":
            payload["path"] = rng.choice(_PATHS)
        elif kind == "search":
            payload["query"] = rng.choice(_SEARCHES)
        elif kind == "purchase":
            payload["amount_cents"] = max(199, int(rng.lognormvariate(8.2, 0.9)))
        elif kind in ("login", "signup"):
            payload["ip"] = f"203.0.113.{rng.randint(1, 254)}"  # documentation range
        elif kind == "export":
            payload["format"] = rng.choice(("csv", "json", "xlsx"))
        rows.append({"kind": kind, "payload": payload, "created_at": _stamp(now, age)})
    rows.sort(key=lambda r: r["created_at"])
    return rows


# -- queries ----------------------------------------------------------------------------------------------

def _table(table: str | sa.Table) -> sa.Table:
    if isinstance(table, sa.Table):
        if TABLES.get(table.name) is not table:
            raise KeyError(f"not a workspace table: {table.name!r}")
        return table
    try:
        return TABLES[table]
    except (KeyError, TypeError):
        raise KeyError(f"unknown workspace table {table!r}; tables: {', '.join(TABLES)}") from None


def count_rows(engine: sa.Engine | sa.Connection, table: str | sa.Table) -> int:
    """Number of rows in a workspace table (by name or Table). KeyError for any other name."""
    t = _table(table)
    stmt = sa.select(sa.func.count()).select_from(t)
    if isinstance(engine, sa.Connection):
        return int(engine.execute(stmt).scalar_one())
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored here is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def recent_outbox(engine: sa.Engine, owner_id: int | None, limit: int = 20) -> list[dict]:
    """The newest notifications sent for `owner_id` (None: those sent without an owner), newest first."""
    where = outbox.c.owner_id.is_(None) if owner_id is None else outbox.c.owner_id == owner_id
    stmt = (sa.select(outbox).where(where)
            .order_by(outbox.c.created_at.desc(), outbox.c.id.desc()).limit(max(0, int(limit))))
    with engine.connect().execution_options(read_only=True) as conn:  # SQLite: no write lock to read
        rows = conn.execute(stmt).mappings().all()
        conn.commit()  # not a ROLLBACK, which makes psycopg forget its prepared statements
    return [{**row, "created_at": as_utc(row["created_at"])} for row in rows]
