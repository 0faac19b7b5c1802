"""The workspace and the Data Manager's tools, against a real database.

SQLite always; PostgreSQL too when TEST_POSTGRES_URL (postgresql+psycopg://...) is set, each test in a
fresh schema that is dropped afterwards.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.agent.tools import ToolArgumentError, ToolContext, ToolError
from app.agent.definition import Agent
from app.agent.registry import load_agents
from app.agent.tools import DefinitionError
from app.agents import builtin_agents
from app.agents.data_manager import DATA_MANAGER, count_records, delete_records, list_tables, send_notification
from app.workspace import (
    DATA_TABLES,
    WorkspaceMismatch,
    count_rows,
    ensure_workspace,
    outbox,
    recent_outbox,
    users,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PG_URL = os.environ.get("TEST_POSTGRES_URL")


@dataclass
class Database:
    engine: sa.Engine
    url: str
    schema: str | None  # PostgreSQL: the throwaway schema (first on the search_path)

    def make_engine(self) -> sa.Engine:
        if self.schema is None:
            return sa.create_engine(self.url)
        return sa.create_engine(self.url, connect_args={"options": f"-csearch_path={self.schema}"})


@pytest.fixture(params=[
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(not PG_URL, reason="TEST_POSTGRES_URL not set")),
])
def db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'workspace.db'}"
        database = Database(sa.create_engine(url), url, None)
        yield database
        database.engine.dispose()
        return
    schema = f"ws_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    database = Database(None, PG_URL, schema)  # type: ignore[arg-type]
    database.engine = database.make_engine()
    try:
        yield database
    finally:
        database.engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(db):
    return db.engine


@pytest.fixture
def seeded(engine):
    ensure_workspace(engine, now=NOW)
    return engine


@pytest.fixture
def ctx(seeded):
    return ToolContext(workspace=seeded, owner_id=7, run_id="run-abc")


def counts(engine) -> dict[str, int]:
    return {name: count_rows(engine, name) for name in (*DATA_TABLES, "outbox")}


def add_users(engine, stamps: list[datetime]) -> list[int]:
    """Insert one user per timestamp, in the given order; return their ids."""
    with engine.begin() as conn:
        for i, stamp in enumerate(stamps):
            conn.execute(users.insert().values(name=f"User {i}", email=f"u{i}@example.com", created_at=stamp))
        return list(conn.execute(sa.select(users.c.id).order_by(users.c.id)).scalars())


# -- seeding ------------------------------------------------------------------------------------------------

def test_seed_fills_the_tables_quickly(engine):
    started = time.perf_counter()
    assert ensure_workspace(engine, now=NOW) is True
    elapsed = time.perf_counter() - started
    assert counts(engine) == {"users": 1200, "orders": 3000, "events": 5000, "outbox": 0}
    assert elapsed < 5, elapsed  # typically ~0.15 s on SQLite

    with engine.connect() as conn:
        emails = conn.execute(sa.select(users.c.email)).scalars().all()
        first, last = conn.execute(sa.select(sa.func.min(users.c.created_at), sa.func.max(users.c.created_at))).one()
        statuses = set(conn.execute(sa.text("SELECT DISTINCT status FROM orders")).scalars())
    assert len(set(emails)) == 1200 and all("@example." in e for e in emails)
    first, last = (d.replace(tzinfo=UTC) if d.tzinfo is None else d for d in (first, last))
    assert NOW - timedelta(days=731) <= first < last <= NOW
    assert last - first > timedelta(days=600)  # spread over the two years
    assert {"delivered", "pending"} <= statuses


def test_seed_is_idempotent(engine):
    assert ensure_workspace(engine, now=NOW) is True
    assert ensure_workspace(engine, now=NOW) is False
    assert ensure_workspace(engine) is False
    assert counts(engine) == {"users": 1200, "orders": 3000, "events": 5000, "outbox": 0}


def test_seed_is_deterministic(engine, tmp_path):
    other = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    ensure_workspace(engine, now=NOW)
    ensure_workspace(other, now=NOW)
    query = sa.select(users.c.name, users.c.email).order_by(users.c.id).limit(50)
    with engine.connect() as a, other.connect() as b:
        assert a.execute(query).all() == b.execute(query).all()
    other.dispose()


def test_no_seed_when_asked_not_to(engine):
    assert ensure_workspace(engine, seed=False) is False
    assert counts(engine) == {"users": 0, "orders": 0, "events": 0, "outbox": 0}


def test_no_second_seed_after_all_users_are_deleted(seeded):
    with seeded.begin() as conn:
        conn.execute(sa.delete(users))
    assert ensure_workspace(seeded, now=NOW) is False
    assert counts(seeded)["orders"] == 3000


def test_concurrent_ensure_workspace_seeds_once(db):
    script = (
        "import sys, sqlalchemy as sa\n"
        "from app.workspace import ensure_workspace\n"
        "url, schema = sys.argv[1], sys.argv[2]\n"
        "args = {'connect_args': {'options': f'-csearch_path={schema}'}} if schema else {}\n"
        "ensure_workspace(sa.create_engine(url, **args))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, db.url, db.schema or ""], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)
             for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    assert counts(db.engine) == {"users": 1200, "orders": 3000, "events": 5000, "outbox": 0}


def test_refuses_a_database_with_other_tables_of_the_same_name(engine):
    foreign = sa.MetaData()
    sa.Table("users", foreign, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("email", sa.String(255)), sa.Column("password_hash", sa.String(255)))
    foreign.create_all(engine)
    with pytest.raises(WorkspaceMismatch, match="users"):
        ensure_workspace(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar_one() == 0


# -- delete_records -------------------------------------------------------------------------------------

def test_delete_removes_exactly_the_oldest(engine):
    ensure_workspace(engine, seed=False)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    # Insertion order differs from age; two rows share a timestamp (then the lower id goes first).
    offsets = [5, 1, 3, 1, 9, 0, 7]
    ids = add_users(engine, [base + timedelta(days=d) for d in offsets])
    by_age = [i for _, i in sorted(zip(offsets, ids, strict=True))]  # (offset, id): ties broken by id

    ctx = ToolContext(workspace=engine)
    assert delete_records.run(ctx, {"table_name": "users", "count": 3}) == "Deleted 3 records from users. 4 remain."
    with engine.connect() as conn:
        left = set(conn.execute(sa.select(users.c.id)).scalars())
    assert left == set(by_age[3:])


def test_delete_on_seeded_data_reports_what_remains(ctx):
    assert delete_records.run(ctx, {"table_name": "users", "count": 50}) == "Deleted 50 records from users. 1,150 remain."
    assert delete_records.run(ctx, {"table_name": "orders", "count": 1}) == "Deleted 1 record from orders. 2,999 remain."
    assert counts(ctx.workspace) == {"users": 1150, "orders": 2999, "events": 5000, "outbox": 0}


def test_delete_zero_deletes_nothing(ctx):
    result = delete_records.run(ctx, {"table_name": "events", "count": 0})
    assert result == "No records deleted (count was 0). events has 5,000 records."
    assert count_rows(ctx.workspace, "events") == 5000


def test_delete_more_than_exist_deletes_what_exists(engine):
    ensure_workspace(engine, seed=False)
    add_users(engine, [NOW - timedelta(days=d) for d in range(4)])
    ctx = ToolContext(workspace=engine)
    result = delete_records.run(ctx, {"table_name": "users", "count": 10})
    assert result == "Deleted 4 records from users (10 requested, but only 4 existed). 0 remain."
    assert count_rows(engine, "users") == 0


@pytest.mark.parametrize("table_name", [
    "customers",
    "users; DROP TABLE users; --",
    "users WHERE 1=1",
    "users --",
    '"users"',
    "main.users",
    "'users' OR '1'='1'",
    "",
])
def test_unknown_and_injection_like_table_names_are_refused(ctx, table_name):
    """Refused by the arguments' schema, i.e. before a confirmation card could be shown."""
    before = counts(ctx.workspace)
    with pytest.raises(ToolArgumentError) as info:
        delete_records.validate({"table_name": table_name, "count": 5})
    assert "table_name: input should be 'users', 'orders' or 'events'" in str(info.value)
    with pytest.raises(ToolArgumentError):
        delete_records.run(ctx, {"table_name": table_name, "count": 5})
    assert counts(ctx.workspace) == before


