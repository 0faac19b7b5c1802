"""Drives the real openai SDK against tests/fake_openai.py to prove the wire format holds up."""

import json
import threading

import openai
import pytest

try:  # works whether or not tests/ is a package / on sys.path
    from tests.fake_openai import FakeOpenAI, ToolCall, Turn
except ImportError:
    from fake_openai import FakeOpenAI, ToolCall, Turn

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def make_client(fake, **kwargs):
    # Strict validation makes the SDK check every payload against its pydantic models.
    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=fake.base_url, api_key="test", _strict_response_validation=True, **kwargs)


def test_responses_stream_text_and_function_call(fake):
    fake.script(Turn(text="Let me look that up.", tool_calls=[ToolCall("get_weather", {"city": "Paris"}, "call_w1")]))
    client = make_client(fake)

    events = list(client.responses.create(model="gpt-test", input="Weather in Paris?", tools=[WEATHER_TOOL], stream=True))

    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))

    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert "".join(e.delta for e in deltas) == "Let me look that up."
    assert len(deltas) == 5
    assert {(e.item_id, e.output_index, e.content_index) for e in deltas} == {(events[2].item.id, 0, 0)}

    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris"}
    done_items = [e.item for e in events if e.type == "response.output_item.done"]
    assert [i.type for i in done_items] == ["message", "function_call"]
    call = done_items[1]
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_w1", "get_weather", {"city": "Paris"})

    completed = events[-1].response
    assert completed.id.startswith("resp_") and completed.id == events[0].response.id
    assert completed.status == "completed"
    assert completed.output_text == "Let me look that up."
    assert [o.type for o in completed.output] == ["message", "function_call"]
    assert completed.usage.output_tokens > 0

    req = fake.requests[0]
    assert (req.api, req.stream, req.last_user_text()) == ("responses", True, "Weather in Paris?")
    assert req.headers["authorization"] == "Bearer test"


def test_responses_non_stream(fake):
    fake.script(Turn(text="Hi there!"), Turn(tool_calls=[ToolCall("get_weather", '{"city": ')]))
    client = make_client(fake)

    first = client.responses.create(model="gpt-test", input="hello")
    assert first.id.startswith("resp_") and first.object == "response" and first.status == "completed"
    assert first.output_text == "Hi there!"
    assert first.output[0].type == "message" and first.output[0].content[0].annotations == []

    second = client.responses.create(model="gpt-test", input="weather?", tools=[WEATHER_TOOL])
    assert second.output_text == ""
    (call,) = second.output
    assert call.type == "function_call" and call.status == "completed"
    assert call.arguments == '{"city": '  # sent verbatim, invalid JSON and all
    assert call.call_id.startswith("call_")


def test_unscripted_request_gets_default_reply(fake):
    client = make_client(fake)
    assert client.responses.create(model="m", input="?").output_text == "No scripted reply."
    assert fake.requests[0].turn.text == "No scripted reply."


def test_previous_response_chain_and_forget(fake):
    fake.script(Turn(tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, "call_a")]), Turn(text="It is cold."))
    client = make_client(fake)

    first = client.responses.create(model="m", input="Weather in Oslo?", tools=[WEATHER_TOOL])
    output = [{"type": "function_call_output", "call_id": "call_a", "output": '{"temp": -3}'}]

    # An output for a call the model never made is rejected before consuming a turn.
    with pytest.raises(openai.BadRequestError, match="No tool call found for function call output with call_id call_x"):
        client.responses.create(
            model="m", previous_response_id=first.id, input=[{**output[0], "call_id": "call_x"}]
        )
    # So is continuing the chain without answering the pending call.
    with pytest.raises(openai.BadRequestError, match="No tool output found for function call call_a"):
        client.responses.create(model="m", previous_response_id=first.id, input="never mind")

    second = client.responses.create(model="m", previous_response_id=first.id, input=output)
    assert second.output_text == "It is cold."
    req = fake.requests[-1]
    assert req.previous_response_id == first.id
    assert req.tool_outputs() == [("call_a", '{"temp": -3}')]
    assert req.last_user_text() == "Weather in Oslo?"  # found through the chain's history

    fake.forget_responses()
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.responses.create(model="m", previous_response_id=second.id, input="and tomorrow?")
    err = excinfo.value
    assert err.status_code == 400
    assert err.code == "previous_response_not_found"
    assert err.param == "previous_response_id"
    assert err.type == "invalid_request_error"
    assert err.body["message"] == f"Previous response with id '{second.id}' not found."
    assert fake.requests[-1].turn is None


