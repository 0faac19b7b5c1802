"""app.agent.llm reads the model's server-sent events itself (not through the SDK's event models).

The SSE splitting is tested on byte chunks; the providers over real HTTP through the `openai` SDK's
client, against tests/fake_openai.py and, for replies it never sends (failed or incomplete responses,
error events, multi-line data, odd chat chunks), against a tiny server that sends scripted raw bytes.
"""
from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.agent.llm import (ChatModel, ContextItem, ModelError, ResponsesModel, TextDelta, ToolCallRequest,
                           TurnDone, make_client, sse_events)
from tests.fake_openai import ToolCall, Turn

TOOLS = [{"name": "delete_records", "description": "Delete rows.",
          "parameters": {"type": "object", "properties": {"table_name": {"type": "string"},
                                                          "count": {"type": "integer"}}}}]
HELLO = [ContextItem("user", "hello")]


# --- sse_events --------------------------------------------------------------------------------

def events_of(*chunks: bytes) -> list[tuple[str, bytes]]:
    return list(sse_events(iter(chunks)))


def test_events_with_and_without_names_comments_and_ignored_fields():
    stream = (b": keep-alive comment\n"
              b"event: response.created\ndata: {\"a\": 1}\n\n"
              b"id: 7\nretry: 100\ndata: {\"b\": 2}\n\n"
              b"custom: ignored\ndata:no-space\n\n"
              b"data:  two spaces\n\n")
    assert events_of(stream) == [("response.created", b'{"a": 1}'), ("", b'{"b": 2}'),
                                 ("", b"no-space"), ("", b" two spaces")]


def test_multi_line_data_is_joined_with_newlines_and_parses_as_json():
    [(name, data)] = events_of(b'event: x\ndata: {"type": "x",\ndata:  "delta": "a\\nb"}\n\n')
    assert (name, data) == ("x", b'{"type": "x",\n "delta": "a\\nb"}')
    assert json.loads(data) == {"type": "x", "delta": "a\nb"}


def test_an_event_without_data_is_not_dispatched_and_the_name_does_not_leak():
    assert events_of(b"event: ping\n\n", b"data: 1\n\n") == [("", b"1")]
    assert events_of(b"data\n\n") == [("", b"")]  # a bare field name is an empty value


def test_a_stream_ending_mid_event_drops_that_event():
    assert events_of(b"data: 1\n\ndata: 2\n") == [("", b"1")]
    assert events_of(b"data: 1\n\ndata: 2") == [("", b"1")]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_and_every_chunk_boundary_give_the_same_events(newline):
    text = b"event: e1\ndata: a\ndata: b\n\n: c\ndata: {\"x\": 2}\n\n".replace(b"\n", newline)
    expected = [("e1", b"a\nb"), ("", b'{"x": 2}')]
    assert events_of(text) == expected
    assert events_of(*(text[i:i + 1] for i in range(len(text)))) == expected  # byte by byte
    for cut in range(len(text)):
        assert events_of(text[:cut], text[cut:]) == expected, cut