def test_workspace_and_app_tables_are_refused(ctx):
    app_meta = sa.MetaData()
    accounts = sa.Table("accounts", app_meta, sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("created_at", sa.DateTime(timezone=True)))
    app_meta.create_all(ctx.workspace)
    with ctx.workspace.begin() as conn:
        conn.execute(accounts.insert(), [{"created_at": NOW}, {"created_at": NOW}])
        conn.execute(outbox.insert().values(recipient="a@example.com", message="hi"))

    for name in ("outbox", "accounts"):
        with pytest.raises(ToolArgumentError, match="input should be 'users', 'orders' or 'events'"):
            delete_records.run(ctx, {"table_name": name, "count": 1})
    with ctx.workspace.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one() == 2
    assert count_rows(ctx.workspace, "outbox") == 1


@pytest.mark.parametrize(("count", "message"), [
    (-1, "count: input should be greater than or equal to 0"),
    (-5000, "count: input should be greater than or equal to 0"),
    (10_001, "count: input should be less than or equal to 10000"),
    (10**12, "count: input should be less than or equal to 10000"),
])
def test_out_of_range_counts_are_refused_by_the_schema(ctx, count, message):
    with pytest.raises(ToolArgumentError, match=message):
        delete_records.run(ctx, {"table_name": "users", "count": count})
    schema = delete_records.parameters["properties"]["count"]
    assert (schema["minimum"], schema["maximum"]) == (0, 10_000), "the model is told the range too"
    assert count_rows(ctx.workspace, "users") == 1200


