"""The benchmark: one command starts the fake model and the app (gunicorn, production config) on
127.0.0.1, drives it over HTTP like the browser does, stops everything and prints a table.

    .venv/bin/python -m bench.run             # the full run (about 13 minutes)
    .venv/bin/python -m bench.run --quick     # a smoke run (under 2 minutes)
    .venv/bin/python -m bench.run --postgres postgresql+psycopg://postgres@127.0.0.1:55432/postgres

See bench/README.md for what each number means and how it is measured.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench import server as S
from bench.client import Browser, CycleError, HTTPError
from bench.fakemodel import ARRIVAL_RE, TOKEN_RE

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MS = 1e6


def pct(values, p: float):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def fmt(value, unit: str = "ms", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f} {unit}".strip()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# What each run does. Every phase is bounded by its own count and time cap; the overall budget
# (--minutes) is a safety net that skips what is left.
PLAN = {
    "full": dict(baseline=[1, 100, 1000], sequential=30, latency=200, cross=20, throughput_s=30,
                 streams=[1, 100, 1000], stream_cap_s=150, capacity=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000],
                 capacity_window_s=8, open_streams=2500, open_cap_s=150, count_cycles=20, count_streams=10,
                 growth_turns=1000, growth_s=300, budget_min=14.5),
    "quick": dict(baseline=[1, 50], sequential=5, latency=20, cross=3, throughput_s=4,
                  streams=[1, 50], stream_cap_s=20, capacity=[2, 8], capacity_window_s=3, open_streams=100,
                  open_cap_s=20, count_cycles=10, count_streams=5, growth_turns=30, growth_s=10, budget_min=2.0),
}


@dataclass
class Row:
    section: str
    name: str
    result: str
    target: str = ""
    status: str = "info"   # pass | MISS ... | info | n/a


@dataclass
class Bench:
    args: argparse.Namespace
    server: object
    fake: S.FakeModelProcess
    dbs: S.Databases
    env: dict
    workdir: Path
    rows: list[Row] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    browsers: list[Browser] = field(default_factory=list)
    deadline: float = 0.0
    plan: dict = field(default_factory=dict)

    def row(self, *args, **kwargs) -> None:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        log(f"  {row.name}: {row.result}  [{row.status}]")

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    # -- browsers ------------------------------------------------------------------------------------

    async def get_browsers(self, n: int, timeout: float = 120.0) -> list[Browser]:
        """n browsers, each signed in to an account of its own and with a chat (created as needed,
        100 at a time). The accounts are made beforehand with a cheap password hash: a real one each
        (~130 ms of CPU) would make the held-open phase's 2,500 sign-ins a password-hashing bench."""
        missing = n - len(self.browsers)
        if missing > 0:
            gate = asyncio.Semaphore(100)
            emails = await asyncio.to_thread(S.make_accounts, self.dbs.app_url, missing)

            async def make(email):
                async with gate:
                    return await Browser(self.server.url).open(email)

            made = await asyncio.wait_for(asyncio.gather(*(make(e) for e in emails),
                                                         return_exceptions=True), timeout)
            failed = [m for m in made if isinstance(m, BaseException)]
            self.browsers.extend(m for m in made if not isinstance(m, BaseException))
            if failed:
                log(f"  {len(failed)} browsers failed to open: {failed[0]!r}")
        return self.browsers[:n]

    async def fresh_chats(self, browsers: list[Browser]) -> None:
        gate = asyncio.Semaphore(100)

        async def one(b):
            async with gate:
                await b.new_chat()
        await asyncio.gather(*(one(b) for b in browsers))

    async def close_browsers(self) -> None:
        await asyncio.gather(*(b.close() for b in self.browsers), return_exceptions=True)
        self.browsers.clear()

    # -- readings ------------------------------------------------------------------------------------

    def cpu(self) -> float:
        return S.cpu_seconds(S.server_pids(self.server))

    def model_records(self) -> list:
        return self.fake.stats()["records"]


class Meter:
    """CPU seconds spent over an interval by: the server (gunicorn master + workers), the PostgreSQL
    backends serving our databases (if local), the fake model, this load generator, and everything
    else on the machine (other people's processes would show up there)."""

    def __init__(self, b: "Bench"):
        self.b = b
        self.start = self._read()

    def _read(self) -> dict:
        b = self.b
        backends = {pid: S.cpu_seconds([pid]) for pid in S.pg_backend_pids(b.dbs.names)}
        return {"server": b.cpu(), "db": backends,
                "model": b.fake.cpu_seconds(), "loadgen": S.cpu_seconds([os.getpid()]),
                "machine": S.machine_busy_seconds(), "t": time.monotonic()}

    def stop(self) -> dict:
        end = self._read()
        # Backends come and go with the pool: count what the ones alive at the end spent since the
        # start (or since they began); a backend that exited meanwhile is missed (an undercount).
        db = sum(cpu - self.start["db"].get(pid, 0.0) for pid, cpu in end["db"].items())
        end["db"], self.start["db"] = db, 0.0
        d = {k: end[k] - self.start[k] for k in end}
        d["other"] = max(0.0, d["machine"] - d["server"] - d["db"] - d["model"] - d["loadgen"])
        return d

    @staticmethod
    def describe(d: dict) -> str:
        t = d["t"] or 1
        parts = [f"server {d['server'] / t * 100:.0f} %"]
        if d["db"]:
            parts.append(f"PostgreSQL {d['db'] / t * 100:.0f} %")
        parts += [f"fake model {d['model'] / t * 100:.0f} %", f"load generator {d['loadgen'] / t * 100:.0f} %",
                  f"other processes {d['other'] / t * 100:.0f} %"]
        return "CPU " + ", ".join(parts) + " of one core"


class LoopLag:
    """How late the load generator's own event loop runs (it shares the 2 cores with the server)."""

    def __init__(self):
        self.samples: list[float] = []
        self.task = None

    async def _run(self):
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.05)
            self.samples.append((time.monotonic() - start - 0.05) * 1000)

    def __enter__(self):
        self.samples = []
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc):
        self.task.cancel()

    @property
    def p95(self):
        return pct(self.samples, 95)


