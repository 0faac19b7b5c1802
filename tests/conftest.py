"""Fixtures built on the app factory: real databases (SQLite and PostgreSQL), the fake OpenAI server,
and helpers that drive the app the way the UI, a worker or a test client would."""
from __future__ import annotations

import os
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade
from werkzeug.security import generate_password_hash

from app import create_app
from app.agent import commands
from app.extensions import db
from app.models import Account, ChatSession, Role, Run, ToolCall
from app.workspace import count_rows
from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent


# --- Suites that must not be skipped quietly ------------------------------------------------------

def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """With REQUIRE_POSTGRES / REQUIRE_BROWSER set (scripts/test sets both), a skipped test fails the run."""
    if os.environ.get("REQUIRE_POSTGRES") or os.environ.get("REQUIRE_BROWSER"):
        skipped = terminalreporter.stats.get("skipped", [])
        if skipped:
            terminalreporter.write_line(f"{len(skipped)} tests were skipped, but this run requires every suite.",
                                        red=True)
            config._required_suites_skipped = True


def pytest_sessionfinish(session, exitstatus):
    if getattr(session.config, "_required_suites_skipped", False) and exitstatus == 0:
        session.exitstatus = 1


# --- Databases ----------------------------------------------------------------------------------

@dataclass
class Databases:
    backend: str
    app_url: str
    workspace_url: str


@pytest.fixture(scope="session")
def postgres_admin_url():
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail("REQUIRE_POSTGRES is set but TEST_POSTGRES_URL is not: the PostgreSQL suite must run.")
        pytest.skip("TEST_POSTGRES_URL is not set (scripts/test starts a PostgreSQL server and sets it)")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request, tmp_path):
    """A fresh app database and workspace database for each test, on each backend."""
    if request.param == "sqlite":
        yield Databases("sqlite", f"sqlite:///{tmp_path / 'app.db'}", f"sqlite:///{tmp_path / 'workspace.db'}")
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    names = [f"test_app_{secrets.token_hex(5)}", f"test_ws_{secrets.token_hex(5)}"]
    with admin.connect() as conn:
        for name in names:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    base = sa.make_url(admin_url)
    urls = [base.set(database=name).render_as_string(hide_password=False) for name in names]
    yield Databases("postgresql", *urls)
    with admin.connect() as conn:
        for name in names:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


# --- The model ----------------------------------------------------------------------------------

@pytest.fixture
def fake_model():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(params=["responses"])
def openai_api(request):
    """Which OpenAI API the app speaks; tests that care parametrize it indirectly."""
    return request.param


# --- The app ------------------------------------------------------------------------------------

@pytest.fixture
def app_config(databases, fake_model, openai_api):
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "SQLALCHEMY_DATABASE_URI": databases.app_url,
        "SQLALCHEMY_BINDS": {"workspace": databases.workspace_url},
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": fake_model.base_url,
        "OPENAI_API": openai_api,
        "OPENAI_MODEL": "fake-model",
        "OPENAI_TIMEOUT": 10.0,
        "RUN_SWEEP_SECONDS": None,
    }


@pytest.fixture
def app(app_config):
    app = create_app(app_config)
    with app.app_context():
        upgrade()
    yield app
    stop_app(app)


def stop_app(app) -> None:
    """Stop what an app started (listener, executor) and close its connections."""
    app.extensions["run_events"].stop()
    app.extensions["run_executor"].shutdown()
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


@contextmanager
def on_each_statement(app, callback, when: str = "before"):
    """`callback(conn, cursor, statement, parameters, context, executemany)` before (or "after") each
    statement the app database is sent; before, it may raise to fail the statement."""
    with app.app_context():
        engine = db.engine
    event = f"{when}_cursor_execute"
    sa.event.listen(engine, event, callback)
    try:
        yield
    finally:
        sa.event.remove(engine, event, callback)


@contextmanager
def reads_of(app, table: str):
    """The statements that read `table`, as they are sent."""
    seen = []

    def count(conn, cursor, statement, *args):
        if table in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    with on_each_statement(app, count):
        yield seen


