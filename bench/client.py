"""An asyncio browser for the load generator: the same requests as `tests.live.Client` (cookies, the
CSRF token, `HX-Request: true`) on aiohttp, so one process can hold thousands of event streams.

Each Browser has its own cookie jar and its own keep-alive connection pool (two connections), like a
tab: a command and the event stream it starts go over the same (reused) connection, so they reach the
same gunicorn worker, and a Stop can still be sent while a stream is open. `fresh_stream=True` opens the stream on a new connection
instead, which may land on the other worker (see bench/README.md, "cross-worker wake-ups").
"""
from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass, field

import aiohttp

from bench.fakemodel import ARRIVAL_RE, TOKEN_RE

BENCH_PASSWORD = "bench horse battery staple"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
STREAM_RE = re.compile(r'sse-connect="/runs/(run_\w+)/events\?after=(\d+)[^"]*"')  # [&amp;hold=1]
RUN_ID_RE = re.compile(r"/runs/(run_\w+)/")
CALL_RE = re.compile(r"/runs/(run_\w+)/calls/(tc_\w+)/approve")
RUN_STATUS_RE = re.compile(r'id="run-status"')
TEXT_RE = re.compile(r'id="msg-\d+-text"[^>]*hx-swap-oob="true"')  # a reply so far, re-rendered whole
ADDED_RE = re.compile(r'hx-swap-oob="beforeend:#msg-\d+-text ')  # only the words added to its last paragraph


class HTTPError(Exception):
    def __init__(self, what: str, status: int, body: str = ""):
        super().__init__(f"{what}: HTTP {status} {body[:200]!r}")
        self.status = status


class CycleError(Exception):
    """The app answered, but not with what the flow expects (a card, then completion)."""


@dataclass
class Cycle:
    pause_ns: int = 0      # message posted -> the paused state (with its card) received on the stream
    continue_ns: int = 0   # approval posted -> the completed state received on the stream
    streamless: int = 0    # replies that came without a stream (the run had already moved on)


@dataclass
class StreamResult:
    """What one read of /runs/<id>/events saw; times are time.monotonic_ns()."""
    opened_ns: int = 0
    first_byte_ns: int = 0
    card_ns: int = 0            # the first pending approval card
    state_ns: int = 0           # the last run-status fragment
    done_ns: int = 0            # `event: done`
    final_state: str = ""       # running | paused | completed | failed | cancelled
    calls: list[tuple[str, str]] = field(default_factory=list)  # (run_id, call_id) of pending cards
    arrival_ns: int = 0         # when the model got the request (first token's R stamp)
    first_token_emit_ns: int = 0
    first_token_recv_ns: int = 0
    token_lags_ns: list[int] = field(default_factory=list)
    tokens: int = 0
    events: int = 0
    last_id: int | None = None
    error: str | None = None


def run_state(fragment: str) -> str | None:
    if not RUN_STATUS_RE.search(fragment):
        return None
    if 'class="typing"' in fragment:
        return "running"
    if 'class="waiting"' in fragment:
        return "paused"
    if 'class="run-error"' in fragment:
        return "failed"
    if 'class="stopped"' in fragment:
        return "cancelled"
    return "completed"