def test_table_name_case_and_spaces_are_forgiven(ctx):
    assert delete_records.run(ctx, {"table_name": " Users ", "count": 2}) == "Deleted 2 records from users. 1,198 remain."


@pytest.mark.parametrize("arguments", [
    {"table_name": "users", "count": "5"},
    {"table_name": "users", "count": True},
    {"table_name": "users"},
    {"table_name": "users", "count": 5, "where": "1=1"},
])
def test_bad_arguments_are_argument_errors_and_delete_nothing(ctx, arguments):
    with pytest.raises(ToolArgumentError):
        delete_records.run(ctx, arguments)
    assert count_rows(ctx.workspace, "users") == 1200


def test_delete_preview(ctx):
    def preview(arguments):
        return delete_records.preview(ctx, delete_records.validate(arguments))

    fifty = preview({"table_name": "users", "count": 50}).splitlines()
    assert fifty[0] == "Deletes the 50 oldest of 1,200 rows in users."
    assert fifty[1].startswith("First to go: id=") and fifty[1].endswith("… and 47 more.")
    assert fifty[1].count("; ") == 2, "the first three rows, not fifty"
    assert preview({"table_name": "orders", "count": 1}).splitlines()[0] == "Deletes the oldest of 3,000 rows in orders."
    assert preview({"table_name": "users", "count": 5000}) == "Deletes all 1,200 rows in users."
    assert delete_records.preview(ctx, {"table_name": "nope", "count": 5}) is None
    assert count_rows(ctx.workspace, "users") == 1200  # a preview changes nothing


# -- send_notification -----------------------------------------------------------------------------------

