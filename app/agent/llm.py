"""Model providers behind one small interface, so the agent loop does not care who answers.

- `ResponsesModel`: the OpenAI Responses API (streaming, function calls, chained turns).
- `ChatModel`: Chat Completions, for OpenAI-compatible servers (Ollama, vLLM, LM Studio).
- `DemoModel`: an offline stand-in that understands the Data Manager's requests, so a fresh
  machine with no key shows the whole confirm flow. It is labelled as such in the UI.

The conversation is passed in a provider-neutral form (see `ContextItem`); each provider turns it
into its own wire format. A provider yields `TextDelta`, then `ToolCallRequest`s, then `TurnDone`,
and raises `ModelError` with a readable message when the model fails.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import openai


@dataclass
class ContextItem:
    """One entry of the conversation: a user message, an assistant turn, or a tool's output."""
    role: str                       # user | assistant | tool
    content: str = ""
    tool_calls: list[dict] = field(default_factory=list)  # assistant: [{"call_id", "name", "arguments"}]
    call_id: str | None = None      # tool: which call this output answers
    response_id: str | None = None  # assistant: the model's id for this turn (Responses API chaining)


@dataclass
class TextDelta:
    text: str


@dataclass
class ToolCallRequest:
    call_id: str
    name: str
    arguments: str  # raw JSON text as the model sent it; validated by the tool


@dataclass
class TurnDone:
    response_id: str | None = None


ModelEvent = TextDelta | ToolCallRequest | TurnDone


class ModelError(Exception):
    """The model could not answer; the message is shown to the person."""


class Model(Protocol):
    label: str
    is_demo: bool
    # True: the provider chains turns on the server (Responses API), so `stream` only needs the
    # conversation from the newest assistant item that has a `response_id` on, plus `full_context`
    # for when the server has forgotten the chain. False: always pass the whole conversation.
    chains: bool

    def stream(self, instructions: str, context: list[ContextItem], tools: list[dict],
               full_context: Callable[[], list[ContextItem]] | None = None) -> Iterator[ModelEvent]: ...


def describe_error(exc: Exception) -> str:
    """A readable one-liner for the chat; never a traceback."""
    if isinstance(exc, openai.AuthenticationError):
        return "The model rejected the API key (401). Check OPENAI_API_KEY."
    if isinstance(exc, openai.RateLimitError):
        return "The model is rate-limited or out of quota (429). Try again in a moment."
    if isinstance(exc, openai.APITimeoutError):
        return "The model did not answer in time."
    if isinstance(exc, openai.APIConnectionError):
        return "Could not reach the model server."
    if isinstance(exc, openai.APIStatusError):
        message = getattr(exc, "message", "") or str(exc)
        return f"The model server answered with an error ({exc.status_code}): {message[:300]}"
    return f"The model's reply broke off: {type(exc).__name__}."


def make_client(api_key: str | None, base_url: str | None, timeout: float) -> openai.OpenAI:
    # A local server (Ollama, vLLM) often needs no key, but the SDK insists on one.
    return openai.OpenAI(api_key=api_key or "not-needed", base_url=base_url, timeout=timeout, max_retries=1)


