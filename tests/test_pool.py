"""PostgreSQL's connection pools: sized from the configuration, and a pool that stays exhausted for
DATABASE_POOL_TIMEOUT is a 503 with Retry-After (never a 500), in-process and on a real gevent server."""
from __future__ import annotations

import os
import re
import threading
import time

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from app import create_app
from app.extensions import PatientQueuePool, _check_before_use, db
from app.models import Message, Run
from tests.api.apiclient import AUTH, KEY, Api
from tests.conftest import Browser, parse_sse, stop_app, until_the_sign_in_is_remembered, wait_for
from tests.fake_openai import Turn
from tests.live import Client, LiveServer

ONE_CONNECTION = {"DATABASE_POOL_SIZE": 1, "DATABASE_MAX_OVERFLOW": 0, "DATABASE_POOL_TIMEOUT": 1}


def test_postgres_engines_get_the_configured_pool_and_sqlite_keeps_its_own(app_config, databases):
    app = create_app({**app_config, "DATABASE_POOL_SIZE": 7, "DATABASE_MAX_OVERFLOW": 3, "DATABASE_POOL_TIMEOUT": 4})
    try:
        with app.app_context():
            for engine in (db.engine, db.engines["workspace"]):
                pool = engine.pool
                sized = (pool.size(), pool._max_overflow, pool.timeout())
                if databases.backend == "postgresql":
                    assert sized == (7, 3, 4)
                else:
                    assert sized == (5, 10, 30.0), "SQLite keeps SQLAlchemy's defaults"
    finally:
        stop_app(app)


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_a_peak_beyond_the_pool_waits_for_its_connections_and_keeps_them(app_config, databases):
    """PostgreSQL's backends are not opened and closed with each peak (a fork and cold caches each):
    more requests at once than the pool holds wait for a connection, every connection opened stays
    open, and at a quiet time one connection serves request after request (so none is idle long
    enough to need a ping before use)."""
    app = create_app({**app_config, "DATABASE_POOL_SIZE": 3})  # the default overflow
    opened, closed = [], []
    try:
        with app.app_context():
            engine = db.engine
        sa.event.listen(engine.pool, "connect", lambda *args: opened.append(1))
        sa.event.listen(engine.pool, "close", lambda *args: closed.append(1))
        backends = []

        def request() -> None:
            with engine.connect() as conn:
                backends.append(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
                time.sleep(0.05)

        for _ in range(2):  # two peaks of 8 at once
            peak = [threading.Thread(target=request) for _ in range(8)]
            for thread in peak:
                thread.start()
            for thread in peak:
                thread.join()
        assert len(backends) == 16, "every request got a connection"
        assert (len(opened), len(closed)) == (3, 0), "the pool's connections, opened once and kept"
        quiet = []
        for _ in range(5):
            with engine.connect() as conn:
                quiet.append(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
            time.sleep(0.01)
        assert len(set(quiet)) == 1, "one connection serves a quiet time"
    finally:
        stop_app(app)


def _drop_the_connections_of(app_url: str, admin_url: str, wait: bool = False, listener: bool = True) -> None:
    """What a database restart does to the connections a pool holds (`wait`: until they are gone;
    `listener` False: all but the LISTENing one)."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = sa.make_url(app_url).database
    with admin.connect() as conn:
        ended = conn.exec_driver_sql(
            "SELECT pid FROM (SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND (%s OR query NOT LIKE 'LISTEN%%')) AS terminated",
            (name, listener)).scalars().all()
    admin.dispose()
    if wait:  # until their processes exited, which closes their sockets (the server is on this machine)
        wait_for(lambda: not any(map(_alive, ended)), message="the connections to end")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_a_connection_the_database_dropped_is_replaced_before_use(app, databases, postgres_admin_url):
    with app.app_context():
        with db.engine.connect() as conn:
            before = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        _drop_the_connections_of(databases.app_url, postgres_admin_url, wait=True)
        with db.engine.connect() as conn:  # used a moment ago: not pinged, and still not used dead
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != before


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_a_page_right_after_the_database_dropped_its_connections_still_loads(app, browser, databases, harness,
                                                                            fake_model, postgres_admin_url):
    fake_model.script(Turn(text="Still here."))
    chat = browser.new_chat()
    assert browser.get(f"/chats/{chat}").status_code == 200  # the pool holds connections used just now
    _drop_the_connections_of(databases.app_url, postgres_admin_url)
    page = browser.get(f"/chats/{chat}")
    assert page.status_code == 200 and 'id="composer-input"' in page.get_data(as_text=True)
    assert browser.post(f"/chats/{chat}/messages", {"message": "hello"}).status_code == 200
    assert harness.wait(harness.latest_run(chat)).status == "completed"
    assert harness.messages(chat) == [("user", "hello"), ("assistant", "Still here.")]


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_a_pages_first_read_on_a_connection_found_dropped_reads_once_more(app, browser, databases,
                                                                           postgres_admin_url):
    """A goodbye that arrives after the pool checked the connection: the page's first read fails on it
    (its sign-in is remembered, so that read is the view's own) and runs again on a new connection."""
    chat = browser.new_chat()
    until_the_sign_in_is_remembered(app, browser, f"/chats/{chat}")
    sa.event.remove(PatientQueuePool, "checkout", _check_before_use)  # the goodbye is not read at checkout
    try:
        _drop_the_connections_of(databases.app_url, postgres_admin_url, wait=True, listener=False)
        page = browser.get(f"/chats/{chat}")
    finally:
        sa.event.listen(PatientQueuePool, "checkout", _check_before_use)
    assert page.status_code == 200 and 'id="composer-input"' in page.get_data(as_text=True)


@pytest.fixture
def one_connection_app(app_config):
    app = create_app({**app_config, **ONE_CONNECTION, "OS_SECURITY_KEY": KEY})
    with app.app_context():
        upgrade()
    yield app
    stop_app(app)


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_no_free_connection_is_a_503_for_pages_fragments_and_the_api(one_connection_app):
    app = one_connection_app
    browser = Browser(app)
    chat = browser.new_chat()
    with app.app_context(), db.engine.connect():  # someone else holds the pool's only connection
        page = browser.get(f"/chats/{chat}")
        assert page.status_code == 503 and page.headers["Retry-After"] == "5"
        assert b"The server is busy right now" in page.data
        fragment = browser.post(f"/chats/{chat}/messages", {"message": "hello"})
        assert fragment.status_code == 503 and b'id="flash"' in fragment.data
        api = Api(app, AUTH).get("/sessions")
        assert api.status_code == 503 and api.headers["Retry-After"] == "5"
        assert api.get_json() == {"detail": "The server is busy right now. Please try again in a moment."}
    assert browser.get(f"/chats/{chat}").status_code == 200, "fine again once a connection is free"


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_a_gevent_worker_whose_pool_runs_dry_answers_503_and_recovers(app, server_env, databases, harness, tmp_path):
    """The benchmark's failure: greenlets wait for a pooled connection while others hold them (here one
    request blocked on a locked table holds the only one). The waiter must get a 503, not a 500."""
    env = {**server_env, **{k: str(v) for k, v in ONE_CONNECTION.items()}, "RUN_SWEEP_SECONDS": "3600"}
    server = LiveServer(env, workers=1, log_path=tmp_path / "gunicorn.log").start()
    locker = sa.create_engine(databases.app_url)
    try:
        client = Client(server.url)
        chat = client.new_chat()
        slow: list = []
        with locker.connect() as lock:
            lock.exec_driver_sql("LOCK TABLE chat_sessions IN ACCESS EXCLUSIVE MODE")
            blocked = threading.Thread(target=lambda: slow.append(client.get(f"/chats/{chat}")))
            blocked.start()  # loads its chat: waits on the lock, holding the worker's only connection
            time.sleep(0.5)
            starved = Client(server.url, sign_in=False).get("/")  # a visitor: even "who is this?" needs a connection
            assert starved.status_code == 503 and starved.headers["Retry-After"] == "5"
            assert "The server is busy right now" in starved.text
            lock.rollback()
        blocked.join(10)
        assert slow[0].status_code == 200, "the request that held the connection finished normally"
        assert client.get(f"/chats/{chat}").status_code == 200
        assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()
    finally:
        locker.dispose()
        server.stop()


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_a_stream_waits_out_a_dry_pool_then_delivers_every_event(one_connection_app, fake_model):
    """Thousands of streams woken at once can exhaust a worker's pool after their responses began
    (too late for a 503): each waits and reads again, and the browser misses nothing."""
    fake_model.script(Turn(text="Worth the wait."))
    browser = Browser(one_connection_app)
    chat = browser.new_chat()
    sent = browser.post(f"/chats/{chat}/messages", {"message": "hello"})
    run_id = re.search(r"/runs/(run_\w+)/events", sent.get_data(as_text=True)).group(1)
    first_read = browser.events(run_id)
    assert first_read[-1]["event"] == "done"

    stream = browser.client.get(f"/runs/{run_id}/events?after=0", buffered=False)  # headers sent
    released = threading.Event()

    def hold_the_only_connection():
        with one_connection_app.app_context(), db.engine.connect():
            time.sleep(2.5)  # longer than DATABASE_POOL_TIMEOUT (1 s): the stream's read times out
        released.set()
    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    time.sleep(0.2)
    replay = parse_sse(stream.get_data(as_text=True))
    holder.join()
    assert released.is_set()
    ids = lambda events: [(event["event"], event["id"]) for event in events]  # noqa: E731
    numbers = [int(event["id"]) for event in replay if event["id"]]
    assert numbers == sorted(set(numbers)), "each event once, in order, after the wait"
    # A reply's text events are coalesced per read (issue 13), so which of them is sent may differ;
    # the reply's end, the run's end and `done` may not.
    assert ids(replay)[-3:] == ids(first_read)[-3:]
    assert "Worth the wait." in "".join(event["data"] for event in replay)


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
@pytest.mark.parametrize("dry", ["when the run is taken", "mid-reply"])
def test_a_run_waits_out_a_dry_pool_then_answers(one_connection_app, fake_model, caplog, dry):
    """A burst of requests can keep the pool dry longer than DATABASE_POOL_TIMEOUT. Requests get a
    503; a run (background work) waits for a connection and answers in full, rather than failing
    half-way or lying queued until the sweeper (which these tests switch off) comes round."""
    words = [f"word{i}" for i in range(40)]
    fake_model.script(Turn(text=" ".join(words), token_delay=0.03))
    app = one_connection_app
    executor = app.extensions["run_executor"]
    submit, submitted = executor.submit, []
    if dry == "when the run is taken":
        executor.submit = submitted.append  # handed over below, once the pool is dry
    browser = Browser(app)
    chat = browser.new_chat()
    sent = browser.post(f"/chats/{chat}/messages", {"message": "hello"})
    assert sent.status_code == 200
    run_id = re.search(r"/runs/(run_\w+)/events", sent.get_data(as_text=True)).group(1)

    def reply_so_far():
        with app.app_context():
            return db.session.scalar(sa.select(Message.content).where(
                Message.run_id == run_id, Message.role == "assistant")) or ""

    if dry == "mid-reply":
        wait_for(lambda: reply_so_far().startswith("word0"), message="the first words")
    held = threading.Event()

    def hold_the_only_connection():
        with app.app_context(), db.engine.connect():
            held.set()
            time.sleep(2.5)  # more than twice DATABASE_POOL_TIMEOUT (1 s)
    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    assert held.wait(5)
    if submitted:
        submit(submitted[0])
    holder.join()

    def run_status():
        with app.app_context():
            return db.session.get(Run, run_id).status
    wait_for(lambda: run_status() != "running" and run_status() != "queued", timeout=10, message="the run to end")
    assert run_status() == "completed"
    assert reply_so_far() == " ".join(words), "every word, once"
    events = browser.events(run_id)
    assert events[-1]["event"] == "done"
    assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]