def test_send_notification_writes_the_outbox(ctx):
    result = send_notification.run(ctx, {"recipient": " alice@example.com ", "message": "Your export is ready."})
    assert result == "Notification sent to alice@example.com."
    with ctx.workspace.connect() as conn:
        row = conn.execute(sa.select(outbox)).mappings().one()
    assert (row["owner_id"], row["run_id"], row["recipient"], row["message"]) == (
        7, "run-abc", "alice@example.com", "Your export is ready.")


def test_recent_outbox_is_per_owner_and_newest_first(ctx):
    other = ToolContext(workspace=ctx.workspace, owner_id=8)
    send_notification.run(ctx, {"recipient": "a@example.com", "message": "first"})
    send_notification.run(other, {"recipient": "b@example.com", "message": "not yours"})
    send_notification.run(ctx, {"recipient": "c@example.com", "message": "second"})
    mine = recent_outbox(ctx.workspace, 7)
    assert [m["message"] for m in mine] == ["second", "first"]
    assert all(m["owner_id"] == 7 and m["created_at"].tzinfo is not None for m in mine)
    assert [m["message"] for m in recent_outbox(ctx.workspace, 7, limit=1)] == ["second"]
    assert recent_outbox(ctx.workspace, None) == []


@pytest.mark.parametrize(("arguments", "message"), [
    ({"recipient": "", "message": "hi"}, "recipient: string should have at least 1 character"),
    ({"recipient": "   ", "message": "hi"}, "recipient must not be empty"),
    ({"recipient": "a@example.com", "message": ""}, "message: string should have at least 1 character"),
    ({"recipient": "a@example.com", "message": " \n "}, "message must not be empty"),
    ({"recipient": "a@example.com", "message": "x" * 2001}, "message: string should have at most 2000 characters"),
])
def test_send_notification_refusals_write_nothing(ctx, arguments, message):
    with pytest.raises((ToolError, ToolArgumentError), match=message):
        send_notification.run(ctx, arguments)
    assert count_rows(ctx.workspace, "outbox") == 0


def test_send_notification_accepts_the_maximum_length(ctx):
    send_notification.run(ctx, {"recipient": "a@example.com", "message": "x" * 2000})
    assert count_rows(ctx.workspace, "outbox") == 1


def test_send_preview(ctx):
    assert send_notification.preview(ctx, {"recipient": "alice@example.com", "message": "hi <b>\nthere"}) == \
        "Sends a message to alice@example.com:\nhi <b>\nthere"  # the message as it will be sent


# -- read-only tools and the agent ----------------------------------------------------------------------

def test_list_and_count(ctx):
    assert list_tables.run(ctx, {}) == "users: 1,200 rows\norders: 3,000 rows\nevents: 5,000 rows"
    assert count_records.run(ctx, {"table_name": "orders"}) == "orders has 3,000 records."
    with pytest.raises(ToolArgumentError, match="input should be 'users', 'orders' or 'events'"):
        count_records.run(ctx, {"table_name": "payments"})


def test_data_manager_agent():
    agent = load_agents([], builtin_agents()).get("data_manager")
    assert agent is DATA_MANAGER
    assert agent.name == "Data Manager"
    assert agent.instructions == "You help users manage data operations"
    assert [t.name for t in agent.tools] == ["list_tables", "count_records", "delete_records", "send_notification"]
    confirm = {t.name: t.requires_confirmation for t in agent.tools}
    assert confirm == {"list_tables": False, "count_records": False, "delete_records": True,
                       "send_notification": True}
    assert agent.tool("delete_records") is delete_records
    assert agent.tool("drop_database") is None
    assert load_agents([], builtin_agents()).get("nobody") is None
    for t in agent.tools:
        spec = t.openai_function()
        assert spec["description"] and "ctx" not in spec["parameters"]["properties"]
        for prop in spec["parameters"]["properties"].values():
            assert prop.get("description"), (t.name, prop)


def test_agent_rejects_duplicate_tool_names():
    with pytest.raises(DefinitionError, match="more than one tool named delete_records"):
        Agent(id="x", name="X", instructions="", tools=(delete_records, delete_records))