class ResponsesModel:
    is_demo = False
    chains = True

    def __init__(self, client: openai.OpenAI, model: str):
        self.client, self.model = client, model
        self.label = model

    def stream(self, instructions, context, tools, full_context=None):
        """`context` may be only the tail of the conversation, from the newest assistant item with a
        `response_id` (the chain head) on; `full_context()` then returns all of it, which is replayed
        when there is no chain head or the server no longer knows the chain."""
        function_tools = [{"type": "function", "strict": False, **t} for t in tools]
        previous_id, new_items = self._chain(context)
        try:
            if previous_id:
                try:
                    yield from self._stream(instructions, new_items, function_tools, previous_id)
                    return
                except openai.BadRequestError as exc:
                    # The server forgot the chain (expired, or another server): replay everything.
                    if getattr(exc, "code", None) != "previous_response_not_found" and \
                            "previous_response" not in str(exc):
                        raise
            replay = full_context() if full_context is not None else context
            yield from self._stream(instructions, self._items(replay), function_tools, None)
        except openai.OpenAIError as exc:
            raise ModelError(describe_error(exc)) from exc
        except Exception as exc:  # httpx errors when a stream is cut short
            raise ModelError(describe_error(exc)) from exc

    def _stream(self, instructions, items, tools, previous_id):
        kwargs = {"previous_response_id": previous_id} if previous_id else {}
        stream = self.client.responses.create(
            model=self.model, instructions=instructions, input=items, tools=tools or openai.omit,
            stream=True, **kwargs)
        with stream:
            for event in stream:
                if event.type == "response.output_text.delta":
                    yield TextDelta(event.delta)
                elif event.type == "response.output_item.done" and event.item.type == "function_call":
                    yield ToolCallRequest(event.item.call_id, event.item.name, event.item.arguments or "")
                elif event.type == "response.completed":
                    yield TurnDone(event.response.id)
                    return
                elif event.type in ("response.failed", "response.incomplete"):
                    error = getattr(event.response, "error", None)
                    raise ModelError(f"The model stopped: {getattr(error, 'message', None) or event.type}.")
                elif event.type == "error":
                    raise ModelError(f"The model reported an error: {getattr(event, 'message', '')}")
        raise ModelError("The model's reply broke off before it finished.")

    @staticmethod
    def _chain(context: list[ContextItem]):
        """The newest answered turn we can chain from, and the items that came after it."""
        for index in range(len(context) - 1, -1, -1):
            item = context[index]
            if item.role == "assistant" and item.response_id:
                return item.response_id, ResponsesModel._items(context[index + 1:])
        return None, None

    @staticmethod
    def _items(context: list[ContextItem]) -> list[dict]:
        items: list[dict] = []
        for item in context:
            if item.role == "tool":
                items.append({"type": "function_call_output", "call_id": item.call_id, "output": item.content})
                continue
            if item.content:
                items.append({"role": item.role, "content": item.content})
            for call in item.tool_calls:
                items.append({"type": "function_call", "call_id": call["call_id"], "name": call["name"],
                              "arguments": call["arguments"]})
        return items


class ChatModel:
    is_demo = False
    chains = False

    def __init__(self, client: openai.OpenAI, model: str):
        self.client, self.model = client, model
        self.label = model

    def stream(self, instructions, context, tools, full_context=None):
        """Always given the whole conversation; `full_context` is ignored."""
        try:
            yield from self._stream(instructions, context, tools)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(describe_error(exc)) from exc

    def _stream(self, instructions, context, tools):
        kwargs = {"tools": [{"type": "function", "function": t} for t in tools]} if tools else {}
        stream = self.client.chat.completions.create(
            model=self.model, messages=self._messages(instructions, context), stream=True, **kwargs)
        calls: dict[int, dict] = {}
        finished = False
        with stream:
            for chunk in stream:
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta
                if delta and delta.content:
                    yield TextDelta(delta.content)
                for part in (delta.tool_calls or []) if delta else []:
                    call = calls.setdefault(part.index, {"call_id": "", "name": "", "arguments": ""})
                    call["call_id"] = part.id or call["call_id"]
                    if part.function:
                        call["name"] += part.function.name or ""
                        call["arguments"] += part.function.arguments or ""
                if choice.finish_reason:
                    finished = True
        if not finished:
            raise ModelError("The model's reply broke off before it finished.")
        for index in sorted(calls):
            call = calls[index]
            yield ToolCallRequest(call["call_id"] or f"call_{index}", call["name"], call["arguments"])
        yield TurnDone(None)

    @staticmethod
    def _messages(instructions: str, context: list[ContextItem]) -> list[dict]:
        messages: list[dict] = [{"role": "system", "content": instructions}]
        for item in context:
            if item.role == "tool":
                messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.content})
            elif item.role == "assistant":
                message: dict = {"role": "assistant", "content": item.content or None}
                if item.tool_calls:
                    message["tool_calls"] = [
                        {"id": c["call_id"], "type": "function",
                         "function": {"name": c["name"], "arguments": c["arguments"]}}
                        for c in item.tool_calls]
                messages.append(message)
            else:
                messages.append({"role": "user", "content": item.content})
        return messages