def sign_in_reads(app):
    """The statements that read a login session, as they are sent."""
    return reads_of(app, "login_sessions")


def until_the_sign_in_is_remembered(app, browser, path: str = "/account") -> None:
    """GET `path` until a request finds the browser's sign-in remembered (PostgreSQL, app.sign_ins):
    the notifications of the account's own creation and sign-in arrive a moment later, and forget it."""
    with sign_in_reads(app) as reads:
        wait_for(lambda: reads.clear() or browser.get(path).status_code == 200 and not reads,
                 message="a request that finds the sign-in remembered")


def wait_for_a_lock_waiter(conn, message: str) -> None:
    """Until a backend of `conn`'s database waits for a lock (PostgreSQL). `conn` may hold that lock in
    its open transaction, whose reads of pg_stat_activity are one snapshot unless it is cleared."""
    def waiting() -> bool:
        conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        return conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                    "AND datname = current_database()")).scalar() > 0

    wait_for(waiting, message=message)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)


class Harness:
    """Drives the core the way a view or worker does, and reads back what a person would see."""

    def __init__(self, app):
        self.app = app

    def account(self) -> int:
        with self.app.app_context():
            account = Account()
            db.session.add(account)
            db.session.commit()
            return account.id

    def chat(self, owner_id: int | None = None, agent_id: str = "data_manager") -> tuple[int, str]:
        owner_id = owner_id or self.account()
        with self.app.app_context():
            chat = ChatSession(owner_id=owner_id, agent_id=agent_id)
            db.session.add(chat)
            db.session.commit()
            return owner_id, chat.id

    def stored_run(self, status: str) -> str:
        """A run row in `status` in a new chat, with nothing executing it (for the event log's tests)."""
        owner_id, chat_id = self.chat()
        with self.app.app_context():
            run = Run(session_id=chat_id, owner_id=owner_id, agent_id="data_manager", status=status)
            db.session.add(run)
            db.session.commit()
            return run.id

    def send(self, chat_id: str, text: str) -> str:
        with self.app.app_context():
            return commands.start_run(db.session.get(ChatSession, chat_id), text).run_id

    def wait(self, run_id: str, *statuses: str, timeout: float = 10.0) -> Run:
        statuses = statuses or ("paused", "completed", "failed", "cancelled")
        return wait_for(lambda: (r := self.run(run_id)).status in statuses and r,
                        timeout, message=f"run {run_id} to become {'/'.join(statuses)}")

    def run(self, run_id: str) -> Run:
        with self.app.app_context():
            run = db.session.get(Run, run_id)
            db.session.expunge(run)
            return run

    def latest_run(self, chat_id: str) -> str | None:
        """The chat's newest run (a page shows its stream only while it works: a fast run is over by then)."""
        with self.app.app_context():
            return db.session.scalar(sa.select(Run.id).where(Run.session_id == chat_id)
                                     .order_by(Run.created_at.desc(), Run.id.desc()).limit(1))

    def calls(self, run_id: str) -> list[ToolCall]:
        with self.app.app_context():
            calls = list(db.session.scalars(sa.select(ToolCall).where(ToolCall.run_id == run_id)
                                            .order_by(ToolCall.created_at, ToolCall.position)))
            db.session.expunge_all()
            return calls

    def decide(self, owner_id: int, run_id: str, call_id: str, approve: bool, reason: str | None = None):
        with self.app.app_context():
            return commands.decide(owner_id, run_id, call_id, approve, reason).call.status  # as stored now

    def messages(self, chat_id: str) -> list[tuple[str, str]]:
        from app.models import Message
        with self.app.app_context():
            return [(m.role, m.content) for m in db.session.scalars(
                sa.select(Message).where(Message.session_id == chat_id).order_by(Message.id))]

    def rows(self, table: str) -> int:
        with self.app.app_context():
            return count_rows(db.engines["workspace"], table)


@pytest.fixture
def harness(app):
    return Harness(app)


