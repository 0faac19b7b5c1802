"""The reference and this app side by side, in one run: Agno AgentOS serving its documented HITL example
(bench/reference/, pinned versions, its own venv) and this app (gunicorn, production settings), on the
same fake model (bench/fakemodel.py), the same PostgreSQL and the same load client.

    .venv/bin/python -m bench.compare --postgres postgresql+psycopg://postgres@127.0.0.1:55432/postgres
    .venv/bin/python -m bench.compare --postgres URL --quick          # ~2 min: fewer cycles, 10 s windows
    .venv/bin/python -m bench.compare --install-only                  # just (re)build the reference's venv

Each side gets a fresh database (created on the admin URL, dropped at the end). Measured per side:
pause and continue medians (1 client, sequential), full pause+continue cycles/s with 10 clients,
server CPU per cycle and PostgreSQL CPU per cycle (the backends serving that side's databases, read
from /proc: the server must run on this machine; with those that closed during the measurement, from
the PostgreSQL server's reaped children, which also counts autovacuum workers that ran meanwhile). The reference is driven through its REST API
(bench.client.AgentOSClient); this app through the same client and API ("app, API") and through its
page flow as a browser does ("app, page": bench.client.Browser). With --sqlite this app also runs
on SQLite (the reference needs PostgreSQL).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import sqlalchemy as sa

from bench import server as S
from bench.client import AgentOSClient, Browser, CycleError, HTTPError
from tests.live import ROOT, free_port

REFERENCE = ROOT / "bench" / "reference"
REFERENCE_PYTHON = REFERENCE / ".venv" / "bin" / "python"
MS = 1_000_000
CLIENTS = 10
API_KEY = "bench-" + secrets.token_hex(16)  # OS_SECURITY_KEY for this app's API (≥ 32 characters)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def install_reference(force: bool = False) -> None:
    """The reference's own venv, from the pinned requirements (pip through the configured index)."""
    if REFERENCE_PYTHON.exists() and not force:
        return
    log("installing the reference into bench/reference/.venv (pinned, bench/reference/requirements.txt)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(REFERENCE / ".venv")], check=True)
    subprocess.run([str(REFERENCE_PYTHON), "-m", "pip", "install", "-q", "-r", str(REFERENCE / "requirements.txt")],
                   check=True)


# --- the sides ---------------------------------------------------------------------------------------

@dataclass
class Side:
    name: str
    url: str
    make_client: object          # async () -> a client with .cycle() and .close()
    server_pids: object          # () -> the server's process ids
    database_names: tuple[str, ...]
    stop: object                 # () -> None
    results: dict = field(default_factory=dict)


def create_database(admin_url: str, prefix: str) -> tuple[str, str]:
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return name, sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def start_reference(admin_url: str, model_url: str, workdir: Path) -> Side:
    name, url = create_database(admin_url, "bench_ref")
    port = free_port()
    env = {**os.environ, "REFERENCE_DB_URL": url, "REFERENCE_PORT": str(port), "OPENAI_BASE_URL": model_url,
           "OPENAI_API_KEY": "bench-key", "AGNO_TELEMETRY": "false"}
    with open(workdir / "reference.log", "ab") as out:
        process = subprocess.Popen([str(REFERENCE_PYTHON), "hitl_confirmation.py"], cwd=REFERENCE, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://localhost:{port}"
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the reference exited with {process.returncode}; see {workdir / 'reference.log'}")
        try:
            if requests.get(base + "/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if time.monotonic() - started > 90:
            raise RuntimeError("the reference did not start within 90 s")
        time.sleep(0.2)
    log(f"reference up in {time.monotonic() - started:.1f} s on {base}")

    def stop():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        drop_database(admin_url, name)

    async def client():
        return AgentOSClient(base)

    return Side("reference (Agno AgentOS)", base, client,
                lambda: [process.pid], (name,), stop)


def start_app(dbs: S.Databases, model_url: str, workdir: Path, label: str, flow: str, workers: int | None) -> Side:
    env = {**S.server_env(dbs, model_url), "OS_SECURITY_KEY": API_KEY}
    S.migrate(env, workdir / f"migrate-{dbs.backend}.log")
    server = S.start_server(env, workers, workdir / f"gunicorn-{dbs.backend}-{flow}.log")

    async def client():
        if flow == "api":
            return AgentOSClient(server.url, token=API_KEY)
        return await Browser(server.url).open()

    return Side(f"{label} ({server.worker_count} workers, {dbs.backend})", server.url, client,
                lambda: S.server_pids(server), dbs.names, server.stop)


# --- measuring ---------------------------------------------------------------------------------------

def cpu_now(side: Side) -> tuple[float, dict[int, float], float | None]:
    """This side's server CPU, its PostgreSQL backends' CPU by pid, and the CPU of the PostgreSQL
    server's children that have exited so far (None: no backend to find the server by)."""
    backends = {pid: S.cpu_seconds([pid]) for pid in S.pg_backend_pids(side.database_names)}
    return S.cpu_seconds(side.server_pids()), backends, S.exited_children_cpu(list(backends))


def cpu_since(side: Side, start: tuple[float, dict[int, float], float | None]) -> tuple[float, float]:
    server, backends, exited = cpu_now(side)
    start_server, start_backends, start_exited = start
    # Backends alive at the end, from the start (or from when they began)...
    alive = sum(cpu - start_backends.get(pid, 0.0) for pid, cpu in backends.items())
    # ...and those that exited meanwhile (a pool's overflow connections close when given back, and were
    # missed before): the server's exited children's CPU, less what they had used before the start.
    # Autovacuum workers that ran meanwhile count too: the side's writes made their work.
    gone = 0.0
    if exited is not None and start_exited is not None:
        gone = (exited - start_exited) - sum(cpu for pid, cpu in start_backends.items() if pid not in backends)
    return server - start_server, alive + max(0.0, gone)


async def cycle_of(client, browser_flow: bool):
    if browser_flow:
        client.cycles = getattr(client, "cycles", 0) + 1
        if client.cycles % 10 == 0:
            await client.new_chat()  # sessions of 10 turns, as AgentOSClient's
    return await client.cycle()


async def measure(side: Side, sequential: int, seconds: float) -> None:
    browser_flow = "page" in side.name
    log(f"{side.name}: warm-up, then {sequential} sequential cycles")
    first = await side.make_client()
    for _ in range(5):
        await cycle_of(first, browser_flow)
    pauses, continues = [], []
    for _ in range(sequential):
        c = await cycle_of(first, browser_flow)
        pauses.append(c.pause_ns / MS)
        continues.append(c.continue_ns / MS)
    side.results.update(pause=statistics.median(pauses), cont=statistics.median(continues))

    log(f"{side.name}: {CLIENTS} clients for {seconds:.0f} s")
    clients = [first] + [await side.make_client() for _ in range(CLIENTS - 1)]
    start, end = time.monotonic() + 2.0, time.monotonic() + 2.0 + seconds
    done, errors = [], []

    async def run(client):
        while time.monotonic() < end:
            try:
                await asyncio.wait_for(cycle_of(client, browser_flow), timeout=30)
                done.append(time.monotonic())
            except (CycleError, HTTPError, asyncio.TimeoutError) as exc:
                errors.append(repr(exc))
                await asyncio.sleep(0.2)

    tasks = [asyncio.create_task(run(c)) for c in clients]
    await asyncio.sleep(start - time.monotonic())
    cpu_start = cpu_now(side)
    await asyncio.sleep(end - time.monotonic())
    server_cpu, db_cpu = cpu_since(side, cpu_start)
    await asyncio.gather(*tasks)
    await asyncio.gather(*(c.close() for c in clients))
    cycles = sum(1 for t in done if start <= t <= end)
    side.results.update(rate=cycles / seconds, server_cpu=server_cpu * 1000 / max(cycles, 1),
                        db_cpu=db_cpu * 1000 / max(cycles, 1) if side.database_names else None,
                        errors=len(errors), first_error=errors[0] if errors else "")
    log(f"  {side.results}")


# --- the table -----------------------------------------------------------------------------------------

ROWS = [
    ("pause (POST → PAUSED answer), median", "pause", "ms"),
    ("continue (approve → COMPLETED answer), median", "cont", "ms"),
    (f"full pause+continue cycles/s, {CLIENTS} clients", "rate", "/s"),
    ("server CPU per cycle", "server_cpu", "ms"),
    ("PostgreSQL CPU per cycle", "db_cpu", "ms"),
]


def table(reference: Side | None, sides: list[Side]) -> str:
    head = ["| |"] + ([f" {reference.name} |"] if reference else [])
    for side in sides:
        head.append(f" {side.name} |" + (" ratio |" if reference else ""))
    lines = ["".join(head), "|---" * (1 + (1 if reference else 0) + len(sides) * (2 if reference else 1)) + "|"]
    for label, key, unit in ROWS:
        cells = [f"| {label} |"]
        ref = reference.results.get(key) if reference else None
        if reference:
            cells.append(f" {fmt(ref, unit)} |")
        for side in sides:
            value = side.results.get(key)
            cells.append(f" {fmt(value, unit)} |")
            if reference:
                cells.append(f" {value / ref:.2f}× |" if value is not None and ref else " |")
        lines.append("".join(cells))
    errors = [f"{s.name}: {s.results['errors']} errors ({s.results['first_error'][:120]})"
              for s in ([reference] if reference else []) + sides if s.results.get("errors")]
    return "\n".join(lines) + ("\n\nErrors: " + "; ".join(errors) if errors else "")


def fmt(value, unit: str) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}/s" if unit == "/s" else f"{value:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", metavar="URL", help="an admin URL (the reference needs PostgreSQL)")
    parser.add_argument("--quick", action="store_true", help="20 sequential cycles and 10 s windows (default 50 / 30 s)")
    parser.add_argument("--only", default="reference,api,page",
                        help="sides to run: reference, api (this app through the REST API), page (its page flow)")
    parser.add_argument("--sqlite", action="store_true", help="also run this app on SQLite")
    parser.add_argument("--workers", type=int, default=None, help="WEB_CONCURRENCY for this app (default: gunicorn.conf.py's)")
    parser.add_argument("--install", action="store_true", help="rebuild the reference's venv first")
    parser.add_argument("--install-only", action="store_true", help="only build the reference's venv")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if args.install or args.install_only or "reference" in only:
        install_reference(force=args.install or args.install_only)
    if args.install_only:
        return 0
    if not args.postgres and "reference" in only:
        parser.error("--postgres is required for the reference (it needs PostgreSQL)")
    sequential, seconds = (20, 10.0) if args.quick else (50, 30.0)
    S.raise_fd_limit()
    workdir = S.make_workdir(keep=True)
    log(f"work dir {workdir}")
    fake = S.FakeModelProcess(workdir / "fake.log")
    reference, sides = None, []
    try:
        if "reference" in only:
            reference = start_reference(args.postgres, fake.base_url, workdir)
            try:
                asyncio.run(measure(reference, sequential, seconds))
            finally:
                reference.stop()
        backends = ([args.postgres] if args.postgres else []) + ([None] if args.sqlite or not args.postgres else [])
        for admin in backends:
            for flow, label in (("api", "app, API"), ("page", "app, page")):
                if flow not in only:
                    continue
                dbs = S.Databases.create(workdir, admin)
                side = None
                try:
                    side = start_app(dbs, fake.base_url, workdir, label, flow, args.workers)
                    asyncio.run(measure(side, sequential, seconds))
                    sides.append(side)
                finally:
                    if side is not None:
                        side.stop()
                    dbs.drop()
    finally:
        fake.stop()
    command = "python -m bench.compare " + " ".join(argv if argv is not None else sys.argv[1:])
    busy = S.hardware()
    print(f"Command: `{command.strip()}`, {time.strftime('%Y-%m-%d %H:%M')}, {busy['nproc']} CPUs, "
          f"model delay 0, {CLIENTS} clients for the cycles/s row.\n")
    print(table(reference, sides))
    log(f"logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
