"""ResponsesModel chains turns with previous_response_id: given only the tail of the conversation
it sends just that, and replays `full_context()` when there is no chain head or the server forgot it."""
from __future__ import annotations

import pytest

from app.agent.llm import ChatModel, ContextItem, DemoModel, ResponsesModel, TextDelta, TurnDone, make_client
from tests.fake_openai import ToolCall, Turn

TOOLS = [{"name": "delete_records", "description": "Delete rows.",
          "parameters": {"type": "object", "properties": {"table_name": {"type": "string"},
                                                          "count": {"type": "integer"}}}}]
HELLO = [ContextItem("user", "hello")]


def provider(cls, base_url, **client_options):
    client = make_client("test-key", base_url, 5.0)
    if client_options:
        client = client.with_options(**client_options)
    return cls(client, "fake-model")


# --- Chaining and full_context ---------------------------------------------------------------------

def test_only_the_responses_model_chains():
    assert (ResponsesModel.chains, ChatModel.chains, DemoModel.chains) == (True, False, False)


def first_turn(fake, model):
    """A user message, the model's tool call (with its response id), and the tool's output."""
    fake.script(Turn(tool_calls=[ToolCall("delete_records", {"count": 5}, "call_1")]))
    [call, done] = list(model.stream("", HELLO, TOOLS))
    return [HELLO[0],
            ContextItem("assistant", tool_calls=[{"call_id": call.call_id, "name": call.name,
                                                  "arguments": call.arguments}], response_id=done.response_id),
            ContextItem("tool", "Deleted 5.", call_id="call_1")]


def test_a_known_chain_sends_only_the_tail_and_never_asks_for_the_full_context(fake_model):
    model = provider(ResponsesModel, fake_model.base_url)
    full = first_turn(fake_model, model)
    fake_model.script(Turn(text="Done."))
    asked = []
    events = list(model.stream("", full[1:], TOOLS, full_context=lambda: asked.append(1) or full))
    assert events[:-1] == [TextDelta("Done.")] and asked == []
    request = fake_model.requests[-1]
    assert request.previous_response_id == full[1].response_id
    assert request.items() == [{"type": "function_call_output", "call_id": "call_1", "output": "Deleted 5."}]


def test_a_forgotten_chain_replays_full_context_not_the_tail(fake_model):
    model = provider(ResponsesModel, fake_model.base_url)
    full = first_turn(fake_model, model)
    fake_model.forget_responses()  # the server no longer knows the chain
    fake_model.script(Turn(text="Done."))
    tail = full[1:]
    events = list(model.stream("", tail, TOOLS, full_context=lambda: full))
    assert events[:-1] == [TextDelta("Done.")]
    chained, replayed = fake_model.requests[-2:]
    assert chained.previous_response_id == full[1].response_id and chained.turn is None  # refused
    assert replayed.previous_response_id is None
    assert replayed.items() == [
        {"role": "user", "content": "hello"},
        {"type": "function_call", "call_id": "call_1", "name": "delete_records", "arguments": '{"count": 5}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "Deleted 5."}]


def test_a_forgotten_chain_without_full_context_replays_the_context_given(fake_model):
    model = provider(ResponsesModel, fake_model.base_url)
    full = first_turn(fake_model, model)
    fake_model.forget_responses()
    fake_model.script(Turn(text="Done."))
    list(model.stream("", full, TOOLS))
    assert fake_model.requests[-1].previous_response_id is None
    assert fake_model.requests[-1].items()[0] == {"role": "user", "content": "hello"}


def test_no_chain_head_replays_full_context(fake_model):
    model = provider(ResponsesModel, fake_model.base_url)
    earlier = [ContextItem("user", "first"), ContextItem("assistant", "An answer that has no response id.")]
    list(model.stream("", HELLO, TOOLS, full_context=lambda: earlier + HELLO))
    assert fake_model.requests[-1].previous_response_id is None
    assert [item["content"] for item in fake_model.requests[-1].items()] == [
        "first", "An answer that has no response id.", "hello"]


@pytest.mark.parametrize("cls", [ChatModel, DemoModel])
def test_providers_that_do_not_chain_ignore_full_context(fake_model, cls):
    def never():
        raise AssertionError("full_context() must not be called")
    model = DemoModel(word_delay=0) if cls is DemoModel else provider(cls, fake_model.base_url)
    events = list(model.stream("", HELLO, TOOLS, full_context=never))
    assert isinstance(events[-1], TurnDone)
