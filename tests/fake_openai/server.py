"""A scriptable fake of the OpenAI HTTP API for tests.

It speaks the real wire protocol (JSON bodies, SSE streams, error bodies) so the
official ``openai`` SDK -- or an app under test running in another process --
can be pointed at it via ``base_url`` without any patching:

    with FakeOpenAI() as fake:
        fake.script(Turn(text="Hello!"), Turn(tool_calls=[ToolCall("lookup", {"q": "x"})]))
        client = openai.OpenAI(base_url=fake.base_url, api_key="test")
        ...

Supported endpoints: ``POST /v1/responses`` and ``POST /v1/chat/completions``,
streaming and non-streaming. Each model request consumes one scripted ``Turn``
(FIFO, shared by both endpoints); when the queue is empty the ``respond_with``
callback is asked, and failing that the reply is ``Turn(text="No scripted reply.")``.
Requests rejected by validation (bad ``previous_response_id``, dangling tool
outputs, ...) are recorded but do not consume a turn, like the real server
rejecting them before the model runs.

Only the standard library is used; each connection gets its own thread.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Literal
from urllib.parse import urlsplit

__all__ = ["FakeOpenAI", "Request", "ToolCall", "Turn"]


@dataclass
class ToolCall:
    name: str
    arguments: dict | str  # a str is sent verbatim (lets tests send invalid JSON)
    call_id: str | None = None  # auto "call_<hex>" (fresh each time the turn is served) if None

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Turn:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    status: int = 200  # != 200: reply with that HTTP error instead of a completion
    error_message: str = "scripted error"
    # None: the usual code/type for the status (401 invalid_api_key, 429 rate_limit_exceeded;
    # invalid_request_error, "requests" for 429, server_error for 5xx).
    error_code: str | None = None
    error_type: str | None = None
    # Extra response headers, e.g. {"retry-after-ms": "10"} to make SDK retries fast.
    headers: dict[str, str] = field(default_factory=dict)
    token_delay: float = 0.0  # seconds slept between streamed text deltas
    delay: float = 0.0  # seconds slept before sending anything (to trigger client timeouts)
    cut_after: int | None = None  # streaming only: drop the connection after this many text deltas
    stall_after: int | None = None  # streaming only: after this many text deltas, sleep `stall` seconds
    stall: float = 0.0              # (a model that stops to think mid-reply)


@dataclass
class Request:
    path: str
    api: Literal["responses", "chat"]
    body: dict
    headers: dict[str, str]  # header names lower-cased
    # Responses API: input + output items of the previous_response_id chain, oldest first.
    history: list[dict] = field(default_factory=list)
    # The Turn the fake answered with; None while pending or if the request failed validation.
    turn: Turn | None = None
    # The final JSON object sent back (response / chat.completion, also for streams); None if none was.
    reply: dict | None = None
    # Free for a `respond_with` callback to name the request (seen again in `exchange_done`).
    label: str = ""

    @property
    def previous_response_id(self) -> str | None:
        return self.body.get("previous_response_id")

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    def items(self) -> list[dict]:
        """Responses: the input as a list of items (a bare string becomes a user message). Chat: the messages."""
        if self.api == "chat":
            return list(self.body.get("messages") or [])
        return _input_items(self.body.get("input"))

    def last_user_text(self) -> str | None:
        """Text of the last user message in this request, else (Responses) in the previous_response_id chain."""
        for item in reversed(self.history + self.items()):
            if item.get("role") == "user" and item.get("type", "message") == "message":
                return _content_text(item.get("content"))
        return None

    def tool_outputs(self) -> list[tuple[str, Any]]:
        """(call_id, output) for every function_call_output item / role "tool" message in this request body."""
        out = []
        for item in self.items():
            if item.get("type") == "function_call_output":
                out.append((item.get("call_id"), item.get("output")))
            elif item.get("role") == "tool":
                out.append((item.get("tool_call_id"), item.get("content")))
        return out


def _input_items(value: Any) -> list[dict]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return [dict(item) for item in value]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        part.get("text") or ""
        for part in content or []
        if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text")
    )


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _split_text(text: str) -> list[str]:
    # Word-sized deltas that keep their whitespace, so "".join(deltas) == text.
    return re.findall(r"\S+\s*|\s+", text)


def _split_args(arguments: str, size: int = 8) -> list[str]:
    # Small fixed-size pieces so clients must really reassemble them.
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


def _error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_DEFAULT_ERROR_TYPES = {429: "requests"}
_DEFAULT_ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


class _ValidationError(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.body = _error_body(message, "invalid_request_error", param, code)


class _Cut(Exception):
    """Abort the exchange and drop the connection (scripted cut, or server stopping)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, which is what httpx expects
    server: _Server

    def setup(self) -> None:
        super().setup()
        if self.server.fake.tcp_nodelay:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean

    def do_POST(self) -> None:
        self.server.fake._dispatch(self)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    # -- writing helpers -------------------------------------------------

    def send_json(self, status: int, obj: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._common_headers(headers)
        self.end_headers()
        self.wfile.write(data)

    def start_sse(self, headers: dict[str, str] | None = None) -> None:
        # Chunked encoding (not Connection: close) so an abrupt close is detectable by
        # the client as an incomplete body rather than looking like a normal end of stream.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self._common_headers(headers)
        self.end_headers()

    def sse(self, text: str) -> None:
        data = self.server.fake.prepare_event(text).encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_sse(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def cut(self) -> None:
        # A FIN (not RST) so the client still reads everything sent before the cut.
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _common_headers(self, headers: dict[str, str] | None) -> None:
        self.send_header("x-request-id", _new_id("req_"))
        for name, value in (headers or {}).items():
            self.send_header(name, value)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # FakeOpenAI.stop() closes connections and joins handlers itself
    fake: FakeOpenAI

    def __init__(self, address: tuple[str, int], backlog: int) -> None:
        self.request_queue_size = backlog  # read when the constructor starts listening
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, closed streams, stop()) are routine here.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class FakeOpenAI:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tcp_nodelay: bool = False,
                 backlog: int = 128, keep_requests: bool = True) -> None:
        """tcp_nodelay: send each SSE event at once, as real endpoints do (without it a small event
        written while the previous one is unacknowledged waits for the client's delayed ACK, ~40 ms).
        backlog: the listen queue (a benchmark opens 1,000+ model requests at once). keep_requests:
        False keeps no `requests` log (a long soak would grow it without bound)."""
        self.host = host
        self.port = port
        self.tcp_nodelay = tcp_nodelay
        self.backlog = backlog
        self.keep_requests = keep_requests
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._queue: deque[Turn] = deque()
        self._responder: Callable[[Request], Turn] | None = None
        self._responses: dict[str, dict] = {}  # id -> {"previous", "input", "output"}
        self._handlers: dict[_Handler, threading.Thread] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not started")
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self.backlog)
        self._server.fake = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes handlers sleeping on delay/token_delay
        self._server.shutdown()
        with self._lock:
            handlers = dict(self._handlers)
        for handler in handlers:  # unblocks keep-alive connections idling in readline()
            handler.cut()
        self._server.server_close()
        self._thread.join()
        for thread in handlers.values():
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------

    def script(self, *turns: Turn) -> None:
        with self._lock:
            self._queue.extend(turns)

    def respond_with(self, fn: Callable[[Request], Turn] | None) -> None:
        self._responder = fn

    def forget_responses(self) -> None:
        """Drop every stored response, as if the previous_response_id chain had expired."""
        with self._lock:
            self._responses.clear()

    @property
    def pending_turns(self) -> int:
        with self._lock:
            return len(self._queue)

    # -- hooks for subclasses ------------------------------------------------

    def prepare_event(self, text: str) -> str:
        """Each SSE event's text just before it is written (a benchmark stamps the time in)."""
        return text

    def exchange_done(self, req: Request | None, started_ns: int, ended_ns: int) -> None:
        """Called after every request (`req` is None when it was not a model request), on its thread."""

    # -- request handling --------------------------------------------------

    def _track(self, handler: _Handler, add: bool) -> None:
        with self._lock:
            if add:
                self._handlers[handler] = threading.current_thread()
            else:
                self._handlers.pop(handler, None)

    def _dispatch(self, h: _Handler) -> None:
        started = time.monotonic_ns()
        h.fake_request = None
        try:
            self._handle(h)
        except _Cut:
            h.cut()
        except OSError:  # the client went away mid-reply
            h.close_connection = True
        finally:
            self.exchange_done(h.fake_request, started, time.monotonic_ns())

    def _handle(self, h: _Handler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        path = urlsplit(h.path).path.rstrip("/")
        api: Literal["responses", "chat"] | None = None
        if path.endswith("/responses"):
            api = "responses"
        elif path.endswith("/chat/completions"):
            api = "chat"
        if h.command != "POST" or api is None:
            return h.send_json(404, _error_body(f"Invalid URL ({h.command} {h.path})", "invalid_request_error"))
        try:
            body = json.loads(raw or b"null")
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError:
            return h.send_json(
                400, _error_body("We could not parse the JSON body of your request.", "invalid_request_error")
            )

        req = h.fake_request = Request(path=path, api=api, body=body,
                                       headers={k.lower(): v for k, v in h.headers.items()})
        if self.keep_requests:
            with self._lock:
                self.requests.append(req)
        try:
            if api == "responses":
                req.history = self._validate_responses(req)
            else:
                _validate_chat(req)
        except _ValidationError as err:
            return h.send_json(400, err.body)

        turn = self._next_turn(req)
        req.turn = turn
        if turn.delay:
            self._sleep(turn.delay)
        if turn.status != 200:
            status = turn.status
            type_ = turn.error_type or _DEFAULT_ERROR_TYPES.get(status) or (
                "server_error" if status >= 500 else "invalid_request_error"
            )
            code = turn.error_code if turn.error_code is not None else _DEFAULT_ERROR_CODES.get(status)
            return h.send_json(status, _error_body(turn.error_message, type_, None, code), turn.headers)

        if api == "responses":
            self._reply_responses(h, req, turn)
        else:
            self._reply_chat(h, req, turn)

    def _next_turn(self, req: Request) -> Turn:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        responder = self._responder
        if responder is None:
            return Turn(text="No scripted reply.")
        try:
            return responder(req)
        except Exception as exc:  # surface responder bugs to the client instead of hanging it
            traceback.print_exc()
            return Turn(status=500, error_message=f"fake responder raised {exc!r}")

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Cut

    # -- Responses API -----------------------------------------------------

    def _validate_responses(self, req: Request) -> list[dict]:
        """Returns the chain's history; raises _ValidationError like the real server would."""
        history: list[dict] = []
        prev = req.previous_response_id
        if prev:
            with self._lock:
                if prev not in self._responses:
                    raise _ValidationError(
                        f"Previous response with id '{prev}' not found.",
                        "previous_response_id",
                        "previous_response_not_found",
                    )
                chain, rid = [], prev
                while rid in self._responses:
                    record = self._responses[rid]
                    chain.append(record["input"] + record["output"])
                    rid = record["previous"]
            history = [item for items in reversed(chain) for item in items]

        calls: list[str] = []
        answered: set[str] = set()
        for item in history + req.items():
            if item.get("type") == "function_call":
                calls.append(item.get("call_id"))
            elif item.get("type") == "function_call_output":
                call_id = item.get("call_id")
                if call_id not in calls:
                    raise _ValidationError(
                        f"No tool call found for function call output with call_id {call_id}.", "input"
                    )
                answered.add(call_id)
        missing = [call_id for call_id in calls if call_id not in answered]
        if missing:
            raise _ValidationError(f"No tool output found for function call {missing[0]}.", "input")
        return history

    def _response_object(
        self, req: Request, rid: str, created: int, status: str, output: list, usage: dict | None
    ) -> dict:
        body = req.body
        tools = []
        for tool in body.get("tools") or []:
            tool = dict(tool)
            if tool.get("type") == "function":  # the server echoes tools with defaults filled in
                tool.setdefault("description", None)
                tool.setdefault("parameters", None)
                tool.setdefault("strict", True)
            tools.append(tool)
        return {
            "id": rid,
            "object": "response",
            "created_at": created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": body.get("model") or "gpt-fake",
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": tools,
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": usage,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

    def _remember(self, req: Request, rid: str, output: list) -> None:
        # Must happen before the client sees the final event, or an immediate
        # follow-up chained on this id could race with us.
        if req.body.get("store") is False:  # like the real API: unstored responses can't be chained
            return
        with self._lock:
            self._responses[rid] = {"previous": req.previous_response_id, "input": req.items(), "output": output}

    @staticmethod
    def _responses_usage(req: Request, output_tokens: int) -> dict:
        input_tokens = max(1, len(json.dumps(req.body.get("input"))) // 4)
        return {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }

    def _reply_responses(self, h: _Handler, req: Request, turn: Turn) -> None:
        rid, created = _new_id("resp_"), int(time.time())
        deltas = _split_text(turn.text)
        has_message = bool(turn.text) or not turn.tool_calls
        msg_id = _new_id("msg_")
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": turn.text}
        message = {"id": msg_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
        calls = [
            {
                "id": _new_id("fc_"),
                "type": "function_call",
                "status": "completed",
                "arguments": tc.arguments_json(),
                "call_id": tc.call_id or _new_id("call_"),
                "name": tc.name,
            }
            for tc in turn.tool_calls
        ]
        output = ([message] if has_message else []) + calls
        output_tokens = len(deltas) + sum(len(c["arguments"]) // 4 + 1 for c in calls)
        final = self._response_object(
            req, rid, created, "completed", output, self._responses_usage(req, output_tokens)
        )

        if not req.stream:
            self._remember(req, rid, output)
            req.reply = final
            return h.send_json(200, final, turn.headers)

        seq = 0

        def emit(type_: str, **fields: Any) -> None:
            nonlocal seq
            h.sse(f"event: {type_}\ndata: {json.dumps({'type': type_, **fields, 'sequence_number': seq})}\n\n")
            seq += 1

        h.start_sse(turn.headers)
        started = self._response_object(req, rid, created, "in_progress", [], None)
        emit("response.created", response=started)
        emit("response.in_progress", response=started)

        if has_message:
            loc = {"item_id": msg_id, "output_index": 0}
            added = {**message, "status": "in_progress", "content": []}
            emit("response.output_item.added", output_index=0, item=added)
            emit("response.content_part.added", **loc, content_index=0, part={**part, "text": ""})
            for i, delta in enumerate(deltas):
                if i == turn.cut_after:
                    raise _Cut
                if i:
                    self._sleep(turn.stall if i == turn.stall_after else turn.token_delay)
                emit("response.output_text.delta", **loc, content_index=0, delta=delta, logprobs=[])
            if turn.cut_after is not None:
                raise _Cut
            emit("response.output_text.done", **loc, content_index=0, text=turn.text, logprobs=[])
            emit("response.content_part.done", **loc, content_index=0, part=part)
            emit("response.output_item.done", output_index=0, item=message)
        elif turn.cut_after is not None:
            raise _Cut

        for index, call in enumerate(calls, start=len(output) - len(calls)):
            loc = {"item_id": call["id"], "output_index": index}
            added = {**call, "arguments": "", "status": "in_progress"}
            emit("response.output_item.added", output_index=index, item=added)
            for piece in _split_args(call["arguments"]):
                emit("response.function_call_arguments.delta", **loc, delta=piece)
            emit("response.function_call_arguments.done", **loc, arguments=call["arguments"])
            emit("response.output_item.done", output_index=index, item=call)

        self._remember(req, rid, output)
        req.reply = final
        emit("response.completed", response=final)
        h.end_sse()

    # -- Chat Completions ----------------------------------------------------

    def _reply_chat(self, h: _Handler, req: Request, turn: Turn) -> None:
        cid, created = _new_id("chatcmpl-"), int(time.time())
        model = req.body.get("model") or "gpt-fake"
        deltas = _split_text(turn.text)
        calls = [
            {
                "id": tc.call_id or _new_id("call_"),
                "type": "function",
                "function": {"name": tc.name, "arguments": tc.arguments_json()},
            }
            for tc in turn.tool_calls
        ]
        finish_reason = "tool_calls" if calls else "stop"
        prompt_tokens = max(1, len(json.dumps(req.body.get("messages"))) // 4)
        completion_tokens = len(deltas) + sum(len(c["function"]["arguments"]) // 4 + 1 for c in calls)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        base = {
            "id": cid,
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        message: dict[str, Any] = {
            "role": "assistant",
            "content": turn.text if turn.text or not calls else None,
            "refusal": None,
            "annotations": [],
        }
        if calls:
            message["tool_calls"] = calls
        final = {
            **base,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage,
        }

        if not req.stream:
            req.reply = final
            return h.send_json(200, final, turn.headers)

        include_usage = bool((req.body.get("stream_options") or {}).get("include_usage"))

        def send(obj: dict) -> None:
            h.sse(f"data: {json.dumps(obj)}\n\n")

        def chunk(delta: dict, finish: str | None = None) -> None:
            obj = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:  # the real API then sends usage: null on every chunk but the last
                obj["usage"] = None
            send(obj)

        h.start_sse(turn.headers)
        chunk({"role": "assistant", "content": "", "refusal": None})
        for i, delta in enumerate(deltas):
            if i == turn.cut_after:
                raise _Cut
            if i:
                self._sleep(turn.stall if i == turn.stall_after else turn.token_delay)
            chunk({"content": delta})
        if turn.cut_after is not None:
            raise _Cut
        for index, call in enumerate(calls):
            fn = call["function"]
            opening = {"index": index, "id": call["id"], "type": "function"}
            chunk({"tool_calls": [{**opening, "function": {"name": fn["name"], "arguments": ""}}]})
            for piece in _split_args(fn["arguments"]):
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        req.reply = final
        chunk({}, finish_reason)
        if include_usage:
            send({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        h.sse("data: [DONE]\n\n")
        h.end_sse()


def _validate_chat(req: Request) -> None:
    """Tool-message ordering checks, with the real server's messages."""
    open_ids: list[str] = []
    opened_at = 0

    def unanswered() -> _ValidationError:
        return _ValidationError(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(open_ids)}",
            f"messages.[{opened_at}].role",
        )

    for index, message in enumerate(req.items()):
        if message.get("role") == "tool":
            if message.get("tool_call_id") not in open_ids:
                raise _ValidationError(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    "with 'tool_calls'.",
                    f"messages.[{index}].role",
                )
            open_ids.remove(message.get("tool_call_id"))
            continue
        if open_ids:
            raise unanswered()
        if message.get("role") == "assistant" and message.get("tool_calls"):
            open_ids = [tc.get("id") for tc in message["tool_calls"]]
            opened_at = index
    if open_ids:
        raise unanswered()
