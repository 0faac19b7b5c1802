"""CPU time and statements per request kind, in-process: the app on a temporary database with the
benchmark's fake model, driven by Flask's test client through N pause+continue cycles of the page and
of the REST API.

    .venv/bin/python -m bench.requests [--cycles 200] [--postgres postgresql+psycopg://…/postgres]

CPU is `time.thread_time()` of the thread that handles the request (the test client runs the view, and
reads a stream's body, in the calling thread), so the fake model's threads are not counted, and other
processes on a shared machine disturb it far less than wall time. The executor's runs are measured the
same way, in their own threads (its `execute` step is wrapped), and summed per cycle into their own
rows. Statements are those the measured threads send to the app database (and, separately, the
workspace). The first tenth of the cycles warms caches and is not counted.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import secrets
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from bench.client import CALL_RE, STREAM_RE
from bench.fakemodel import BenchFake
from bench.server import Databases, server_env

API_KEY = "bench-api-key-" + "0" * 32
PASSWORD = "bench password 1234"
CSRF_RE = re.compile(rb'name="csrf_token" value="([^"]+)"')


class Counter:
    """Statements sent by the measured threads (this one, and the executor's while it runs a step),
    by database (the app's, or the workspace)."""

    def __init__(self, app_url: str):
        self.app_url = sa.make_url(app_url)
        self.thread = threading.get_ident()
        self.counts = {"app": 0, "workspace": 0}
        self.log: list[str] | None = None  # with --sql: the statements' text
        self.executor_log: list[str] = []  # with --sql: the executor's, since its last cycle was booked
        self.local = threading.local()     # .counts: an executor thread's counts while it runs

    def install(self) -> None:
        @sa.event.listens_for(sa.engine.Engine, "before_cursor_execute")
        def _statement(conn, cursor, statement, parameters, context, executemany):
            counts = self.counts if threading.get_ident() == self.thread else getattr(self.local, "counts", None)
            if counts is None:
                return
            verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
            if verb in ("BEGIN", "SAVEPOINT", "RELEASE"):
                return
            url = conn.engine.url
            same = url.database == self.app_url.database and url.host == self.app_url.host
            counts["app" if same else "workspace"] += 1
            if self.log is not None:
                line = ("" if same else "[workspace] ") + " ".join(statement.split())[:160]
                (self.log if counts is self.counts else self.executor_log).append(line)


class Measure:
    def __init__(self, counter: Counter):
        self.counter = counter
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self.statements: dict[str, list[int]] = defaultdict(list)
        self.workspace: dict[str, list[int]] = defaultdict(list)
        self.recording = False
        self.sql: dict[str, list[str]] = {}
        self._executed = {"cpu": 0.0, "app": 0, "workspace": 0}  # the executor's, since the last cycle ended
        self._executed_lock = threading.Lock()
        self.executor_profile = None  # with --profile-executor: a cProfile.Profile

    def wrap_executor(self, app) -> None:
        """Measure the executor's runs: its `execute` step, timed in the executor's own thread."""
        executor = app.extensions["run_executor"]
        execute = executor.steps.execute

        def measured_execute(run_id: str) -> None:
            counts = self.counter.local.counts = {"app": 0, "workspace": 0}
            profile = self.executor_profile if self.recording else None
            t0 = time.thread_time()
            if profile is not None:
                profile.enable()  # the runs here never overlap: one profile serves them all
            try:
                execute(run_id)
            finally:
                if profile is not None:
                    profile.disable()
                cpu = time.thread_time() - t0
                self.counter.local.counts = None
                with self._executed_lock:
                    self._executed["cpu"] += cpu
                    self._executed["app"] += counts["app"]
                    self._executed["workspace"] += counts["workspace"]

        measured_execute.__name__ = execute.__name__
        executor.steps = dataclasses.replace(executor.steps, execute=measured_execute)
        self.executor = executor

    def executor_cycle(self, name: str) -> None:
        """End a cycle: wait until the executor is idle, then book what it did under `name`."""
        deadline = time.monotonic() + 10
        while self.executor.executing and time.monotonic() < deadline:
            time.sleep(0.0005)
        with self._executed_lock:
            executed, self._executed = self._executed, {"cpu": 0.0, "app": 0, "workspace": 0}
            statements, self.counter.executor_log = self.counter.executor_log, []
        if self.counter.log is not None and self.recording:
            self.sql[name] = statements
        if self.recording:
            self.cpu[name].append(executed["cpu"] * 1000)
            self.statements[name].append(executed["app"])
            self.workspace[name].append(executed["workspace"])

    @contextmanager
    def kind(self, name: str):
        before = dict(self.counter.counts)
        if self.counter.log is not None:
            self.counter.log = []
        t0 = time.thread_time()
        yield
        cpu = time.thread_time() - t0
        if self.counter.log is not None and self.recording:
            self.sql[name] = self.counter.log
        if self.recording:
            self.cpu[name].append(cpu * 1000)
            self.statements[name].append(self.counter.counts["app"] - before["app"])
            self.workspace[name].append(self.counter.counts["workspace"] - before["workspace"])

    def table(self) -> str:
        rows = ["| request kind | CPU ms (median) | CPU ms (mean) | app statements | workspace statements |",
                "|---|---|---|---|---|"]
        for name in self.cpu:
            rows.append(f"| {name} | {statistics.median(self.cpu[name]):.2f} | {statistics.fmean(self.cpu[name]):.2f} "
                        f"| {statistics.fmean(self.statements[name]):.2f} | {statistics.fmean(self.workspace[name]):.2f} |")
        page = [n for n in self.cpu if not n.startswith("API") and "executor" not in n]
        api = [n for n in self.cpu if n.startswith("API") and "executor" not in n]
        labelled = [("page cycle, requests (sum)", page), ("API cycle, requests (sum)", api)]
        if "executor (page cycle)" in self.cpu:
            labelled += [("page cycle, requests + executor", page + ["executor (page cycle)"]),
                         ("API cycle, requests + executor", api + ["API executor (API cycle)"])]
        for label, names in labelled:
            if names:
                rows.append(f"| **{label}** | {sum(statistics.median(self.cpu[n]) for n in names):.2f} "
                            f"| {sum(statistics.fmean(self.cpu[n]) for n in names):.2f} "
                            f"| {sum(statistics.fmean(self.statements[n]) for n in names):.2f} "
                            f"| {sum(statistics.fmean(self.workspace[n]) for n in names):.2f} |")
        return "\n".join(rows)


class Page:
    """A signed-in person's test client that posts like htmx (CSRF header, HX-Request)."""

    def __init__(self, app, email: str):
        self.client = app.test_client()
        response = self.client.get("/login")
        csrf = CSRF_RE.search(response.data).group(1).decode()
        response = self.client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf})
        assert response.status_code == 303, response.status_code
        self.csrf = CSRF_RE.search(self.client.get("/account").data).group(1).decode()

    def post(self, url: str, data: dict | None = None):
        return self.client.post(url, data=data or {}, headers={"X-CSRFToken": self.csrf, "HX-Request": "true"})