# ---------------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------------

async def phase_warmup(b: Bench) -> None:
    log("warm-up")
    (browser,) = await b.get_browsers(1)
    for _ in range(10):
        await browser.cycle()
    await browser.page()
    run, cursor, _ = await browser.send(f"bench stream n=10 rate={b.args.token_rate}")
    await browser.stream(run, cursor)
    await browser.new_chat()
    b.model_records()


async def phase_baseline(b: Bench, levels: list[int]) -> None:
    """The openai SDK reading the fake model directly: no app in between."""
    import httpx2
    import openai

    log("direct baseline (openai SDK -> fake model)")
    client = openai.AsyncOpenAI(
        base_url=b.fake.base_url, api_key="bench", max_retries=0, timeout=120,
        http_client=openai.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(max_connections=4000, max_keepalive_connections=4000)))

    async def turn(text: str) -> float:
        t0 = time.monotonic_ns()
        stream = await client.responses.create(model="fake-model", input=text, stream=True)
        async with stream:
            async for _ in stream:
                pass
        return (time.monotonic_ns() - t0) / MS

    pause = [await turn("bench pause") for _ in range(b.plan["sequential"])]
    text = [await turn("bench other") for _ in range(b.plan["sequential"])]
    b.data["baseline_pause_ms"] = statistics.median(pause)
    b.data["baseline_text_ms"] = statistics.median(text)
    b.row("baseline", "Model alone: tool-call turn (what a pause waits for), median",
          fmt(statistics.median(pause), digits=2))
    b.row("baseline", "Model alone: one-word text turn (what a continue waits for), median",
          fmt(statistics.median(text), digits=2))

    async def one_stream(n_tokens: int) -> dict:
        t0 = time.monotonic_ns()
        out = {"ttft": None, "own": None, "lags": []}
        stream = await client.responses.create(
            model="fake-model", input=f"bench stream n={n_tokens} rate={b.args.token_rate}", stream=True)
        async with stream:
            async for event in stream:
                if event.type != "response.output_text.delta":
                    continue
                now = time.monotonic_ns()
                stamps = TOKEN_RE.findall(event.delta)
                if out["ttft"] is None:
                    out["ttft"] = (now - t0) / MS
                    if (arrival := ARRIVAL_RE.search(event.delta)) and stamps:
                        out["own"] = (int(stamps[0]) - int(arrival.group(1))) / MS
                out["lags"].extend((now - int(s)) / MS for s in stamps)
        return out

    for level in levels:
        with LoopLag() as lag:
            if level == 1:
                results = [await one_stream(b.args.tokens) for _ in range(b.plan["sequential"])]
            else:
                results = await asyncio.gather(*(one_stream(b.args.tokens) for _ in range(level)),
                                               return_exceptions=True)
        ok = [r for r in results if isinstance(r, dict) and r["ttft"] is not None]
        ttft = [r["ttft"] for r in ok]
        lags = [x for r in ok for x in r["lags"]]
        b.data.setdefault("baseline_ttft", {})[level] = {"p50": pct(ttft, 50), "p95": pct(ttft, 95)}
        b.data.setdefault("baseline_lag", {})[level] = {"p50": pct(lags, 50), "p95": pct(lags, 95)}
        b.row("baseline", f"Model alone at {level:,} concurrent streams: first token p50 / p95; relay lag p50 / p95",
              f"{fmt(pct(ttft, 50), digits=2)} / {fmt(pct(ttft, 95), digits=2)}; "
              f"{fmt(pct(lags, 50), digits=2)} / {fmt(pct(lags, 95), digits=2)}"
              + (f" ({len(results) - len(ok)} failed)" if len(ok) < len(results) else "")
              + f" (load generator loop lag p95 {fmt(lag.p95)})")
    await client.close()


async def phase_latency(b: Bench, cycles: int, cross: int) -> None:
    log(f"pause/continue latency, 1 client, {cycles} cycles")
    (browser,) = await b.get_browsers(1)
    await browser.new_chat()
    b.model_records()
    pauses, continues, streamless = [], [], 0
    meter = Meter(b)
    for i in range(cycles):
        if i and i % 10 == 0:
            await browser.new_chat()  # sessions of 10 turns: growth is measured on its own, later
        c = await browser.cycle()
        pauses.append(c.pause_ns / MS)
        continues.append(c.continue_ns / MS)
        streamless += c.streamless
    usage = meter.stop()
    cpu = usage["server"] * 1000 / cycles
    records = b.model_records()
    model = {kind: statistics.median([(e - s) / MS for s, e, k in records if k == kind] or [0])
             for kind in ("pause", "continue")}
    p50p, p50c = statistics.median(pauses), statistics.median(continues)
    b.data.update(pause_p50=p50p, continue_p50=p50c, latency_cpu_ms=cpu)
    b.row("latency", "Pause latency (message in -> card + paused state out), median / p95",
          f"{fmt(p50p)} / {fmt(pct(pauses, 95))} (model's own share {fmt(model['pause'], digits=2)})",
          "≤ 5 ms median", judge(p50p, 5))
    b.row("latency", "Continue latency (approval in -> completed state out), median / p95",
          f"{fmt(p50c)} / {fmt(pct(continues, 95))} (model's own share {fmt(model['continue'], digits=2)})",
          "≤ 8 ms median", judge(p50c, 8))
    if streamless:
        b.row("latency", "Replies that came without a stream (run already moved on)", str(streamless))
    b.row("latency", "Server CPU per cycle, 1 client (sequential)", fmt(cpu)
          + (f" + PostgreSQL {usage['db'] * 1000 / cycles:.1f} ms" if usage["db"] else "")
          + f" ({Meter.describe(usage)})")

    if cross:
        log(f"pause latency with the stream on a new connection, {cross} cycles")
        cross_pauses = []
        await browser.new_chat()
        for i in range(cross):
            if i and i % 10 == 0:
                await browser.new_chat()
            cross_pauses.append((await browser.cycle(fresh_stream=True)).pause_ns / MS)
        slow = sum(1 for x in cross_pauses if x > 200)
        b.row("latency", "Pause latency, stream opened on a new connection (may reach the other worker), "
              "median / p95 / share over 200 ms",
              f"{fmt(statistics.median(cross_pauses))} / {fmt(pct(cross_pauses, 95))} / {slow}/{cross}")


