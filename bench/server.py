"""Everything the benchmark and the soak start and stop: the databases, the fake model process and
the app under gunicorn (`tests.live.LiveServer`, i.e. `gunicorn -c gunicorn.conf.py`), plus readings
of the server's processes from /proc."""
from __future__ import annotations

import json
import os
import platform
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from tests.live import ROOT, LiveServer

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def raise_fd_limit(wanted: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- databases ---------------------------------------------------------------------------------------

@dataclass
class Databases:
    backend: str
    app_url: str
    workspace_url: str
    admin_url: str | None = None
    names: tuple[str, ...] = ()

    @classmethod
    def create(cls, workdir: Path, postgres: str | None) -> "Databases":
        if not postgres:
            return cls("sqlite", f"sqlite:///{workdir / 'app.db'}", f"sqlite:///{workdir / 'workspace.db'}")
        admin = sa.create_engine(postgres, isolation_level="AUTOCOMMIT")
        tag = secrets.token_hex(4)
        names = (f"bench_app_{tag}", f"bench_ws_{tag}")
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        base = sa.make_url(postgres)
        urls = [base.set(database=n).render_as_string(hide_password=False) for n in names]
        return cls("postgresql", urls[0], urls[1], postgres, names)

    def drop(self) -> None:
        if self.backend != "postgresql":
            return
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in self.names:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    def version(self) -> str:
        if self.backend == "sqlite":
            import sqlite3
            return f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL)"
        engine = sa.create_engine(self.admin_url)
        with engine.connect() as conn:
            version = conn.exec_driver_sql("show server_version").scalar()
            fsync = conn.exec_driver_sql("show fsync").scalar()
            sync = conn.exec_driver_sql("show synchronous_commit").scalar()
        engine.dispose()
        return f"PostgreSQL {version} (fsync={fsync}, synchronous_commit={sync})"

    def pg_stats(self) -> dict[str, int] | None:
        """Transactions and row writes of the app's database so far (PostgreSQL's cumulative stats)."""
        if self.backend != "postgresql":
            return None
        engine = sa.create_engine(self.admin_url)
        with engine.connect() as conn:
            conn.exec_driver_sql("select pg_stat_clear_snapshot()")
            row = conn.exec_driver_sql(
                "select xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_fetched "
                "from pg_stat_database where datname = %s", (self.names[0],)).one()
        engine.dispose()
        return dict(zip(("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted",
                         "tup_fetched"), row))


def make_accounts(app_url: str, count: int) -> list[str]:
    """`count` member accounts (and an admin, if the server has none yet), written to the database
    with a cheap password hash, so that a phase with thousands of clients signs them in without
    spending a real hash each: 2,500 sign-ups cost ~5 minutes of CPU on two cores, which the phases
    do not measure. Returns their emails (the password is `bench.client.BENCH_PASSWORD`)."""
    from werkzeug.security import generate_password_hash

    from app.models import Account, Role
    from bench.client import BENCH_PASSWORD
    cheap = generate_password_hash(BENCH_PASSWORD, method="scrypt:1024:8:1")
    emails = [f"bench-{secrets.token_hex(6)}@example.test" for _ in range(count)]
    accounts = Account.__table__
    engine = sa.create_engine(app_url)
    try:
        with engine.begin() as conn:
            if conn.scalar(sa.select(accounts.c.id).where(accounts.c.role == Role.ADMIN).limit(1)) is None:
                conn.execute(accounts.insert(), [{"email": f"admin-{secrets.token_hex(4)}@example.test",
                                                  "role": Role.ADMIN, "password_hash": cheap}])
            if emails:
                conn.execute(accounts.insert(), [{"email": e, "role": Role.MEMBER, "password_hash": cheap}
                                                 for e in emails])
    finally:
        engine.dispose()
    return emails


def server_env(dbs: Databases, model_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": dbs.app_url,
        "WORKSPACE_DATABASE_URL": dbs.workspace_url,
        "OPENAI_API_KEY": "bench-key",
        "OPENAI_BASE_URL": model_url,
        "OPENAI_API": "responses",
        "OPENAI_MODEL": "fake-model",
        "OPENAI_TIMEOUT": "300",  # so a deliberately silent model ("bench hold") can hold a stream open
        "SECRET_KEY": "bench-" + secrets.token_hex(16),
        "SIGNUP": "open",  # each load-generating browser signs up as a person of its own
        # The benchmark measures capacity: its clients send and follow far faster than a person, so the
        # per-account limits (README, "Limits") are lifted; tests/test_limits.py covers them.
        "RATELIMIT_MESSAGES": "1000000 per minute",
        "RATELIMIT_COMMANDS": "1000000 per minute",
        "MAX_ACTIVE_RUNS": "100000",
        "MAX_STREAMS_PER_ACCOUNT": "100000",
    }


def migrate(env: dict[str, str], log: Path) -> None:
    with open(log, "ab") as out:
        subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=ROOT,
                       env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=120)


# --- the app ---------------------------------------------------------------------------------------