class Browser:
    def __init__(self, base_url: str, connections: int = 2, read_timeout: float = 60.0):
        self.base = base_url
        self.csrf: str | None = None
        # Drop idle connections well before gunicorn does (keepalive = 5 s), so a request never goes
        # out on a socket the server is closing (which a browser would silently retry).
        self.connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=2.0, enable_cleanup_closed=True)
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), connector=self.connector,
            timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_read=read_timeout))
        self.chat: str | None = None
        self.requests = 0

    async def close(self) -> None:
        await self.http.close()

    # -- plain requests ------------------------------------------------------------------------------

    async def get(self, path: str) -> tuple[int, str]:
        self.requests += 1
        async with self.http.get(self.base + path) as response:
            text = await response.text()
        if match := CSRF_RE.search(text):
            self.csrf = match.group(1)
        return response.status, text

    async def post(self, path: str, data: dict | None = None, htmx: bool = True) -> tuple[int, str, str | None]:
        if self.csrf is None:
            await self.get("/")
        headers = {"X-CSRFToken": self.csrf}
        if htmx:
            headers["HX-Request"] = "true"
        self.requests += 1
        async with self.http.post(self.base + path, data=data or {}, headers=headers,
                                  allow_redirects=False) as response:
            text = await response.text()
            return response.status, text, response.headers.get("Location")

    async def open(self, email: str | None = None) -> "Browser":
        """An account of its own (the server runs with SIGNUP=open; the first browser also sets the
        server up with an admin, as a self-hoster would) and a new chat. With `email`, an account made
        beforehand (`bench.server.make_accounts`), it signs in to that one instead."""
        if email is not None:
            await self.get("/login")
            status, _, _ = await self._form("/login", email)
            if status != 303:
                raise HTTPError("POST /login", status)
            await self.get("/")  # a new session, with a new CSRF token
            self.chat = await self.new_chat()
            return self
        status, _ = await self.get("/signup")
        if status == 404:  # no admin yet
            await self.get("/setup")
            await self._form("/setup", f"admin-{secrets.token_hex(4)}@example.test")
            self.http.cookie_jar.clear()  # the admin stays signed in elsewhere; this browser is a member
            await self.get("/signup")
        status, _, location = await self._form("/signup", f"bench-{secrets.token_hex(6)}@example.test")
        if status != 303:
            raise HTTPError("POST /signup", status)
        await self.get("/")  # signing in starts a new session, with a new CSRF token
        self.chat = await self.new_chat()
        return self

    async def _form(self, path: str, email: str) -> tuple[int, str, str | None]:
        return await self.post(path, {"email": email, "password": BENCH_PASSWORD, "csrf_token": self.csrf},
                               htmx=False)

    async def new_chat(self) -> str:
        status, text, location = await self.post("/chats", {"csrf_token": self.csrf}, htmx=False)
        if status != 303 or not location:
            raise HTTPError("POST /chats", status, text)
        self.chat = location.rsplit("/", 1)[-1]
        return self.chat

    async def page(self, chat: str | None = None) -> str:
        status, text = await self.get(f"/chats/{chat or self.chat}")
        if status != 200:
            raise HTTPError("GET /chats/<id>", status, text)
        return text

    # -- commands --------------------------------------------------------------------------------------

    async def send(self, text: str, chat: str | None = None) -> tuple[str | None, int | None, str]:
        """Post a message; returns (run_id, cursor of the stream the reply comes on, reply html).
        The cursor is None when the reply carries no stream (the run had already stopped)."""
        status, body, _ = await self.post(f"/chats/{chat or self.chat}/messages", {"message": text})
        if status != 200:
            raise HTTPError("POST messages", status, body)
        if match := STREAM_RE.search(body):
            return match.group(1), int(match.group(2)), body
        run = RUN_ID_RE.search(body)
        return (run.group(1) if run else None), None, body

    async def decide(self, run_id: str, call_id: str, approve: bool = True,
                     reason: str = "") -> tuple[int, int | None, str]:
        """Approve or reject; returns (status, cursor of the stream to follow or None, reply html)."""
        decision = "approve" if approve else "reject"
        status, body, _ = await self.post(f"/runs/{run_id}/calls/{call_id}/{decision}",
                                          {"reason": reason} if reason else None)
        match = STREAM_RE.search(body)
        return status, int(match.group(2)) if match else None, body

    async def pending_calls(self) -> list[tuple[str, str]]:
        return CALL_RE.findall(await self.page())

    async def cycle(self, directive: str = "bench pause", approve: bool = True, reason: str = "",
                    fresh_stream: bool = False) -> "Cycle":
        """Message -> card (paused) -> decision -> completed, the way the page does it."""
        cycle = Cycle()
        t0 = time.monotonic_ns()
        run, cursor, body = await self.send(directive)
        if cursor is None:  # the run paused before the reply was rendered: the card is on the page
            state, calls, paused_ns = run_state(body), await self.pending_calls(), time.monotonic_ns()
            cycle.streamless += 1
        else:
            seen = await self.stream(run, cursor, fresh_connection=fresh_stream)
            if seen.error:
                raise CycleError(f"pause stream: {seen.error}")
            state, calls, paused_ns = seen.final_state, seen.calls, seen.state_ns
        if state != "paused" or not calls:
            raise CycleError(f"expected a pending card, got state {state!r} and {len(calls)} cards")
        cycle.pause_ns = paused_ns - t0
        t1 = time.monotonic_ns()
        status, cursor, body = await self.decide(*calls[0], approve=approve, reason=reason)
        if status != 200:
            raise HTTPError("POST decision", status, body)
        if cursor is None:
            state, done_ns = run_state(body), time.monotonic_ns()
            cycle.streamless += 1
        else:
            seen = await self.stream(calls[0][0], cursor)
            if seen.error:
                raise CycleError(f"continue stream: {seen.error}")
            state, done_ns = seen.final_state, seen.state_ns or seen.done_ns
        if state != "completed":
            raise CycleError(f"expected the run to complete after the decision, got {state!r}")
        cycle.continue_ns = done_ns - t1
        return cycle

    async def cancel(self, run_id: str) -> int:
        status, _, _ = await self.post(f"/runs/{run_id}/cancel")
        return status

    # -- the event stream ----------------------------------------------------------------------------

    async def stream(self, run_id: str, after: int, *, last_event_id: int | None = None,
                     fresh_connection: bool = False, stop_after_ns: int | None = None,
                     stop_after_tokens: int | None = None, on_open=None, hold: bool = False) -> StreamResult:
        """Read /runs/<id>/events from `after` until `event: done` (or `stop_after_ns`). With `hold`,
        as the page does while a card waits: the stream stays open through the pause."""
        result = StreamResult(opened_ns=time.monotonic_ns())
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        session = self.http
        if fresh_connection:
            session = aiohttp.ClientSession(cookie_jar=self.http.cookie_jar, timeout=self.http.timeout,
                                            connector=aiohttp.TCPConnector(limit=1, force_close=True))
        self.requests += 1
        try:
            async with session.get(f"{self.base}/runs/{run_id}/events?after={after}{'&hold=1' if hold else ''}",
                                   headers=headers) as response:
                if response.status != 200:
                    raise HTTPError("GET events", response.status, await response.text())
                if on_open:
                    on_open()
                event_type, data = "message", []
                async for raw in response.content:
                    now = time.monotonic_ns()
                    if not result.first_byte_ns:
                        result.first_byte_ns = now
                    line = raw.decode().rstrip("\r\n")
                    if line:
                        name, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if name == "data":
                            data.append(value)
                        elif name == "event":
                            event_type = value
                        elif name == "id" and value:  # relayed words carry an empty id
                            result.last_id = int(value)
                        continue
                    if event_type == "done":
                        result.done_ns = now
                        break
                    if data:
                        self._event(result, "\n".join(data), now)
                    event_type, data = "message", []
                    if stop_after_ns and now > stop_after_ns:
                        break
                    if stop_after_tokens and result.tokens >= stop_after_tokens:
                        break
        except HTTPError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            if session is not self.http:
                await session.close()
        return result

    @staticmethod
    def _event(result: StreamResult, fragment: str, now: int) -> None:
        result.events += 1
        if TEXT_RE.search(fragment):
            stamps = TOKEN_RE.findall(fragment)[result.tokens:]  # the reply so far: the words not seen yet
        else:
            stamps = TOKEN_RE.findall(fragment) if ADDED_RE.search(fragment) else None
        if stamps:
            if not result.first_token_recv_ns:
                result.first_token_recv_ns = now
                result.first_token_emit_ns = int(stamps[0])
                if arrival := ARRIVAL_RE.search(fragment):
                    result.arrival_ns = int(arrival.group(1))
            result.token_lags_ns.extend(now - int(s) for s in stamps)
            result.tokens += len(stamps)
            return
        if "call-pending" in fragment:
            for run_id, call_id in CALL_RE.findall(fragment):
                if (run_id, call_id) not in result.calls:
                    result.calls.append((run_id, call_id))
            if not result.card_ns:
                result.card_ns = now
        if state := run_state(fragment):
            result.final_state = state
            result.state_ns = now