def test_chat_stream_tool_call_arguments_reassembled(fake):
    long_args = {"query": "a fairly long search query", "limit": 10}
    fake.script(Turn(text="Searching now.", tool_calls=[ToolCall("search", long_args), ToolCall("noop", {})]))
    client = make_client(fake)

    stream = client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "find it"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, calls, arg_chunks, finish, usage = "", {}, 0, None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        text += choice.delta.content or ""
        for tc in choice.delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            slot["id"] = tc.id or slot["id"]
            slot["name"] += tc.function.name or ""
            slot["arguments"] += tc.function.arguments or ""
            arg_chunks += bool(tc.function.arguments)

    assert text == "Searching now."
    assert finish == "tool_calls"
    assert usage.total_tokens > 0
    assert arg_chunks > 3
    assert [calls[0]["name"], calls[1]["name"]] == ["search", "noop"]
    assert json.loads(calls[0]["arguments"]) == long_args and json.loads(calls[1]["arguments"]) == {}
    assert all(c["id"].startswith("call_") for c in calls.values())


def test_chat_non_stream_and_tool_message_validation(fake):
    fake.script(Turn(tool_calls=[ToolCall("search", {"q": "x"}, "call_1")]), Turn(text="Done."))
    client = make_client(fake)
    messages = [{"role": "user", "content": "go"}]

    first = client.chat.completions.create(model="m", messages=messages)
    msg = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and msg.content is None
    assert (msg.tool_calls[0].id, msg.tool_calls[0].function.name) == ("call_1", "search")

    messages.append(msg.model_dump(exclude_none=True))
    with pytest.raises(openai.BadRequestError, match="did not have response messages: call_1"):
        client.chat.completions.create(model="m", messages=messages + [{"role": "user", "content": "?"}])

    messages.append({"role": "tool", "tool_call_id": "call_1", "content": "result"})
    second = client.chat.completions.create(model="m", messages=messages)
    assert second.choices[0].message.content == "Done." and second.choices[0].finish_reason == "stop"
    assert fake.requests[-1].tool_outputs() == [("call_1", "result")]


@pytest.mark.parametrize(
    "status, exc_class, code",
    [
        (401, openai.AuthenticationError, "invalid_api_key"),
        (429, openai.RateLimitError, "rate_limit_exceeded"),
        (500, openai.InternalServerError, None),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_scripted_http_errors(fake, status, exc_class, code, stream):
    fake.script(Turn(status=status, error_message="nope"))
    client = make_client(fake)
    with pytest.raises(exc_class) as excinfo:
        client.responses.create(model="m", input="hi", stream=stream)
    assert excinfo.value.status_code == status
    assert excinfo.value.code == code
    assert excinfo.value.body["message"] == "nope"


def test_cut_after_breaks_the_stream(fake):
    fake.script(Turn(text="one two three four five", cut_after=2), Turn(text="one two three", cut_after=1))
    client = make_client(fake)

    seen = []
    with pytest.raises(Exception):
        for event in client.responses.create(model="m", input="hi", stream=True):
            if event.type == "response.output_text.delta":
                seen.append(event.delta)
    assert seen == ["one ", "two "]

    seen = []
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(Exception):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
    assert "".join(seen) == "one "


def test_delay_triggers_client_timeout(fake):
    fake.script(Turn(text="too late", delay=2))
    client = make_client(fake, timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        client.responses.create(model="m", input="hi")


def test_concurrent_streams_with_responder(fake):
    fake.respond_with(lambda req: Turn(text=f"echo {req.last_user_text()} done", token_delay=0.01))
    client = make_client(fake)
    results = {}

    def run(n):
        events = client.responses.create(model="m", input=f"msg{n}", stream=True)
        results[n] = "".join(e.delta for e in events if e.type == "response.output_text.delta")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == {n: f"echo msg{n} done" for n in range(8)}
    assert len(fake.requests) == 8


def test_stop_is_prompt_with_open_streams():
    fake = FakeOpenAI().start()
    fake.script(Turn(text="slow " * 50, token_delay=0.5))
    client = openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0)
    stream = client.responses.create(model="m", input="hi", stream=True)
    next(iter(stream))
    stopper = threading.Thread(target=fake.stop)
    stopper.start()
    stopper.join(timeout=3)
    assert not stopper.is_alive()
    with pytest.raises(Exception):
        list(stream)
