"""The soak: mixed load from many clients for a fixed time, on loopback, then checks.

    .venv/bin/python -m bench.soak                       # 30 minutes, 50 clients
    .venv/bin/python -m bench.soak --minutes 2           # a short check
    .venv/bin/python -m bench.soak --postgres postgresql+psycopg://postgres@127.0.0.1:55432/postgres

Each client is a browser (its own guest account) doing, at random: approve a card, reject one with a
reason, type a new message while a card waits, read a streamed reply, drop a stream halfway and
reconnect with Last-Event-ID (each token must arrive exactly once), press Stop mid-reply, reload the
page, start a new chat. Pass means: no HTTP error and no broken flow, resident memory flat, no worker
restarted, and at the end every run is completed, cancelled or paused (none queued, running or
failed). Progress and the summary go to bench/results/soak-<date>.md as the run goes.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import random
import re
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from bench import server as S
from bench.client import Browser, CycleError, HTTPError

ROOT = Path(__file__).resolve().parent.parent
MS = 1e6

ACTIONS = [  # (name, weight)
    ("approve", 30), ("reject", 12), ("message_while_paused", 8), ("stream", 18),
    ("reconnect", 12), ("stop", 6), ("reload", 10), ("new_chat", 4),
]


class Soak:
    def __init__(self, args, server, fake, out: Path):
        self.args, self.server, self.fake, self.out = args, server, fake, out
        self.counts = collections.Counter()
        self.errors: list[str] = []
        self.latency = collections.defaultdict(list)
        self.rss: list[tuple[float, float, list[float]]] = []
        self.workers0 = S.worker_pids(server)
        self.t0 = time.monotonic()
        self.rng = random.Random(args.seed)

    def write(self, text: str) -> None:
        with open(self.out, "a") as f:
            f.write(text + "\n")
        print(text, flush=True)

    def error(self, where: str, exc: BaseException | str) -> None:
        self.counts["errors"] += 1
        message = f"{time.monotonic() - self.t0:7.1f}s {where}: {exc!r}"[:400]
        if len(self.errors) < 200:
            self.errors.append(message)
        print("ERROR " + message, file=sys.stderr, flush=True)

    # -- one client ----------------------------------------------------------------------------------

    async def client(self, index: int, end: float) -> None:
        rng = random.Random(self.args.seed * 1000 + index)
        browser = Browser(self.server.url)
        try:
            await browser.open()
        except Exception as exc:
            self.error(f"client {index} open", exc)
            await browser.close()
            return
        names = [a for a, _ in ACTIONS]
        weights = [w for _, w in ACTIONS]
        try:
            while time.monotonic() < end:
                action = rng.choices(names, weights)[0]
                t0 = time.monotonic_ns()
                try:
                    await asyncio.wait_for(getattr(self, f"do_{action}")(browser, rng), timeout=120)
                    self.counts[action] += 1
                    self.latency[action].append((time.monotonic_ns() - t0) / MS)
                except (CycleError, HTTPError, asyncio.TimeoutError, AssertionError, OSError) as exc:
                    self.error(f"client {index} {action}", exc)
                    await self.recover(browser)
                await asyncio.sleep(rng.uniform(0, self.args.think))
        finally:
            await browser.close()

    async def recover(self, browser: Browser) -> None:
        """After a failure, leave no run of ours active or paused behind: start a new chat."""
        try:
            await browser.new_chat()
        except Exception as exc:
            self.error("recover", exc)

    async def do_approve(self, b: Browser, rng) -> None:
        c = await b.cycle(directive=self.pause_directive(rng), approve=True)
        self.latency["pause"].append(c.pause_ns / MS)
        self.latency["continue"].append(c.continue_ns / MS)

    async def do_reject(self, b: Browser, rng) -> None:
        await b.cycle(directive=self.pause_directive(rng), approve=False, reason="Not now, soak test.")

    async def do_message_while_paused(self, b: Browser, rng) -> None:
        run, cursor, _ = await b.send(self.pause_directive(rng))
        seen = await b.stream(run, cursor) if cursor is not None else None
        if seen is not None and (seen.error or seen.final_state != "paused"):
            raise CycleError(f"expected paused, got {seen.final_state!r} {seen.error or ''}")
        run2, cursor2, body = await b.send("bench other: never mind, do something else")
        if run2 != run:
            raise CycleError("a message typed while a card waits must resume the same run")
        if cursor2 is not None:
            seen = await b.stream(run2, cursor2)
            if seen.error or seen.final_state != "completed":
                raise CycleError(f"after the message: {seen.final_state!r} {seen.error or ''}")

    async def do_stream(self, b: Browser, rng) -> None:
        n = rng.randint(5, 40)
        run, cursor, _ = await b.send(f"bench stream n={n} rate={self.args.token_rate}")
        seen = await b.stream(run, cursor)
        if seen.error or seen.final_state != "completed" or seen.tokens != n:
            raise CycleError(f"stream: state {seen.final_state!r}, {seen.tokens}/{n} tokens {seen.error or ''}")

    async def do_reconnect(self, b: Browser, rng) -> None:
        n = rng.randint(10, 40)
        run, cursor, _ = await b.send(f"bench stream n={n} rate={self.args.token_rate}")
        first = await b.stream(run, cursor, stop_after_tokens=rng.randint(1, n - 1))
        if first.error:
            raise CycleError(f"first part: {first.error}")
        await asyncio.sleep(rng.uniform(0, 0.5))
        if first.final_state in ("completed",):  # finished before we dropped it
            if first.tokens != n:
                raise CycleError(f"reconnect: {first.tokens}/{n} tokens before completion")
            return
        rest = await b.stream(run, cursor, last_event_id=first.last_id if first.last_id is not None else cursor)
        if rest.error or rest.final_state != "completed":
            raise CycleError(f"reconnect: state {rest.final_state!r} {rest.error or ''}")
        if first.tokens + rest.tokens != n:
            raise CycleError(f"reconnect: {first.tokens} + {rest.tokens} tokens, expected {n} exactly once")

    async def do_stop(self, b: Browser, rng) -> None:
        run, cursor, _ = await b.send(f"bench stream n=200 rate={self.args.token_rate}")
        first = await b.stream(run, cursor, stop_after_tokens=rng.randint(1, 5))
        status = await b.cancel(run)
        if status not in (200, 409):  # 409: it finished before the Stop arrived
            raise HTTPError("POST cancel", status)
        rest = await b.stream(run, first.last_id or cursor)
        if rest.error or rest.final_state not in ("cancelled", "completed"):
            raise CycleError(f"after Stop: {rest.final_state!r} {rest.error or ''}")

    async def do_reload(self, b: Browser, rng) -> None:
        await b.page()

    async def do_new_chat(self, b: Browser, rng) -> None:
        await b.new_chat()
        status, _ = await b.get("/")
        if status != 200:
            raise HTTPError("GET /", status)

    @staticmethod
    def pause_directive(rng) -> str:
        return "bench pause tool=delete table=events" if rng.random() < 0.3 else "bench pause"

    # -- monitoring ----------------------------------------------------------------------------------

    async def monitor(self, end: float) -> None:
        last_counts = collections.Counter()
        while True:
            now = time.monotonic()
            mem = S.memory(self.server)
            self.rss.append((now - self.t0, mem["master"], mem["workers"]))
            done = {k: v for k, v in self.counts.items()}
            delta = sum(v for k, v in done.items() if k != "errors") - sum(
                v for k, v in last_counts.items() if k != "errors")
            last_counts = collections.Counter(done)
            self.write(f"| {(now - self.t0) / 60:5.1f} min | {', '.join(f'{x:.0f}' for x in mem['workers'])} MiB "
                       f"(master {mem['master']:.0f}) | {delta} actions in the last interval | "
                       f"{done.get('errors', 0)} errors |")
            if now >= end:
                return
            await asyncio.sleep(min(self.args.sample, max(0.1, end - now)))

    async def run(self) -> None:
        end = time.monotonic() + self.args.minutes * 60
        self.write("| time | worker RSS | throughput | errors |\n|---|---|---|---|")
        clients = []
        for i in range(self.args.clients):  # stagger the start over ~2 s
            clients.append(asyncio.create_task(self.client(i, end)))
            await asyncio.sleep(2.0 / self.args.clients)
        monitor = asyncio.create_task(self.monitor(end))
        done, pending = await asyncio.wait(clients, timeout=self.args.minutes * 60 + 150)
        for task in pending:
            task.cancel()
            self.error("client", "still running 150 s after the end")
        await monitor


def final_runs(dbs: S.Databases, settle_s: float) -> tuple[dict, list]:
    """Wait for in-flight runs to settle, then count runs by status."""
    engine = sa.create_engine(dbs.app_url)
    deadline = time.monotonic() + settle_s
    while True:
        with engine.connect() as conn:
            by_status = dict(conn.execute(sa.text("select status, count(*) from runs group by status")).all())
            stuck = conn.execute(sa.text(
                "select id, status, error from runs where status in ('queued', 'running', 'failed') limit 10")).all()
        if not any(s in by_status for s in ("queued", "running")) or time.monotonic() > deadline:
            break
        time.sleep(1)
    engine.dispose()
    return by_status, [tuple(r) for r in stuck]


SERVER_ERROR_RE = re.compile(r'HTTP/1\.[01]" 5\d\d ')  # a 5xx in gunicorn's access log


def log_problems(path: Path, workers: int) -> list[str]:
    """Tracebacks, errors and worker (re)starts in the server log, beyond the first boot."""
    problems, boots = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if "Booting worker" in line:
            boots += 1
            if boots <= workers:
                continue
        if any(marker in line for marker in ("Traceback", "[CRITICAL]", "WORKER TIMEOUT", " ERROR ",
                                             "[ERROR]", "Booting worker")) or SERVER_ERROR_RE.search(line):
            problems.append(line[:300])
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--postgres", metavar="URL", help="an admin URL; the soak creates and drops its own databases")
    parser.add_argument("--workers", type=int, default=None,
                        help="gunicorn workers (WEB_CONCURRENCY); default: what gunicorn.conf.py picks")
    parser.add_argument("--token-rate", type=float, default=50.0)
    parser.add_argument("--think", type=float, default=0.5, help="max seconds a client waits between actions")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between memory samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, help="default bench/results/soak-<date>.md")
    args = parser.parse_args(argv)
    out = args.output or ROOT / "bench" / "results" / f"soak-{datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.soak " + " ".join(argv if argv is not None else sys.argv[1:])

    S.raise_fd_limit()
    hw = S.hardware()
    workdir = S.make_workdir(False)
    fake = S.FakeModelProcess(workdir / "fake.log")
    dbs = S.Databases.create(workdir, args.postgres)
    server = None
    soak = None
    started = datetime.now()
    try:
        env = S.server_env(dbs, fake.base_url)
        S.migrate(env, workdir / "migrate.log")
        server = S.start_server(env, args.workers, workdir / "gunicorn.log")
        with open(out, "w") as f:
            f.write(f"# Soak {started:%Y-%m-%d %H:%M} — `{command.strip()}`\n\n"
                    f"{hw['nproc']} CPUs ({hw['cpu']}), {hw['memory']}; Python {hw['python']}, gunicorn "
                    f"{hw['gunicorn']} ({server.worker_count} gevent workers); {dbs.version()}; "
                    f"{args.clients} clients, think time 0-{args.think} s, model {args.token_rate} tokens/s.\n\n")
        soak = Soak(args, server, fake, out)
        asyncio.run(soak.run())
        by_status, stuck = final_runs(dbs, settle_s=90)
        workers_end = S.worker_pids(server)
    except Exception as exc:
        traceback.print_exc()
        if soak:
            soak.error("soak", exc)
        by_status, stuck, workers_end = {}, [], []
    finally:
        if server is not None:
            server.stop()
        fake.stop()
        dbs.drop()
    workers = getattr(server, "worker_count", 2) if server is not None else 2
    problems = log_problems(workdir / "gunicorn.log", workers) if (workdir / "gunicorn.log").exists() else []
    S.remove_workdir(workdir)
    if soak is None:
        return 1
    ok = summarize(soak, by_status, stuck, workers_end, problems, started)
    return 0 if ok else 1


def summarize(soak: Soak, by_status: dict, stuck: list, workers_end: list, problems: list, started) -> bool:
    rss = soak.rss
    warm = [r for r in rss if r[0] >= 60] or rss
    first, last = warm[0], rss[-1]
    peak = [max(r[2][i] for r in rss if len(r[2]) > i) for i in range(len(rss[0][2]))] if rss else []
    growth = [(last[2][i] - first[2][i]) for i in range(min(len(first[2]), len(last[2])))]
    flat = all(g <= max(10.0, 0.10 * first[2][i]) for i, g in enumerate(growth))
    unsettled = {k: v for k, v in by_status.items() if k not in ("completed", "cancelled", "paused")}
    restarted = sorted(set(soak.workers0) ^ set(workers_end)) if workers_end else ["unknown"]
    total = sum(v for k, v in soak.counts.items() if k != "errors")
    ok = not soak.counts["errors"] and flat and not unsettled and not restarted and not problems

    def p(name, q):
        values = sorted(soak.latency.get(name, []))
        return values[max(0, min(len(values) - 1, int(q / 100 * len(values))))] if values else float("nan")

    lines = [
        "",
        f"## Summary — {'PASS' if ok else 'FAIL'}",
        "",
        f"- Duration {soak.args.minutes:g} min, {soak.args.clients} clients; {total:,} actions: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(soak.counts.items()) if k != "errors") + ".",
        f"- Errors (HTTP or broken flow): **{soak.counts['errors']}**"
        + ("" if not soak.errors else "; first: " + "; ".join(soak.errors[:5])),
        f"- Latency p50 / p95: pause {p('pause', 50):.0f} / {p('pause', 95):.0f} ms, continue "
        f"{p('continue', 50):.0f} / {p('continue', 95):.0f} ms, reload {p('reload', 50):.0f} / {p('reload', 95):.0f} ms.",
        f"- Worker RSS (MiB) after the first minute {', '.join(f'{x:.0f}' for x in first[2])}; at the end "
        f"{', '.join(f'{x:.0f}' for x in last[2])}; max {', '.join(f'{x:.0f}' for x in peak)}; master "
        f"{first[1]:.0f} -> {last[1]:.0f}. Flat (≤ 10 % or 10 MiB growth): **{'yes' if flat else 'no'}**.",
        f"- Workers restarted: **{'none' if not restarted else restarted}**.",
        f"- Runs at the end, by status: {dict(sorted(by_status.items()))}; not completed/cancelled/paused: "
        f"**{unsettled or 'none'}**" + (f" (e.g. {stuck[:3]})" if unsettled else "") + ".",
        f"- Server log: **{len(problems)}** tracebacks / errors / worker restarts"
        + ("" if not problems else "; first: " + " | ".join(problems[:3])) + ".",
    ]
    soak.write("\n".join(lines))
    return ok


if __name__ == "__main__":
    sys.exit(main())