def build_app(dbs: Databases, model_url: str):
    from app import create_app

    os.environ.update({**server_env(dbs, model_url), "OS_SECURITY_KEY": API_KEY})
    app = create_app(cli=True)
    from flask_migrate import upgrade
    with app.app_context():
        upgrade()
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return app


def make_person(app) -> str:
    from werkzeug.security import generate_password_hash

    from app.extensions import db
    from app.models import Account, Role
    email = f"bench-{secrets.token_hex(4)}@example.test"
    with app.app_context():
        if not db.session.scalar(sa.select(Account.id).where(Account.role == Role.ADMIN).limit(1)):
            db.session.add(Account(email=f"admin-{secrets.token_hex(3)}@example.test", role=Role.ADMIN,
                                   password_hash=generate_password_hash(PASSWORD, method="scrypt:1024:8:1")))
        db.session.add(Account(email=email, role=Role.MEMBER,
                               password_hash=generate_password_hash(PASSWORD, method="scrypt:1024:8:1")))
        db.session.commit()
    return email


def page_cycle(page: Page, chat_id: str, m: Measure) -> None:
    with m.kind("POST message"):
        body = page.post(f"/chats/{chat_id}/messages", {"message": "bench pause"}).get_data(as_text=True)
    match = STREAM_RE.search(body)
    assert match, body[:500]
    run_id, cursor = match.group(1), match.group(2)
    with m.kind("stream to the pause"):
        stream = page.client.get(f"/runs/{run_id}/events?after={cursor}").get_data(as_text=True)
    calls = CALL_RE.findall(stream)
    assert calls, stream
    with m.kind("POST approve"):
        response = page.post(f"/runs/{run_id}/calls/{calls[0][1]}/approve")
        body = response.get_data(as_text=True)
    assert response.status_code == 200, body[:500]
    match = STREAM_RE.search(body)
    assert match, body[:500]
    with m.kind("stream to the end"):
        stream = page.client.get(f"/runs/{run_id}/events?after={match.group(2)}").get_data(as_text=True)
    assert "Done." in stream, stream[-800:]
    m.executor_cycle("executor (page cycle)")