class DemoModel:
    """Offline and deterministic: maps plain requests onto the Data Manager's tools."""
    is_demo = True
    chains = False
    label = "Demo model (offline)"

    def __init__(self, word_delay: float = 0.02):
        self.word_delay = word_delay

    def stream(self, instructions, context, tools, full_context=None):
        available = {t["name"] for t in tools}
        last = context[-1] if context else ContextItem("user", "")
        if last.role == "tool":
            text, call = self._summarise(context), None
        else:
            text, call = self._understand(last.content, available)
            if call is None and len(context) > 1 and context[-2].role == "tool":
                # A message typed while a card waited: it rejected the card; acknowledge that.
                text = self._summarise(context[:-1])
        for word in re.findall(r"\S+\s*|\s+", text):
            if self.word_delay:
                time.sleep(self.word_delay)
            yield TextDelta(word)
        if call:
            yield ToolCallRequest(f"call_demo_{time.time_ns():x}", call[0], json.dumps(call[1]))
        yield TurnDone(None)

    @staticmethod
    def _understand(text: str, available: set[str]):
        said = " ".join(text.split())
        lowered = said.lower()
        if match := re.search(r"\bdelete\s+(-?\d+)\b.*?\b(?:from|in)\s+(?:the\s+)?[`'\"]?([\w.;-]+)", lowered):
            count, table = int(match.group(1)), match.group(2)
            if "delete_records" in available:
                return (f"I'll delete the {count} oldest records from **{table}**. "
                        "This needs your confirmation first.\n\n", ("delete_records", {"table_name": table, "count": count}))
        if match := re.search(r"\b(?:notify|message|tell)\s+(\S+?)[,:]?\s+(?:that\s+|saying\s+|:\s*)?(.+)", said, re.I):
            recipient, message = match.group(1), match.group(2).strip()
            if "send_notification" in available:
                return (f"I'll send a notification to **{recipient}**. Please confirm.\n\n",
                        ("send_notification", {"recipient": recipient, "message": message}))
        if match := re.search(r"\bhow many\s+(?:rows|records|entries)?\s*(?:are\s+)?(?:there\s+)?(?:in|does)\s+(?:the\s+)?(\w+)", lowered) \
                or re.search(r"\bcount\s+(?:the\s+)?(?:rows|records)?\s*(?:in\s+)?(?:the\s+)?(\w+)", lowered):
            if "count_records" in available:
                return ("Let me count them.\n\n", ("count_records", {"table_name": match.group(1)}))
        if re.search(r"\b(what|which|list|show)\b.*\btables?\b", lowered) and "list_tables" in available:
            return ("Here are the tables in the workspace.\n\n", ("list_tables", {}))
        return ("I'm the **demo model**, running offline with no API key. I can help with the workspace data:\n\n"
                "- *Delete 50 old records from the users table*\n"
                "- *Notify alice@example.com that the export is ready*\n"
                "- *How many rows in orders?*\n"
                "- *What tables are there?*\n\n"
                "Deleting and notifying ask for your confirmation first. "
                "Set `OPENAI_API_KEY` to talk to a real model.", None)

    @staticmethod
    def _summarise(context: list[ContextItem]) -> str:
        outputs = []
        for item in reversed(context):
            if item.role != "tool":
                break
            outputs.append(item.content)
        lines = []
        for output in reversed(outputs):
            if output.startswith("Rejected by the user"):
                reason = output.partition(":")[2].strip()
                lines.append("Understood, I did not do that." + (f" You said: *{reason}*" if reason else ""))
            elif output.startswith("Error"):
                lines.append(f"That did not work. {output}")
            elif "\n" in output.strip():
                lines.append("Done.\n\n" + "\n".join(f"- {line}" for line in output.strip().splitlines()))
            else:
                lines.append(f"Done. {output}")
        return "\n\n".join(lines) or "Done."


def model_for(config: dict) -> Model:
    """Pick the provider from the app config: a key or a base URL means a real (compatible) server."""
    if not config.get("OPENAI_API_KEY") and not config.get("OPENAI_BASE_URL"):
        return DemoModel(word_delay=config.get("DEMO_WORD_DELAY", 0.02))
    client = make_client(config.get("OPENAI_API_KEY"), config.get("OPENAI_BASE_URL"), config["OPENAI_TIMEOUT"])
    cls = ChatModel if config.get("OPENAI_API") == "chat" else ResponsesModel
    return cls(client, config["OPENAI_MODEL"])