def test_a_crlf_split_across_chunks_is_one_line_end():
    # A CR ending one chunk and a LF opening the next must not read as an extra, blank line
    # (which would dispatch "a" alone and then "b").
    assert events_of(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [("", b"a\nb")]


# --- a server that sends raw bytes ---------------------------------------------------------------

class RawServer:
    """Answers each POST with the next scripted reply: (status, [body pieces]) sent as HTTP chunks;
    a piece None drops the connection there instead."""

    def __init__(self):
        self.replies: deque = deque()
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append({"path": self.path, "body": json.loads(body), "peer": self.client_address,
                                        "headers": {k.lower(): v for k, v in self.headers.items()}})
                status, pieces = server.replies.popleft()
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream" if status == 200 else "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in pieces:
                    if piece is None:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def reply(self, *pieces, status: int = 200) -> None:
        self.replies.append((status, list(pieces)))


@pytest.fixture
def raw():
    server = RawServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def provider(cls, base_url, **client_options):
    client = make_client("test-key", base_url, 5.0)
    if client_options:
        client = client.with_options(**client_options)
    return cls(client, "fake-model")


def sse(*events: dict, named: bool = True) -> bytes:
    return b"".join((f"event: {e['type']}\n" if named else "").encode() + b"data: " + json.dumps(e).encode() + b"\n\n"
                    for e in events)


def completed(rid="resp_1"):
    return {"type": "response.completed", "response": {"id": rid, "status": "completed", "error": None}}


def delta(text):
    return {"type": "response.output_text.delta", "delta": text}


def call_done(call_id="call_1", name="delete_records", arguments='{"table_name": "users", "count": 5}'):
    return {"type": "response.output_item.done",
            "item": {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}}


# --- Responses API, raw streams --------------------------------------------------------------------

@pytest.mark.parametrize("cls", [ResponsesModel, ChatModel])
def test_turns_reuse_one_connection_to_the_model(raw, cls):
    """A reply is read to its end, so its connection goes back to the pool: no new TCP (or TLS) per turn."""
    for _ in range(3):
        raw.reply(sse(delta("Hi"), completed()) if cls is ResponsesModel
                  else data(chunk({"content": "Hi"}), chunk(finish="stop")) + b"data: [DONE]\n\n")
    model = provider(cls, raw.base_url)
    for _ in range(3):
        assert [e.text for e in model.stream("", HELLO, TOOLS) if isinstance(e, TextDelta)] == ["Hi"]
    assert len({request["peer"] for request in raw.requests}) == 1


@pytest.mark.parametrize("named", [True, False], ids=["event-lines", "data-only"])
def test_responses_text_calls_and_done_from_a_raw_stream(raw, named):
    created = {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}
    message_done = {"type": "response.output_item.done", "item": {"type": "message", "content": []}}
    raw.reply(sse(created, delta("Hel"), delta("lo"), message_done, call_done(), completed(), named=named))
    events = list(provider(ResponsesModel, raw.base_url).stream("Be brief.", HELLO, TOOLS))
    assert events == [TextDelta("Hel"), TextDelta("lo"),
                      ToolCallRequest("call_1", "delete_records", '{"table_name": "users", "count": 5}'),
                      TurnDone("resp_1")]
    body = raw.requests[0]["body"]
    assert raw.requests[0]["path"] == "/v1/responses"
    assert raw.requests[0]["headers"]["authorization"] == "Bearer test-key"
    assert body == {"model": "fake-model", "instructions": "Be brief.", "stream": True,
                    "input": [{"role": "user", "content": "hello"}],
                    "tools": [{"type": "function", "strict": False, **TOOLS[0]}]}


def test_responses_named_events_it_does_not_use_are_not_even_parsed(raw):
    raw.reply(b"event: response.created\ndata: {not json\n\n", sse(delta("ok"), completed()))
    assert list(provider(ResponsesModel, raw.base_url).stream("", HELLO, [])) == [TextDelta("ok"), TurnDone("resp_1")]
    assert "tools" not in raw.requests[0]["body"]


def test_responses_multi_line_data_and_events_split_across_chunks(raw):
    raw.reply(b'event: response.output_text.delta\ndata: {"type": "response.output_text.delta",\n',
              b'data: "delta": "multi\\nline"}\n', b"\n" + sse(completed())[:20], sse(completed())[20:])
    assert list(provider(ResponsesModel, raw.base_url).stream("", HELLO, [])) == [
        TextDelta("multi\nline"), TurnDone("resp_1")]


@pytest.mark.parametrize("events, message", [
    ([delta("Hal"), {"type": "response.failed", "response": {"id": "r", "error": {"message": "server overloaded"}}}],
     "The model stopped: server overloaded."),
    ([{"type": "response.incomplete", "response": {"id": "r", "error": None,
                                                   "incomplete_details": {"reason": "max_output_tokens"}}}],
     "The model stopped: response.incomplete."),
    ([{"type": "error", "code": "server_error", "message": "Something went wrong", "param": None}],
     "The model reported an error: Something went wrong"),
    ([{"type": "error", "error": {"type": "server_error", "message": "Nested message"}}],
     "The model reported an error: Nested message"),
    ([delta("Half an ans")], "The model's reply broke off before it finished."),
    ([], "The model's reply broke off before it finished."),
])
def test_responses_failures_in_the_stream_are_readable(raw, events, message):
    raw.reply(sse(*events))
    seen = []
    with pytest.raises(ModelError) as error:
        for event in provider(ResponsesModel, raw.base_url).stream("", HELLO, []):
            seen.append(event)
    assert str(error.value) == message
    assert seen == [TextDelta(e["delta"]) for e in events if e["type"] == "response.output_text.delta"]


def test_responses_a_garbled_event_fails_the_turn_readably(raw):
    raw.reply(b"event: response.output_text.delta\ndata: {oops\n\n")
    with pytest.raises(ModelError, match=r"^The model's reply broke off: JSONDecodeError\.$"):
        list(provider(ResponsesModel, raw.base_url).stream("", HELLO, []))


def test_responses_a_connection_cut_mid_stream(raw):
    raw.reply(sse(delta("Hal")), None)
    seen = []
    with pytest.raises(ModelError, match="^Could not reach the model server.$"):
        for event in provider(ResponsesModel, raw.base_url).stream("", HELLO, []):
            seen.append(event)
    assert seen == [TextDelta("Hal")]


# --- Chat Completions, raw streams -----------------------------------------------------------------

def chunk(delta=None, finish=None, **extra):
    return {"id": "c1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **extra}


def data(*objects) -> bytes:
    return b"".join(b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n\n" for o in objects)


def test_chat_text_tool_call_fragments_and_done(raw):
    raw.reply(data(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Deleting "}), chunk({"content": "now."}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "send_", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "delete_records", "arguments": '{"table_'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"name": "notification", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'name": "users"}'}}]}),
        chunk(finish="tool_calls"),
        {"id": "c1", "choices": [], "usage": {"total_tokens": 3}},
        b"[DONE]"), b"data: this is never parsed\n\n")
    events = list(provider(ChatModel, raw.base_url).stream("Be brief.", HELLO, TOOLS))
    assert events == [TextDelta("Deleting "), TextDelta("now."),
                      ToolCallRequest("call_a", "delete_records", '{"table_name": "users"}'),
                      ToolCallRequest("call_b", "send_notification", "{}"), TurnDone(None)]
    request = raw.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer test-key"
    assert request["body"] == {"model": "fake-model", "stream": True,
                               "messages": [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "hello"}],
                               "tools": [{"type": "function", "function": TOOLS[0]}]}


def test_chat_tool_calls_without_an_index(raw):
    raw.reply(data(chunk({"tool_calls": [{"id": "call_a", "function": {"name": "a", "arguments": "{"}}]}),
                   chunk({"tool_calls": [{"function": {"arguments": "}"}}]}),
                   chunk({"tool_calls": [{"id": "call_b", "function": {"name": "b", "arguments": "{}"}}]}),
                   chunk(finish="tool_calls"), b"[DONE]"))
    assert list(provider(ChatModel, raw.base_url).stream("", HELLO, TOOLS)) == [
        ToolCallRequest("call_a", "a", "{}"), ToolCallRequest("call_b", "b", "{}"), TurnDone(None)]


def test_chat_a_finish_reason_without_done_is_a_complete_reply(raw):
    raw.reply(data(chunk({"content": "Hi."}), chunk(finish="stop")))
    assert list(provider(ChatModel, raw.base_url).stream("", HELLO, [])) == [TextDelta("Hi."), TurnDone(None)]
    assert "tools" not in raw.requests[0]["body"]


@pytest.mark.parametrize("stream, message", [
    (data(chunk({"content": "Hi"}), b"[DONE]"), "The model's reply broke off before it finished."),
    (data(chunk({"content": "Hi"})), "The model's reply broke off before it finished."),
    (data(chunk({"content": "Hi"}), {"error": {"message": "The server had an error", "type": "server_error"}}),
     "The model reported an error: The server had an error"),
    (data(chunk({"content": "Hi"}), b"{oops"), "The model's reply broke off: JSONDecodeError."),
])
def test_chat_failures_in_the_stream_are_readable(raw, stream, message):
    raw.reply(stream)
    seen = []
    with pytest.raises(ModelError) as error:
        for event in provider(ChatModel, raw.base_url).stream("", HELLO, []):
            seen.append(event)
    assert str(error.value) == message
    assert seen == [TextDelta("Hi")]


# --- Against the fake OpenAI server: HTTP errors, timeouts, cuts -----------------------------------

FAST_RETRY = {"retry-after-ms": "1"}


@pytest.mark.parametrize("cls", [ResponsesModel, ChatModel])
@pytest.mark.parametrize("turn, message", [
    (Turn(status=401, error_message="Incorrect API key provided"),
     "The model rejected the API key (401). Check OPENAI_API_KEY."),
    (Turn(status=429, error_message="Rate limit reached", headers=FAST_RETRY),
     "The model is rate-limited or out of quota (429). Try again in a moment."),
    (Turn(status=500, error_message="The server had an error", headers=FAST_RETRY),
     "The model server answered with an error (500): Error code: 500 - The server had an error"),
    (Turn(text="a b c d e", cut_after=2), "Could not reach the model server."),
    (Turn(text="too late", delay=2), "The model did not answer in time."),
    (Turn(text="a b c", token_delay=2), "The model did not answer in time."),
])
def test_http_errors_timeouts_and_cuts_are_readable(fake_model, cls, turn, message):
    fake_model.script(turn, turn)  # the client retries once
    model = provider(cls, fake_model.base_url, timeout=0.5)
    with pytest.raises(ModelError) as error:
        list(model.stream("", HELLO, TOOLS))
    assert str(error.value) == message
    retried = turn.status in (429, 500) or turn.delay
    assert len(fake_model.requests) == (2 if retried else 1)


@pytest.mark.parametrize("cls", [ResponsesModel, ChatModel])
def test_a_turn_against_the_fake_server(fake_model, cls):
    fake_model.script(Turn(text="I'll delete them.", tool_calls=[ToolCall("delete_records", {"count": 5}, "call_9")]))
    events = list(provider(cls, fake_model.base_url).stream("Be brief.", HELLO, TOOLS))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "I'll delete them."
    assert [e for e in events if isinstance(e, ToolCallRequest)] == [
        ToolCallRequest("call_9", "delete_records", '{"count": 5}')]
    assert isinstance(events[-1], TurnDone)
    assert (events[-1].response_id is not None) == (cls is ResponsesModel)
    assert fake_model.requests[0].headers["authorization"] == "Bearer test-key"