async def phase_throughput(b: Bench, clients: int, seconds: float) -> None:
    log(f"throughput: {clients} clients for {seconds:.0f} s")
    browsers = await b.get_browsers(clients)
    await b.fresh_chats(browsers)
    done: list[tuple[float, float, float]] = []
    errors: list[str] = []
    start = time.monotonic() + 2.0          # 2 s ramp-up not measured
    end = start + seconds
    stop_at = end + 30.0

    async def client(browser: Browser):
        n = 0
        while time.monotonic() < end:
            if n and n % 10 == 0:
                await browser.new_chat()
            try:
                c = await asyncio.wait_for(browser.cycle(), timeout=max(1.0, stop_at - time.monotonic()))
                done.append((time.monotonic(), c.pause_ns / MS, c.continue_ns / MS))
            except (CycleError, HTTPError, asyncio.TimeoutError) as exc:
                errors.append(repr(exc))
                await asyncio.sleep(0.2)
            n += 1

    async def window():
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        meter = Meter(b)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        return meter.stop()

    with LoopLag() as lag:
        tasks = [asyncio.create_task(client(br)) for br in browsers]
        usage = await window()
        await asyncio.gather(*tasks)
    server_cpu = usage["server"]
    measured = [d for d in done if start <= d[0] <= end]
    rate = len(measured) / seconds
    cpu_ms = server_cpu * 1000 / max(1, len(measured))
    b.data.setdefault("throughput", {})[clients] = {"rate": rate, "cpu_ms": cpu_ms, "errors": len(errors)}
    pauses = [d[1] for d in measured]
    conts = [d[2] for d in measured]
    b.row("throughput", f"Cycles per second, {clients} clients",
          f"{rate:.1f}/s ({len(errors)} errors; pause p50 {fmt(pct(pauses, 50))}, "
          f"continue p50 {fmt(pct(conts, 50))}, p95 {fmt(pct(conts, 95))})",
          "≥ 100/s", judge(rate, 100, higher=True))
    b.row("throughput", f"Server CPU per cycle, {clients} clients",
          f"{fmt(cpu_ms)}" + (f" + PostgreSQL {usage['db'] * 1000 / max(1, len(measured)):.1f} ms" if usage["db"] else "")
          + f" ({Meter.describe(usage)}; load generator loop lag p95 {fmt(lag.p95)})",
          "≤ 8 ms", judge(cpu_ms, 8))
    if errors:
        b.data.setdefault("errors", []).extend(errors[:5])


async def stream_wave(b: Bench, browsers: list[Browser], tokens: int, *, window_s: float | None = None,
                      held_within_s: float = 2.0) -> dict:
    """Every browser posts a streaming message at once and reads its reply."""
    directive = f"bench stream n={tokens} rate={b.args.token_rate}"
    if b.args.paragraph_every:
        directive += f" para={b.args.paragraph_every}"
    runs: dict[Browser, str] = {}

    async def one(browser: Browser):
        t0 = time.monotonic_ns()
        run, cursor, body = await browser.send(directive)
        runs[browser] = run
        if cursor is None:
            return t0, None  # the run ended before the reply rendered: the page gets no stream
        stop = time.monotonic_ns() + int(window_s * 1e9) if window_s else None
        seen = await browser.stream(run, cursor, stop_after_ns=stop)
        return t0, seen

    results = await asyncio.gather(*(one(br) for br in browsers), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException) and r[1] is not None]
    streamless = sum(1 for r in results if not isinstance(r, BaseException) and r[1] is None)
    errors = [r for r in results if isinstance(r, BaseException)] + [s.error for _, s in ok if s.error]
    overhead, ttft, lags, held, to_model, first_relay = [], [], [], 0, [], []
    for t0, seen in ok:
        if not seen.first_token_recv_ns:
            continue
        app_ttft = (seen.first_token_recv_ns - t0) / MS
        own = (seen.first_token_emit_ns - seen.arrival_ns) / MS if seen.arrival_ns else 0.0
        if seen.arrival_ns:
            to_model.append((seen.arrival_ns - t0) / MS)          # message posted -> model request arrives
            first_relay.append((seen.first_token_recv_ns - seen.first_token_emit_ns) / MS)  # model -> browser
        ttft.append(app_ttft)
        overhead.append(app_ttft - own)
        lags.extend(x / MS for x in seen.token_lags_ns)
        if app_ttft <= held_within_s * 1000:
            held += 1
    return {"ttft": ttft, "overhead": overhead, "lags": lags, "errors": errors, "held": held,
            "to_model": to_model, "first_relay": first_relay,
            "runs": runs, "n": len(browsers), "results": ok, "streamless": streamless}


async def cancel_runs(b: Bench, runs: dict, per_request_s: float = 30, total_s: float = 120) -> None:
    gate = asyncio.Semaphore(100)

    async def one(browser, run):
        async with gate:
            try:
                await asyncio.wait_for(browser.cancel(run), per_request_s)
            except Exception:
                pass
    try:
        await asyncio.wait_for(asyncio.gather(*(one(br, run) for br, run in runs.items() if run)), total_s)
    except asyncio.TimeoutError:
        log("  some Stop requests did not get through in time")