def api_cycle(client, session_id: str, user_id: str, m: Measure, stream: bool = False) -> None:
    """A pause and a continue; with `stream`, each answer is the run's event stream (read whole), the
    reference's default, else its JSON once it settles."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with m.kind("API run"):
        response = client.post("/agents/data_manager/runs", headers=headers, data={
            "message": "bench pause", "session_id": session_id, "user_id": user_id, "stream": str(stream).lower()})
        paused = _last_frame(response) if stream else response.get_json()
    assert paused["status" if not stream else "event"] in ("PAUSED", "RunPaused"), paused
    tools = [{**tool, "confirmed": True} for tool in paused["tools"] if tool.get("requires_confirmation")]
    with m.kind("API continue"):
        response = client.post(f"/agents/data_manager/runs/{paused['run_id']}/continue", headers=headers, data={
            "tools": json.dumps(tools), "session_id": session_id, "user_id": user_id, "stream": str(stream).lower()})
        done = _last_frame(response) if stream else response.get_json()
    assert done["status" if not stream else "event"] in ("COMPLETED", "RunCompleted"), done
    m.executor_cycle("API executor (API cycle)")


def _last_frame(response) -> dict:
    """The payload of a streamed answer's last event."""
    data = [line for line in response.get_data(as_text=True).splitlines() if line.startswith("data: ")]
    return json.loads(data[-1][len("data: "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--postgres", help="an admin URL: a temporary database is created on it")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the request thread (after warm-up) into FILE")
    parser.add_argument("--profile-executor", metavar="FILE", help="cProfile the executor's runs into FILE")
    parser.add_argument("--sql", action="store_true", help="also print the last cycle's statements per kind")
    parser.add_argument("--api-stream", action="store_true",
                        help="the API's answers are event streams (the reference's default), not JSON")
    args = parser.parse_args()
    fake = BenchFake().start()
    with tempfile.TemporaryDirectory() as tmp:
        dbs = Databases.create(Path(tmp), args.postgres)
        app = None
        try:
            app = build_app(dbs, fake.base_url)
            counter = Counter(dbs.app_url)
            counter.install()
            if args.sql:
                counter.log = []
            m = Measure(counter)
            m.wrap_executor(app)
            if args.profile_executor:
                import cProfile
                m.executor_profile = cProfile.Profile(time.thread_time)
            page = Page(app, make_person(app))
            api = app.test_client()
            warm = max(1, args.cycles // 10)
            chat_id = None
            profile = None
            for i in range(warm + args.cycles):
                m.recording = i >= warm
                if args.profile and i == warm:
                    import cProfile
                    profile = cProfile.Profile(time.thread_time)
                    profile.enable()
                if i % 10 == 0:
                    response = page.client.post("/chats", data={}, headers={"X-CSRFToken": page.csrf})
                    chat_id = response.headers["Location"].rsplit("/", 1)[-1]
                page_cycle(page, chat_id, m)
                api_cycle(api, f"bench-{i // 10}", "bench-api", m, stream=args.api_stream)
            if profile is not None:
                profile.disable()
                profile.dump_stats(args.profile)
            if m.executor_profile is not None:
                m.executor_profile.dump_stats(args.profile_executor)
            print(f"{dbs.backend}, {args.cycles} cycles after {warm} to warm up; CPU of the request's thread"
                  + ("; the API's answers streamed" if args.api_stream else "") + "\n")
            print(m.table())
            for name, statements in m.sql.items():
                print(f"\n{name}:")
                print("\n".join(f"  {line}" for line in statements))
        finally:
            fake.stop()
            if app is not None:
                from tests.conftest import stop_app
                stop_app(app)
            dbs.drop()


if __name__ == "__main__":
    main()