class CountingServer(LiveServer):
    """The same gunicorn settings plus a post_worker_init hook that counts SQL statements per worker
    (bench/gunicorn_counting.py). Used only for the database-writes and cost-growth phases."""

    def __init__(self, env, workers, log_path, count_dir: Path):
        super().__init__({**env, "BENCH_COUNT_DIR": str(count_dir)}, workers=workers, log_path=log_path)
        self.count_dir = count_dir

    def start(self, timeout: float = 30.0) -> "CountingServer":
        import requests
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "bench/gunicorn_counting.py"], cwd=ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
            try:
                if requests.get(self.url + "/static/favicon.svg", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not start in time")

    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for path in self.count_dir.glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for key, value in data.items():
                total[key] = total.get(key, 0) + value
        return total


def start_server(env: dict[str, str], workers: int | None, log: Path, count_dir: Path | None = None) -> LiveServer:
    """gunicorn with the production config. workers=None leaves the worker count to gunicorn.conf.py
    (its default depends on the database); a number sets WEB_CONCURRENCY."""
    if count_dir is not None:
        count_dir.mkdir(parents=True, exist_ok=True)
        server = CountingServer(env, workers or 1, log, count_dir)
    else:
        server = LiveServer(env, workers=workers or 1, log_path=log)
    if workers is None:
        server.env.pop("WEB_CONCURRENCY", None)
        if os.environ.get("WEB_CONCURRENCY"):  # the caller's own setting, as gunicorn would see it
            server.env["WEB_CONCURRENCY"] = os.environ["WEB_CONCURRENCY"]
    server.start(timeout=30.0)
    wait_for_workers(server, workers)
    server.worker_count = len(worker_pids(server))
    return server


def wait_for_workers(server: LiveServer, workers: int | None, timeout: float = 20.0) -> None:
    """Until `workers` workers run, or (None) until their number has been stable for a second."""
    deadline = time.monotonic() + timeout
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(worker_pids(server))
        if workers is not None and count >= workers:
            return
        if count != last:
            last, stable_since = count, time.monotonic()
        elif workers is None and count > 0 and time.monotonic() - stable_since >= 1.0:
            return
        time.sleep(0.1)


def worker_pids(server: LiveServer) -> list[int]:
    pid = server.process.pid
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in children]


def server_pids(server: LiveServer) -> list[int]:
    return [server.process.pid] + worker_pids(server)


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all processes, all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def exited_children_cpu(backends: list[int]) -> float | None:
    """CPU seconds of the PostgreSQL server's children that have exited (its postmaster's cutime and
    cstime: the postmaster reaps each backend as it exits), found through a backend's parent."""
    for pid in backends:
        try:
            postmaster = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            continue
        return (int(fields[13]) + int(fields[14])) / CLK_TCK  # cutime, cstime (fields 16 and 17 of stat)
    return None


def pg_backend_pids(database_names: tuple[str, ...]) -> list[int]:
    """PostgreSQL backends serving our databases (when the server runs on this machine)."""
    pids = []
    if not database_names:
        return pids
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("postgres: ") and any(f" {name} " in cmdline for name in database_names):
            pids.append(int(entry.name))
    return pids


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def memory(server: LiveServer) -> dict[str, float]:
    workers = worker_pids(server)
    return {"master": rss_mib(server.process.pid), "workers": [rss_mib(p) for p in workers]}


# --- the fake model ----------------------------------------------------------------------------------

class FakeModelProcess:
    """bench/fakemodel.py in its own process; commands over stdin/stdout."""

    def __init__(self, log: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.fakemodel"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(log, "ab"), text=True, bufsize=1)
        self.base_url = self._read()["base_url"]

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the fake model process exited")
        return json.loads(line)

    def command(self, cmd: str) -> dict:
        self.process.stdin.write(json.dumps({"cmd": cmd}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def stats(self) -> dict:
        return self.command("stats")

    def release(self) -> None:
        self.command("release")

    def drain(self, on: bool = True) -> None:
        self.command("drain" if on else "undrain")

    def cpu_seconds(self) -> float:
        return cpu_seconds([self.process.pid])

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


# --- the machine -------------------------------------------------------------------------------------

def hardware() -> dict[str, str]:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    lscpu = run("lscpu")
    model = re.search(r"Model name:\s*(.+)", lscpu)
    hyper = re.search(r"Hypervisor vendor:\s*(.+)", lscpu)
    mem_kib = int(re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text()).group(1))
    versions = {}
    for package in ("gunicorn", "gevent", "flask", "sqlalchemy", "openai", "aiohttp"):
        try:
            from importlib.metadata import version
            versions[package] = version(package)
        except Exception:
            versions[package] = "?"
    return {
        "nproc": run("nproc"),
        "cpu": (model.group(1).strip() if model else platform.processor()) + (f" ({hyper.group(1).strip()} guest)" if hyper else ""),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
    }


def make_workdir(keep: bool) -> Path:
    return Path(tempfile.mkdtemp(prefix="agent-chat-bench-"))


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