def wait_until_idle(b: Bench, timeout: float) -> bool:
    """Until no run is queued or running in the app's database (so one phase does not leak into the next)."""
    import sqlalchemy as sa
    engine = sa.create_engine(b.dbs.app_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                active = conn.execute(sa.text(
                    "select count(*) from runs where status in ('queued', 'running')")).scalar()
            if not active:
                return True
            if time.monotonic() > deadline:
                log(f"  {active} runs still active")
                return False
            time.sleep(0.5)
    finally:
        engine.dispose()


async def phase_streams(b: Bench, levels: list[int]) -> None:
    for level in levels:
        if b.time_left() < 10:
            b.row("streams", f"First-token overhead at {level:,} streams", "not measured (time budget)", status="n/a")
            continue
        log(f"streaming: {level} concurrent streams of {b.args.tokens} tokens at {b.args.token_rate}/s")
        browsers = await b.get_browsers(level)
        await b.fresh_chats(browsers)
        meter = Meter(b)
        with LoopLag() as lag:
            if level == 1:
                waves = [await stream_wave(b, browsers, b.args.tokens) for _ in range(b.plan["sequential"])]
                wave = {k: [x for w in waves for x in w[k]]
                        for k in ("ttft", "overhead", "lags", "errors", "to_model", "first_relay")}
                wave["streamless"] = sum(w["streamless"] for w in waves)
            else:
                wave = await asyncio.wait_for(stream_wave(b, browsers, b.args.tokens),
                                              timeout=min(b.plan["stream_cap_s"], max(10, b.time_left())))
        usage = meter.stop()
        ov, lags = wave["overhead"], wave["lags"]
        b.data.setdefault("streams", {})[level] = {
            "overhead_p50": pct(ov, 50), "overhead_p95": pct(ov, 95),
            "lag_p50": pct(lags, 50), "lag_p95": pct(lags, 95), "errors": len(wave["errors"])}
        target, status = "", "info"
        if level == 1:
            target, status = "≤ 3 ms p50", judge(pct(ov, 50), 3)
        elif level == 1000:
            target, status = "≤ 25 ms p95", judge(pct(ov, 95), 25)
        b.row("streams", f"First-token overhead (app minus model) at {level:,} streams, p50 / p95",
              f"{fmt(pct(ov, 50))} / {fmt(pct(ov, 95))} (p50 split: message -> model request "
              f"{fmt(pct(wave['to_model'], 50))}, first token model -> browser {fmt(pct(wave['first_relay'], 50))}; "
              f"{len(wave['errors'])} errors, {len(ov)} measured"
              + (f"; {wave['streamless']} replies came without a stream: the run had finished before the POST's "
                 "response rendered, so the page never shows that reply live" if wave["streamless"] else "") + ")",
              target, status)
        b.row("streams", f"Token relay lag at {level:,} streams, p50 / p95",
              f"{fmt(pct(lags, 50))} / {fmt(pct(lags, 95))} ({Meter.describe(usage)}, over {usage['t']:.1f} s; "
              f"load generator loop lag p95 {fmt(lag.p95)})")
        if wave["errors"]:
            b.data.setdefault("errors", []).extend(repr(e) for e in wave["errors"][:5])


async def phase_capacity(b: Bench, levels: list[int], window_s: float) -> None:
    """The most concurrent streams, all receiving tokens, with p95 relay lag under 100 ms."""
    best, verdict = 0, ""
    tokens = int(b.args.token_rate * (window_s + 4))
    for level in levels:
        if b.time_left() < window_s + 10:
            verdict = verdict or f"stopped before {level} streams (time budget)"
            break
        log(f"capacity: {level} streams for {window_s:.0f} s")
        browsers = await b.get_browsers(level)
        await b.fresh_chats(browsers)
        meter = Meter(b)
        with LoopLag() as lag:
            wave = await stream_wave(b, browsers, tokens, window_s=window_s)
        usage = meter.stop()
        await cancel_runs(b, wave["runs"])
        await asyncio.sleep(1.0)
        lags = wave["lags"]
        p95 = pct(lags, 95)
        ok = not wave["errors"] and wave["held"] == level and p95 is not None and p95 < 100 \
            and not wave["streamless"]
        b.data.setdefault("capacity", {})[level] = {"held": wave["held"], "p95": p95, "errors": len(wave["errors"])}
        log(f"  {level}: {wave['held']} streaming within 2 s, relay lag p50 {fmt(pct(lags, 50))}, p95 {fmt(p95)}, "
            f"{len(wave['errors'])} errors, loop lag p95 {fmt(lag.p95)}; {Meter.describe(usage)}")
        if not ok:
            verdict = (f"at {level}: {wave['held']}/{level} streams got tokens within 2 s, "
                       f"relay lag p95 {fmt(p95)}, {len(wave['errors'])} errors")
            break
        best = level
    b.data["capacity_best"] = best
    b.row("capacity", f"Most concurrent streams all receiving tokens ({b.args.token_rate}/s each), p95 relay lag < 100 ms",
          f"{best:,} (next level failed: {verdict})" if verdict else f"≥ {best:,} (highest level tried)",
          "≥ 2,000", judge(best, 2000, higher=True))


OPEN_STREAMERS = 8  # clients streaming replies while the quiet streams are held
SIGNIN_STREAMERS, SIGNIN_PEOPLE, SIGNIN_TOKENS = 8, 20, 150  # replies of 3 s at 50 tokens/s


async def phase_signins(b: Bench) -> None:
    """A few replies stream while 20 people sign up at once, each with a real password hash (~130 ms
    of CPU): the relay lag the streams see meanwhile. A hash run on a gevent worker's event loop
    stalls every stream of that worker for as long (app/native_threads.py)."""
    log(f"sign-ins: {SIGNIN_STREAMERS} streams while {SIGNIN_PEOPLE} people sign up")
    streamers = await b.get_browsers(SIGNIN_STREAMERS)
    alone = await stream_wave(b, streamers, SIGNIN_TOKENS)

    async def arrive() -> float:
        t0 = time.monotonic_ns()
        browser = await Browser(b.server.url).open()
        await browser.close()
        return (time.monotonic_ns() - t0) / MS

    wave = asyncio.create_task(stream_wave(b, streamers, SIGNIN_TOKENS))
    await asyncio.sleep(0.5)  # the replies are streaming
    arrivals = await asyncio.gather(*(arrive() for _ in range(SIGNIN_PEOPLE)), return_exceptions=True)
    during = await wave
    signed_up = [a for a in arrivals if not isinstance(a, BaseException)]
    errors = len(arrivals) - len(signed_up) + len(during["errors"])
    b.row("streams", f"Token relay lag of {SIGNIN_STREAMERS} streams, p50 / p95 / max: alone, then while "
          f"{SIGNIN_PEOPLE} people sign up at once",
          f"{fmt(pct(alone['lags'], 50))} / {fmt(pct(alone['lags'], 95))} / {fmt(max(alone['lags'], default=None))}"
          f" -> {fmt(pct(during['lags'], 50))} / {fmt(pct(during['lags'], 95))} / "
          f"{fmt(max(during['lags'], default=None))}; sign-up (page, form, first chat) p50 / max "
          f"{fmt(pct(signed_up, 50))} / {fmt(max(signed_up, default=None))}; {errors} errors",
          "p95 < 100 ms", judge(pct(during["lags"], 95) or 1e9, 100) if not errors else "MISS (errors)")


async def probe_pause(b: Bench, probe: Browser, timeout: float) -> tuple[float | None, str]:
    """One message from an extra client while the server is loaded: how long until its card?"""
    t0 = time.monotonic_ns()
    run = None
    try:
        run, cursor, _ = await asyncio.wait_for(probe.send("bench pause"), timeout)
        left = max(0.5, timeout - (time.monotonic_ns() - t0) / 1e9)
        seen = await asyncio.wait_for(probe.stream(run, cursor), left)
        if seen.final_state == "paused":
            return (seen.state_ns - t0) / MS, ""
        return None, f"ended {seen.final_state or 'without a state'}"
    except asyncio.TimeoutError:
        return None, f"no card within {timeout:.0f} s (its run waits for a free executor thread)"
    except Exception as exc:
        return None, f"failed: {exc!r}"[:120]
    finally:
        if run:
            try:
                await probe.cancel(run)
            except Exception:
                pass


async def phase_open_streams(b: Bench, count: int) -> None:
    """Hold `count` open, quiet streams: each client's run is paused on a card and its page keeps the
    run's stream open (`hold=1`), as a tab does while a person decides. Memory per stream, the CPU
    the server spends while they wait, and a probe client's latency meanwhile."""
    log(f"open streams: {count} quiet streams")
    idle = S.memory(b.server)
    cpu_idle0 = b.cpu()
    await asyncio.sleep(3)
    cpu_idle = (b.cpu() - cpu_idle0) / 3
    browsers = await b.get_browsers(count)
    await b.fresh_chats(browsers)
    probe = Browser(b.server.url)
    await probe.open()
    b.fake.drain(False)
    current, peak, errors = 0, 0, []
    opened_browsers: set = set()
    runs: dict = {}
    all_open = asyncio.Event()

    def on_open():
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        if current >= count:
            all_open.set()

    sending = asyncio.Semaphore(50)

    async def hold(browser: Browser):
        nonlocal current
        opened = False

        def opened_now():
            nonlocal opened
            opened = True
            opened_browsers.add(browser)
            on_open()
        try:
            async with sending:  # people arrive over a minute, not in one instant (the 1,000-stream wave is the burst)
                run, cursor, _ = await browser.send("bench pause")
            runs[browser] = run
            seen = await browser.stream(run, cursor, on_open=opened_now, hold=True)
            if seen.error:
                errors.append(seen.error)
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            if opened:
                current -= 1

    t0 = time.monotonic()
    tasks = [asyncio.create_task(hold(br)) for br in browsers]
    try:
        await asyncio.wait_for(all_open.wait(), timeout=min(b.plan["open_cap_s"], max(10, b.time_left() - 30)))
    except asyncio.TimeoutError:
        pass
    open_s = time.monotonic() - t0
    log(f"  {current} streams open at once after {open_s:.1f} s")
    await asyncio.sleep(2)
    held, held_count = S.memory(b.server), current
    meter = Meter(b)
    await asyncio.sleep(4)
    usage = meter.stop()
    probe_ms, probe_note = await probe_pause(b, probe, timeout=8.0)
    # While they stay open, a few more clients stream replies: is the relay still fast?
    streamers = [await Browser(b.server.url).open() for _ in range(OPEN_STREAMERS)]
    wave = await stream_wave(b, streamers, b.args.tokens)
    await asyncio.gather(*(s.close() for s in streamers), return_exceptions=True)
    still_open = current
    lag_p95 = pct(wave["lags"], 95)
    delta = sum(held["workers"]) - sum(idle["workers"])
    per_stream_kib = delta * 1024 / max(1, held_count)
    b.data["open_streams"] = {"open": held_count, "peak": peak, "per_stream_kib": per_stream_kib,
                              "open_s": open_s, "errors": errors[:5]}
    b.row("memory", f"Resident memory per open stream ({held_count:,} of {count:,} quiet streams open at once "
          f"after {open_s:.0f} s)",
          f"{per_stream_kib:.0f} KiB (workers {', '.join(f'{x:.0f}' for x in idle['workers'])} -> "
          f"{', '.join(f'{x:.0f}' for x in held['workers'])} MiB)")
    b.row("memory", f"Server CPU while {held_count:,} quiet streams wait (no tokens flowing)",
          f"{Meter.describe(usage)} (idle server: {cpu_idle * 100:.0f} %); a probe client's pause "
          f"latency meanwhile: {fmt(probe_ms) if probe_ms else probe_note}")
    total = still_open + OPEN_STREAMERS
    relayed = not wave["errors"] and not wave["streamless"] and lag_p95 is not None and lag_p95 < 100
    b.row("capacity", f"Open streams held at once while {OPEN_STREAMERS} of them stream replies "
          f"({b.args.token_rate}/s each), p95 relay lag < 100 ms",
          f"{total:,} open ({still_open:,} quiet, each waiting on a card, + {OPEN_STREAMERS} streaming): relay "
          f"lag p50 / p95 {fmt(pct(wave['lags'], 50))} / {fmt(lag_p95)}, first-token overhead p50 "
          f"{fmt(pct(wave['overhead'], 50))}, {len(wave['errors'])} errors",
          "≥ 2,000", judge(total, 2000, higher=True) if relayed else "MISS (relay lag or errors)")
    t1 = time.monotonic()
    # Teardown, bounded: give up on the streams that never opened (their sockets wait in the listen
    # backlog and would keep Stop requests from getting in), let the silent model answer, stop every
    # run, then wait for the database to show none active.
    for browser, task in zip(browsers, tasks):
        if browser not in opened_browsers:
            task.cancel()
    b.fake.drain()
    await cancel_runs(b, runs, per_request_s=15, total_s=60)
    done, pending = await asyncio.wait(tasks, timeout=30)
    for task in pending:
        task.cancel()
    settled = await asyncio.to_thread(wait_until_idle, b, 90)
    log(f"  teardown {time.monotonic() - t1:.1f} s ({len(pending)} streams still open were dropped; "
        f"{'no run active' if settled else 'runs still active'})")
    await probe.close()
    if errors or held_count < count:
        kinds = collections.Counter(e.split("(")[0].split(":")[0] for e in errors)
        b.row("memory", f"Quiet streams that did not open ({count:,} asked for)",
              f"{count - held_count:,} not open at once; {len(errors):,} ended in an error "
              f"({', '.join(f'{k} {v}' for k, v in kinds.most_common(3)) or 'none'}) — a request the "
              "worker never picks up times out on the client after 60 s")


async def phase_db_and_growth(b: Bench, turns: int, budget_s: float) -> None:
    """On the counting server: statements per cycle and per streamed turn; then one session's cost
    from turn 1 to turn N."""
    server = b.server
    b.fake.drain()
    await asyncio.to_thread(wait_until_idle, b, 60)
    (browser,) = await b.get_browsers(1)
    await browser.new_chat()

    def diff(after, before):
        return {k: after.get(k, 0) - before.get(k, 0) for k in after}

    log("database statements per turn")
    await asyncio.sleep(0.6)
    c0, pg0 = server.counts(), b.dbs.pg_stats()
    n_cycles, n_streams = b.plan["count_cycles"], b.plan["count_streams"]
    for _ in range(n_cycles):
        await browser.cycle()
    await asyncio.sleep(0.6)
    c1, pg1 = server.counts(), b.dbs.pg_stats()
    per_cycle = {k: v / n_cycles for k, v in diff(c1, c0).items() if v}
    await browser.new_chat()
    await asyncio.sleep(0.6)
    c2 = server.counts()
    for _ in range(n_streams):
        run, cursor, _ = await browser.send(f"bench stream n=20 rate={b.args.token_rate}")
        await browser.stream(run, cursor)
    await asyncio.sleep(0.6)
    c3 = server.counts()
    per_stream = {k: v / n_streams for k, v in diff(c3, c2).items() if v}
    b.data["statements_per_cycle"] = per_cycle
    b.data["statements_per_stream_turn"] = per_stream

    def summary(counts):
        writes = sum(v for k, v in counts.items() if k.startswith("app.") and k.split(".")[1] in
                     ("INSERT", "UPDATE", "DELETE", "WITH") and not k.endswith(".rows"))
        with_cte = f", WITH … UPDATE … INSERT {counts['app.WITH']:.0f}" if counts.get("app.WITH") else ""
        return (f"{writes:.0f} writes (INSERT {counts.get('app.INSERT', 0):.0f}, UPDATE {counts.get('app.UPDATE', 0):.0f}{with_cte}) "
                f"in {counts.get('app.COMMIT', 0):.0f} commits; {counts.get('app.SELECT', 0):.0f} SELECTs; "
                f"workspace {sum(v for k, v in counts.items() if k.startswith('workspace.') and k.split('.')[1] != 'COMMIT'):.0f} statements")
    b.row("database", "App database statements per pause+continue cycle (2 model turns, 1 tool call)",
          summary(per_cycle))
    b.row("database", f"App database statements per streamed reply ({20} tokens at {b.args.token_rate}/s)",
          summary(per_stream))
    def by_kind(counts):
        kinds = sorted(((k[5:], v) for k, v in counts.items() if k.startswith("kind.")), key=lambda kv: -kv[1])
        return "; ".join(f"{kind} {v:.1f}" for kind, v in kinds)
    b.row("database", "App database statements per cycle, by what issued them (a request and the stream it "
          "returns; background: the executor)", by_kind(per_cycle))
    b.row("database", "App database statements per streamed reply, by what issued them", by_kind(per_stream))
    for label, counts in (("cycle", per_cycle), ("streamed reply", per_stream)):
        for key, v in sorted(((k, v) for k, v in counts.items() if k.startswith("sql.")), key=lambda kv: -kv[1]):
            log(f"  per {label} {v:5.1f}  {key[4:]}")
    if pg0 and pg1:
        d = {k: (pg1[k] - pg0[k]) / n_cycles for k in pg0}
        b.row("database", "PostgreSQL pg_stat_database per cycle (includes the streams' reads)",
              f"{d['xact_commit']:.0f} commits, {d['tup_inserted']:.0f} rows inserted, "
              f"{d['tup_updated']:.0f} updated, {d['tup_deleted']:.0f} deleted")

    log(f"cost growth: one session, up to {turns} turns, {budget_s:.0f} s budget")
    await browser.new_chat()
    b.model_records()
    window = max(10, turns // 20)
    end = time.monotonic() + budget_s
    samples = []  # per window: turn, pause, continue, model, cpu, statements
    cur = {"pause": [], "continue": [], "meter": Meter(b), "c0": server.counts()}
    done = 0
    for turn in range(1, turns + 1):
        if time.monotonic() > end:
            break
        c = await browser.cycle()
        cur["pause"].append(c.pause_ns / MS)
        cur["continue"].append(c.continue_ns / MS)
        done = turn
        if turn % window == 0:
            await asyncio.sleep(0.3)
            counts = server.counts()
            records = b.model_records()
            model_ms = sum((e - s) / MS for s, e, _ in records) / window
            statements = diff(counts, cur["c0"])
            samples.append({
                "turn": turn, "pause": statistics.median(cur["pause"]), "continue": statistics.median(cur["continue"]),
                "model": model_ms, **{k: v * 1000 / window for k, v in cur["meter"].stop().items()
                                      if k in ("server", "db")},
                "selects": statements.get("app.SELECT", 0) / window,
                "rows_read_hint": None})
            cur = {"pause": [], "continue": [], "meter": Meter(b), "c0": counts}
    b.data["growth"] = {"turns": done, "samples": samples}
    if len(samples) >= 2:
        first, last = samples[0], samples[-1]
        for sample in (first, last):
            sample["cpu"] = sample["server"] + sample["db"]
        growth = (last["cpu"] / first["cpu"] - 1) * 100 if first["cpu"] else None
        lat_first = first["pause"] + first["continue"] - first["model"]
        lat_last = last["pause"] + last["continue"] - last["model"]
        b.row("growth", f"Cost growth over one session of {done:,} turns (first {window} turns vs turns "
              f"{last['turn'] - window + 1}-{last['turn']})",
              f"server CPU/turn {first['cpu']:.1f} -> {last['cpu']:.1f} ms ({growth:+.0f} %)"
              + (f" (of which PostgreSQL {first['db']:.1f} -> {last['db']:.1f})" if last["db"] else "") + "; "
              f"pause {first['pause']:.1f} -> {last['pause']:.1f} ms, continue {first['continue']:.1f} -> "
              f"{last['continue']:.1f} ms (model's own {first['model']:.1f} -> {last['model']:.1f} ms/turn); "
              f"SELECTs/turn {first['selects']:.0f} -> {last['selects']:.0f}",
              "≤ 10 % growth over 1,000 turns", judge(growth, 10) if done >= 1000 else
              (f"{judge(growth, 10)} (only {done} turns)" if growth is not None else "n/a"))
        b.row("growth", "App latency per turn minus the model's own, first vs last window",
              f"{lat_first:.1f} -> {lat_last:.1f} ms ({(lat_last / lat_first - 1) * 100:+.0f} %)")
    else:
        b.row("growth", "Cost growth", f"not enough turns ({done})", status="n/a")


def git_state() -> str:
    import subprocess
    try:
        head = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "app", "templates",
                                "static", "migrations", "gunicorn.conf.py"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.split("\n")
        dirty = [line for line in dirty if line.strip()]
        return f"commit {head[:80]}" + (f" plus {len(dirty)} uncommitted app files" if dirty else "")
    except Exception:
        return "unknown"


def judge(value, target, higher: bool = False) -> str:
    if value is None:
        return "n/a"
    if (value >= target) if higher else (value <= target):
        return "pass"
    if higher:
        return f"MISS ({value / target * 100:.0f} % of target)" if target else "MISS"
    return f"MISS ({value / target:.1f}× target)"


# ---------------------------------------------------------------------------------------------------

PHASES = ("baseline", "latency", "throughput", "streams", "capacity", "signins", "open", "database")


async def run_phases(b: Bench) -> None:
    p, only = b.plan, b.args.only

    async def timed(name, coroutine):
        if name not in only:
            coroutine.close()
            return
        t0 = time.monotonic()
        await coroutine
        log(f"{name} took {time.monotonic() - t0:.1f} s")

    await phase_warmup(b)
    await asyncio.sleep(2)  # idle: as long as before the reading after the load phases
    b.data["rss_idle"] = S.memory(b.server)
    await timed("baseline", phase_baseline(b, p["baseline"]))
    await timed("latency", phase_latency(b, p["latency"], p["cross"]))
    for clients in (10, 50):
        await timed("throughput", phase_throughput(b, clients, p["throughput_s"]))
    await timed("streams", phase_streams(b, p["streams"]))
    await timed("capacity", phase_capacity(b, p["capacity"], p["capacity_window_s"]))
    await timed("signins", phase_signins(b))
    await timed("open", phase_open_streams(b, p["open_streams"]))
    await asyncio.sleep(2)
    b.data["rss_after"] = S.memory(b.server)
    await b.close_browsers()


async def run_counting(b: Bench) -> None:
    p = b.plan
    await phase_db_and_growth(b, p["growth_turns"], max(5, min(p["growth_s"], b.time_left() - 10)))
    await b.close_browsers()


def memory_rows(b: Bench) -> None:
    idle, after, cold = b.data.get("rss_idle"), b.data.get("rss_after"), b.data.get("rss_cold")
    if cold:
        worst = max(cold["workers"])
        b.row("memory", "Resident memory per worker, idle after start (master separately)",
              f"{', '.join(f'{x:.0f}' for x in cold['workers'])} MiB (master {cold['master']:.0f} MiB)",
              "≤ 90 MiB per idle worker", judge(worst, 90))
    if idle:
        b.row("memory", "Resident memory per worker, idle after warm-up",
              f"{', '.join(f'{x:.0f}' for x in idle['workers'])} MiB", "≤ 90 MiB", judge(max(idle["workers"]), 90))
    if after:
        b.row("memory", "Resident memory per worker, idle after the load phases",
              f"{', '.join(f'{x:.0f}' for x in after['workers'])} MiB", "≤ 90 MiB", judge(max(after["workers"]), 90))


def table(b: Bench, hw: dict, command: str, elapsed: float) -> str:
    lines = [
        f"Benchmark of {datetime.now().strftime('%Y-%m-%d %H:%M')} — `{command}` ({elapsed / 60:.1f} min)",
        "",
        f"Machine: {hw['nproc']} CPUs, {hw['cpu']}, {hw['memory']} RAM, Linux {hw['kernel']}; Python {hw['python']}, "
        f"gunicorn {hw['gunicorn']} (gevent {hw['gevent']}, {b.server.worker_count} workers), Flask {hw['flask']}, "
        f"SQLAlchemy {hw['sqlalchemy']}, openai {hw['openai']}, aiohttp {hw['aiohttp']}; database {b.dbs.version()}. "
        f"Model: tests/fake_openai.py in its own process, {b.args.token_rate} tokens/s, {b.args.tokens} tokens a reply"
        + (f", a paragraph every {b.args.paragraph_every} tokens" if b.args.paragraph_every else "") + ". "
        "The load generator, the fake model and the server share the same cores. "
        f"Code: {hw['git']}. Other processes on the machine used {hw['background_before']:.0f} % of one core "
        f"just before the run and {hw.get('background_during', float('nan')):.0f} % on average during it.",
        "",
        "| | measurement | result | target | status |",
        "|---|---|---|---|---|",
    ]
    for row in b.rows:
        cells = [str(c).replace("|", "\\|").replace("\n", " ") for c in
                 (row.section, row.name, row.result, row.target, row.status)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


class _Skip(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run in under 2 minutes")
    parser.add_argument("--postgres", metavar="URL", help="an admin URL; the bench creates and drops its own databases")
    parser.add_argument("--workers", type=int, default=None,
                        help="gunicorn workers (WEB_CONCURRENCY); default: what gunicorn.conf.py picks")
    parser.add_argument("--token-rate", type=float, default=50.0, help="the fake model's tokens per second (default 50)")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per streamed reply (default 20)")
    parser.add_argument("--paragraph-every", type=int, default=0, metavar="K",
                        help="streamed replies (streams, capacity) break into paragraphs every K tokens; "
                             "default: one paragraph")
    parser.add_argument("--minutes", type=float, default=None, help="hard time budget (default 14, quick 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, SQLite files)")
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"comma-separated phases to run (default all: {','.join(PHASES)})")
    parser.add_argument("--stream-levels", metavar="N,N", default=None,
                        help="the streams phase's levels (default 1,100,1000; quick 1,50): "
                             "`--only streams --stream-levels 1` is the first-token overhead alone")
    parser.add_argument("--capacity-levels", metavar="N,N", default=None,
                        help="the capacity phase's levels, tried in order until one fails "
                             "(default 1,2,4,…,2000; quick 2,8)")
    args = parser.parse_args(argv)
    args.only = set(args.only.split(","))
    plan = dict(PLAN["quick" if args.quick else "full"])
    if args.stream_levels:
        plan["streams"] = [int(level) for level in args.stream_levels.split(",")]
    if args.capacity_levels:
        plan["capacity"] = [int(level) for level in args.capacity_levels.split(",")]
    budget = (args.minutes or plan["budget_min"]) * 60
    started = time.monotonic()
    command = "python -m bench.run" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()

    fds = S.raise_fd_limit()
    hw = S.hardware()
    hw["git"] = git_state()
    busy0 = S.machine_busy_seconds()
    time.sleep(3)
    hw["background_before"] = (S.machine_busy_seconds() - busy0) / 3 * 100
    workdir = S.make_workdir(args.keep)
    log(f"work dir {workdir}; fd limit {fds}; {hw['nproc']} CPUs")
    fake = S.FakeModelProcess(workdir / "fake.log")
    dbs = S.Databases.create(workdir, args.postgres)
    bench = None
    server = None
    exit_code = 0
    try:
        env = S.server_env(dbs, fake.base_url)
        S.migrate(env, workdir / "migrate.log")
        server = S.start_server(env, args.workers, workdir / "gunicorn.log")
        time.sleep(2)
        bench = Bench(args, server, fake, dbs, env, workdir, deadline=started + budget - 12, plan=plan)
        bench.data["rss_cold"] = S.memory(server)
        bench.data["whole_run_meter"] = Meter(bench)
        try:
            # keep time for the database phase: a restart, the counting turns, the growth session
            reserve = (15 if args.quick else 40) + plan["growth_s"]
            bench.deadline -= reserve
            asyncio.run(asyncio.wait_for(run_phases(bench), timeout=max(30, bench.time_left())))
        except Exception as exc:
            exit_code = 1
            log(f"phase failed: {exc!r}")
            traceback.print_exc()
            bench.row("error", "A phase failed", repr(exc)[:200], status="error")
        finally:
            bench.deadline += reserve
        memory_rows(bench)
        whole = bench.data.pop("whole_run_meter").stop()
        hw["background_during"] = whole["other"] / whole["t"] * 100
        server.stop()
        if "database" not in args.only:
            server = None
            raise _Skip
        log("restarting with the statement-counting hook")
        server = S.start_server(env, args.workers, workdir / "gunicorn-counting.log", workdir / "counts")
        bench.server = server
        bench.browsers.clear()  # they belonged to the first event loop
        try:
            asyncio.run(asyncio.wait_for(run_counting(bench), timeout=max(20, bench.time_left())))
        except Exception as exc:
            exit_code = 1
            log(f"phase failed: {exc!r}")
            traceback.print_exc()
            bench.row("error", "The database phase failed", repr(exc)[:200], status="error")
    except _Skip:
        pass
    finally:
        if server is not None:
            server.stop()
        fake.stop()
        dbs.drop()
    elapsed = time.monotonic() - started
    if bench is None:
        return 1
    from bench.soak import log_problems
    problems = []
    for name in ("gunicorn.log", "gunicorn-counting.log"):
        if (workdir / name).exists():
            problems += log_problems(workdir / name, bench.server.worker_count if bench else 2)
    bench.row("errors", "Server log: tracebacks, errors, worker timeouts or restarts",
              f"{len(problems)}" + (f"; first: {' | '.join(problems[:3])}"[:400] if problems else ""),
              "0", "pass" if not problems else "FAIL")
    errors = bench.data.get("errors")
    if errors:
        bench.row("errors", "First errors seen", "; ".join(errors[:3])[:300], status="error")
    text = table(bench, hw, command, elapsed)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"bench-{stamp}.md").write_text(text + "\n")
    (RESULTS / f"bench-{stamp}.json").write_text(json.dumps(bench.data, indent=1, default=str))
    log(f"results: bench/results/bench-{stamp}.md (+ .json); logs in {workdir}")
    if args.keep or problems or errors:
        log(f"kept {workdir} (server logs) for inspection")
    else:
        S.remove_workdir(workdir)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
