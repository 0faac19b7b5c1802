"""Where the server's time goes: run one load shape against the app (production gunicorn config) and
record every gunicorn worker with py-spy, then print the functions with the most samples.

    .venv/bin/python -m bench.profile cycles  --clients 10 --seconds 20
    .venv/bin/python -m bench.profile streams --clients 100 --seconds 20
    .venv/bin/python -m bench.profile idle    --clients 1000 --seconds 15   # quiet open streams
    .venv/bin/python -m bench.profile long    --clients 100 --seconds 15    # one long reply each (capacity)
    .venv/bin/python -m bench.profile growth  --turns 300                   # one long session
    .venv/bin/python -m bench.profile read bench/results/profile-cycles-*.txt  # summarize saved stacks again

Collapsed stacks (flamegraph input) go to bench/results/profile-<shape>-<pid>.txt.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import server as S
from bench.client import Browser
from bench.run import RESULTS, log

PY_SPY = Path(sys.executable).with_name("py-spy")


# A password hash runs in a native thread of its own (app/native_threads.py), outside the view's stack.
SIGN_IN_FRAMES = ("signup (app/web/signin.py", "login (app/web/signin.py", "(werkzeug/security.py")


def summarize(paths: list[Path], top: int) -> str:
    own, total, samples = collections.Counter(), collections.Counter(), 0
    stacks = []
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit() or any(x in stack for x in SIGN_IN_FRAMES):
                continue  # the load's own sign-ins (a password hash each) are not the shape measured
            count = int(count)
            samples += count
            frames = stack.split(";")
            stacks.append((frames, count))
            own[frames[-1]] += count
            for frame in set(frames):
                total[frame] += count
    out = [f"{samples} samples (idle samples excluded by py-spy unless --idle; sign-ins left out)", "",
           "self time:"]
    out += [f"  {n / samples * 100:5.1f} %  {f}" for f, n in own.most_common(top)]
    out += ["", "inclusive time, the app's own functions:"]
    out += [f"  {n / samples * 100:5.1f} %  {f}" for f, n in total.most_common() if "(app/" in f][:top * 2]
    out += ["", "inclusive time, libraries (top frames of each package):"]
    out += [f"  {n / samples * 100:5.1f} %  {f}" for f, n in total.most_common(top * 4)
            if "(app/" not in f and not any(x in f for x in ("gunicorn/", "gevent/", "threading.py",
                                                                  "concurrent/futures"))][:top]
    out += ["", breakdown(stacks)]
    return "\n".join(out)


# Where a sample's own time is spent: the package of its innermost frame (first match wins).
LAYERS = (
    ("templates", (".html:",)),
    ("Jinja + MarkupSafe", ("(jinja2/", "(markupsafe/")),
    # the driver's C calls show as the SQLAlchemy frame that makes them (py-spy without --native)
    ("database calls (the driver)", ("DefaultDialect.do_execute", "DefaultDialect.do_commit",
                                     "DefaultDialect.do_rollback", "(sqlite3/", "(psycopg")),
    ("SQLAlchemy", ("(sqlalchemy/", "<sqlalchemy ")),
    ("Flask, Werkzeug, extensions", ("(flask/", "(werkzeug/", "(flask_", "(itsdangerous/", "(limits/")),
    ("openai SDK + HTTP client", ("(openai/", "(httpx", "(httpcore", "(h11/", "(anyio/", "(pydantic")),
    ("app", ("(app/",)),
    ("gevent + gunicorn (server, event loop)", ("(gevent/", "(gunicorn/", "(greenlet/")),
    ("JSON", ("(json/",)),
)
# Which part of the work a sample belongs to: the first part with a frame in its stack. A greenlet's
# stack is often sampled from where it last switched in, so some stacks name no part.
PARTS = (
    ("executor (the runs)", ("RunExecutor._execute", "(app/agent/loop.py", "(app/agent/llm.py")),
    ("event streams", ("follow_run", "(app/web/stream.py", "run_events.<locals>", "_iter_encoded")),
    ("request views", ("dispatch_request",)),
    ("request machinery (hooks, context, response)", ("wsgi_app",)),
    ("HTTP server (parse, write)", ("AsyncWorker.handle", "GeventWorker.handle")),
    ("event loop", ("Hub.run",)),
)
UNATTRIBUTED = "stack names no part"


def _layer(frame: str) -> str:
    return next((name for name, marks in LAYERS if any(m in frame for m in marks)), "other (stdlib, ...)")


def _part(frames: list[str]) -> str:
    return next((name for name, marks in PARTS if any(m in f for m in marks for f in frames)), UNATTRIBUTED)


def breakdown(stacks: list[tuple[list[str], int]]) -> str:
    """Self time by layer (rows) within each part of the work (columns), in % of all samples."""
    cells, samples = collections.Counter(), sum(n for _, n in stacks)
    for frames, n in stacks:
        cells[_part(frames), _layer(frames[-1])] += n
    parts = [name for name, _ in PARTS] + [UNATTRIBUTED]
    layers = [name for name, _ in LAYERS] + ["other (stdlib, ...)"]
    pct = lambda n: f"{n / max(1, samples) * 100:.1f}"
    rows = ["self time by layer and part of the work (% of samples):", "",
            "| layer | " + " | ".join(parts) + " | all |", "|---" * (len(parts) + 2) + "|"]
    for layer in sorted(layers, key=lambda l: -sum(cells[p, l] for p in parts)):
        rows.append(f"| {layer} | " + " | ".join(pct(cells[p, layer]) for p in parts)
                    + f" | {pct(sum(cells[p, layer] for p in parts))} |")
    rows.append("| **all** | " + " | ".join(pct(sum(cells[p, l] for l in layers)) for p in parts) + " | 100 |")
    return "\n".join(rows)


async def load(shape: str, url: str, app_url: str, clients: int, seconds: float, turns: int,
               fake: S.FakeModelProcess):
    gate = asyncio.Semaphore(100)

    async def make(email):
        async with gate:
            return await Browser(url).open(email)
    emails = await asyncio.to_thread(S.make_accounts, app_url, clients)
    browsers = await asyncio.gather(*(make(e) for e in emails))
    end = time.monotonic() + seconds
    count = 0

    async def cycles(b: Browser):
        nonlocal count
        while time.monotonic() < end:
            await b.cycle()
            count += 1
            if count % 10 == 0:
                await b.new_chat()

    async def streams(b: Browser):
        nonlocal count
        while time.monotonic() < end:
            run, cursor, _ = await b.send("bench stream n=20 rate=50")
            await b.stream(run, cursor)
            count += 1

    async def idle(b: Browser):
        run, cursor, _ = await b.send("bench hold s=50")
        return run, await b.stream(run, cursor, stop_after_ns=int((end + 1) * 1e9))

    async def long_reply(b: Browser):
        tokens = int(50 * (seconds + 4))
        run, cursor, _ = await b.send(f"bench stream n={tokens} rate=50")
        await b.stream(run, cursor, stop_after_ns=int(end * 1e9))
        await b.cancel(run)

    if shape == "cycles":
        await asyncio.gather(*(cycles(b) for b in browsers))
    elif shape == "streams":
        await asyncio.gather(*(streams(b) for b in browsers))
    elif shape == "long":
        await asyncio.gather(*(long_reply(b) for b in browsers))
        count = len(browsers)
    elif shape == "idle":
        tasks = [asyncio.create_task(idle(b)) for b in browsers]
        await asyncio.sleep(seconds)
        fake.release()
        await asyncio.gather(*tasks, return_exceptions=True)
    elif shape == "growth":
        for _ in range(turns):
            await browsers[0].cycle()
            count += 1
    await asyncio.gather(*(b.close() for b in browsers))
    return count


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=["cycles", "streams", "long", "idle", "growth", "read"])
    parser.add_argument("files", nargs="*", type=Path, help="with `read`: summarize these saved stacks, run nothing")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--workers", type=int, default=None,
                        help="gunicorn workers (WEB_CONCURRENCY); default: what gunicorn.conf.py picks")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    parser.add_argument("--idle", action="store_true", help="py-spy --idle: keep samples of waiting threads "
                        "(shows where a worker blocks, e.g. SQLite's busy wait)")
    args = parser.parse_args()
    if args.shape == "read":
        print(summarize(args.files, args.top))
        return 0
    if args.shape == "growth":
        args.clients = 1
    S.raise_fd_limit()
    workdir = S.make_workdir(False)
    fake = S.FakeModelProcess(workdir / "fake.log")
    dbs = S.Databases.create(workdir, args.postgres)
    server = None
    spies = []
    try:
        env = S.server_env(dbs, fake.base_url)
        S.migrate(env, workdir / "migrate.log")
        server = S.start_server(env, args.workers, workdir / "gunicorn.log")
        RESULTS.mkdir(parents=True, exist_ok=True)
        outputs = []
        for pid in S.worker_pids(server):
            out = RESULTS / f"profile-{args.shape}-{pid}.txt"
            outputs.append(out)
            cmd = [str(PY_SPY), "record", "--pid", str(pid), "--format", "raw", "--rate", str(args.rate),
                   "--output", str(out), "--nonblocking"]
            if args.native:
                cmd.append("--native")
            if args.idle:
                cmd.append("--idle")
            spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        cpu0 = S.cpu_seconds(S.server_pids(server))
        t0 = time.monotonic()
        count = asyncio.run(load(args.shape, server.url, dbs.app_url, args.clients, args.seconds, args.turns, fake))
        elapsed = time.monotonic() - t0
        cpu = S.cpu_seconds(S.server_pids(server)) - cpu0
        log(f"{count} units in {elapsed:.1f} s; server CPU {cpu:.2f} s ({cpu * 1000 / max(1, count):.1f} ms per unit)")
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(timeout=20)
            except subprocess.TimeoutExpired:
                spy.kill()
        if server is not None:
            server.stop()
        fake.stop()
        dbs.drop()
        S.remove_workdir(workdir)
    print(summarize([p for p in outputs if p.exists()], args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