class AgentOSClient:
    """The reference's REST API (Agno AgentOS; this app serves the same one), driven as its docs and
    ../shared/research/agno-anchor.md describe: POST /agents/<id>/runs with stream=false answers
    PAUSED with the pending tool objects; POST …/runs/<id>/continue echoing them with
    `"confirmed": true` (the whole object: the documented minimal payload does not run the tool)
    answers COMPLETED. One keep-alive connection per client, a new session every 10 cycles."""

    def __init__(self, base_url: str, agent_id: str = "data_manager", token: str | None = None,
                 user_id: str | None = None):
        self.base = f"{base_url}/agents/{agent_id}/runs"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.user_id = user_id or f"bench-{id(self):x}"
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, keepalive_timeout=2.0, enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_read=60))
        self.session_id = ""
        self.cycles = 0

    async def close(self) -> None:
        await self.http.close()

    async def _post(self, url: str, fields: dict) -> dict:
        form = aiohttp.FormData({**fields, "stream": "false", "user_id": self.user_id})
        async with self.http.post(url, data=form, headers=self.headers) as response:
            text = await response.text()
            if response.status != 200:
                raise HTTPError(f"POST {url.rsplit('/agents', 1)[-1]}", response.status, text)
        return json.loads(text)

    async def cycle(self, message: str = "bench pause") -> Cycle:
        if self.cycles % 10 == 0:
            self.session_id = f"bench-{id(self):x}-{self.cycles}"
        self.cycles += 1
        cycle = Cycle()
        t0 = time.monotonic_ns()
        paused = await self._post(self.base, {"message": message, "session_id": self.session_id})
        cycle.pause_ns = time.monotonic_ns() - t0
        if paused.get("status") != "PAUSED" or not paused.get("tools"):
            raise CycleError(f"expected PAUSED with tools, got {paused.get('status')!r}")
        tools = [{**tool, "confirmed": True} for tool in paused["tools"] if tool.get("requires_confirmation")]
        t1 = time.monotonic_ns()
        done = await self._post(f"{self.base}/{paused['run_id']}/continue",
                                {"tools": json.dumps(tools), "session_id": self.session_id})
        cycle.continue_ns = time.monotonic_ns() - t1
        if done.get("status") != "COMPLETED":
            raise CycleError(f"expected COMPLETED after the confirmation, got {done.get('status')!r}")
        return cycle