TEST_PASSWORD = "correct horse battery staple"
# Accounts made by fixtures share one hash of cheap parameters: signing in still checks it for real,
# without scrypt's full cost (~0.3 s) for each of hundreds of test accounts.
CHEAP_PASSWORD_HASH = generate_password_hash(TEST_PASSWORD, method="scrypt:1024:8:1")


def make_account(app, email: str | None = None, role: str = Role.MEMBER) -> tuple[int, str]:
    """A person who can sign in with TEST_PASSWORD; returns (account id, email)."""
    email = email or f"person-{secrets.token_hex(4)}@example.test"
    with app.app_context():
        account = Account(email=email, password_hash=CHEAP_PASSWORD_HASH, role=role)
        db.session.add(account)
        db.session.commit()
        return account.id, email


class Browser:
    """A test client that behaves like the page: a signed-in person (a new member account unless told
    otherwise) who keeps cookies and sends the CSRF token like htmx does."""

    def __init__(self, app, role: str = Role.MEMBER, sign_in: bool = True):
        self.client = app.test_client()
        self.csrf = None
        self.account_id = self.email = None
        if sign_in:
            self.account_id, self.email = make_account(app, role=role)
            self.sign_in(self.email)

    def sign_in(self, email: str, password: str = TEST_PASSWORD, remember: bool = False):
        """Through the sign-in form, as a person would."""
        self.get("/login")
        response = self.client.post("/login", data={"email": email, "password": password, "csrf_token": self.csrf,
                                                    **({"remember": "on"} if remember else {})})
        self.csrf = None  # signing in starts a new session, with a new CSRF token
        if response.status_code == 303:
            self.email = email
        return response

    def get(self, url, **kwargs):
        response = self.client.get(url, **kwargs)
        if match := re.search(rb'name="csrf_token" value="([^"]+)"', response.data):
            self.csrf = match.group(1).decode()
        return response

    def post(self, url, data=None, htmx=True, **kwargs):
        if self.csrf is None:
            self.get("/account" if self.email else "/login")
        headers = {"X-CSRFToken": self.csrf, **({"HX-Request": "true"} if htmx else {})}
        headers.update(kwargs.pop("headers", {}))
        return self.client.post(url, data=data or {}, headers=headers, **kwargs)

    def new_chat(self) -> str:
        response = self.post("/chats", htmx=False)
        assert response.status_code == 303
        return response.headers["Location"].rsplit("/", 1)[-1]

    def events(self, run_id: str, after: int = 0, last_event_id: int | None = None) -> list[dict]:
        """Read the run's event stream to its end (it ends when the run pauses or finishes)."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        response = self.client.get(f"/runs/{run_id}/events?after={after}", headers=headers)
        assert response.mimetype == "text/event-stream"
        return parse_sse(response.get_data(as_text=True))


def parse_sse(text: str) -> list[dict]:
    found = []
    for block in text.split("\n\n"):
        event = {"event": "message", "id": None, "data": []}
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                event["data"].append(value)
            elif field in ("event", "id"):
                event[field] = value
        if event["data"] or event["event"] != "message":
            event["data"] = "\n".join(event["data"])
            found.append(event)
    return found


@pytest.fixture
def browser(app):
    return Browser(app)


# --- Real servers ---------------------------------------------------------------------------------

@pytest.fixture
def server_env(databases, fake_model, openai_api):
    """The environment a self-hoster would set, pointed at this test's databases and fake model."""
    return {
        "DATABASE_URL": databases.app_url,
        "WORKSPACE_DATABASE_URL": databases.workspace_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": fake_model.base_url,
        "OPENAI_API": openai_api,
        "OPENAI_MODEL": "fake-model",
        "SECRET_KEY": "test-secret",
        "SIGNUP": "open",  # each tests.live.Client signs up as a person of its own
    }


@pytest.fixture
def live_server(app, server_env, tmp_path):
    """gunicorn (production config) on a free loopback port; `app` has already migrated its database."""
    from tests.live import LiveServer
    server = LiveServer(server_env, log_path=tmp_path / "gunicorn.log").start()
    yield server
    server.stop()
