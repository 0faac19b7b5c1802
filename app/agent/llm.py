"""Model providers behind one small interface, so the agent loop does not care who answers.

- `ResponsesModel`: the OpenAI Responses API (streaming, function calls, chained turns).
- `ChatModel`: Chat Completions, for OpenAI-compatible servers (Ollama, vLLM, LM Studio).
- `DemoModel`: an offline stand-in that follows an agent's script (the Data Manager has one), so a
  fresh machine with no key shows the whole confirm flow; agents without one say they need a key.
  It is labelled as such in the UI.

The conversation is passed in a provider-neutral form (see `ContextItem`); each provider turns it
into its own wire format. A provider yields `TextDelta`, then `ToolCallRequest`s, then `TurnDone`,
and raises `ModelError` with a readable message when the model fails.

The real providers send their request through the `openai` SDK's client (auth, base URL, timeouts,
retries, and its error classes for non-2xx answers), but read the streamed reply themselves: the
server-sent events are split here and their `data` parsed with `json.loads`, which costs a fraction
of the SDK's per-event pydantic models. `openai` itself is imported only when a model is first
called, so a worker that never calls one (or runs the demo model) does not load it, and then without
the type modules and transport this path never uses (`sdk_imports`).
"""
from __future__ import annotations

import json
import os
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Protocol

from app.agent import sdk_imports

sdk_imports.install()

if TYPE_CHECKING:
    import httpx2
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
    import openai

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
    import openai

    from app.agent import sdk_gevent

    sdk_gevent.install()  # in a gevent worker, send each request before giving way to other greenlets
    # A local server (Ollama, vLLM) often needs no key, but the SDK insists on one.
    return openai.OpenAI(api_key=api_key or "not-needed", base_url=base_url, timeout=timeout, max_retries=1,
                         http_client=openai.DefaultHttpxClient(verify=TrustOnFirstHandshake()))


class TrustOnFirstHandshake:
    """The client's TLS context, made when a connection first needs it: a model server over plain HTTP
    (a local one) never costs OpenSSL's context and CA certificates (2.2 MiB per worker when
    SSL_CERT_FILE names the bundle). It is the context the client would have made at once: the system
    store by directory, else httpx's default (SSL_CERT_FILE, SSL_CERT_DIR or the bundle). It stands in
    for an `ssl.SSLContext`: every attribute read is the context's own."""

    def __init__(self):
        self._context: ssl.SSLContext | None = None

    def __getattr__(self, name: str):
        if name == "_context":  # read before __init__ set it (a copy): not the context's to answer
            raise AttributeError(name)
        if self._context is None:
            import httpx2

            self._context = system_trust_by_directory() or httpx2.create_ssl_context()
        return getattr(self._context, name)


_HASHED_NAME = re.compile(r"[0-9a-f]{8}\.\d+")


def system_trust_by_directory() -> ssl.SSLContext | None:
    """The system's CA certificates as OpenSSL's hashed directory, from which a handshake reads only the
    certificates it needs, where httpx would load the whole bundle file into every client (~140
    certificates, 2.9 MiB in a fresh process, mostly never used). Verification is the same: the same system
    store, certificates and host names required. None, for the SDK's own default, when SSL_CERT_FILE or
    SSL_CERT_DIR name another store, or the system has no hashed directory."""
    if os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
        return None
    directory = ssl.get_default_verify_paths().openssl_capath
    try:
        hashed = any(_HASHED_NAME.fullmatch(name) for name in os.listdir(directory))
    except OSError:
        return None
    return ssl.create_default_context(capath=directory) if hashed else None


# --- Server-sent events -------------------------------------------------------------------------

_LINE_END = re.compile(rb"\r\n|\r|\n")


def sse_events(chunks: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    """The events of a `text/event-stream` body, as (event name, data), from its raw byte chunks.

    Follows the SSE rules: lines end in LF, CRLF or CR (also when a CRLF is split across chunks); an
    event ends at a blank line; several `data:` lines are joined with "\\n"; one space after the colon
    is dropped; comments (`:`) and `id:`/`retry:`/unknown fields are ignored; an event without data is
    not dispatched, nor is one the stream ends in the middle of. The name is "" without an `event:`
    line. The data stays bytes: `json.loads` takes them as they are.
    """
    pending = b""
    skip_lf = False  # the previous chunk ended in CR: a LF opening this one belongs to it
    name, data = "", []
    for chunk in chunks:
        if skip_lf and chunk:
            skip_lf = False
            if chunk[0] == 10:
                chunk = chunk[1:]
        buffer = pending + chunk if pending else chunk
        if b"\r" in buffer:
            lines = _LINE_END.split(buffer)
            skip_lf = buffer.endswith(b"\r")
        else:
            lines = buffer.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if not line:
                if data:
                    yield name, data[0] if len(data) == 1 else b"\n".join(data)
                name, data = "", []
            elif line[0] == 58:  # ":" a comment
                continue
            else:
                key, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if key == b"data":
                    data.append(value)
                elif key == b"event":
                    name = value.decode("utf-8", "replace")


def _error_text(error) -> str:
    """The message of an error object a server put in a stream ({"message": ...} or a string)."""
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or "unknown error")
    return str(error or "unknown error")


# --- OpenAI-compatible providers ----------------------------------------------------------------

class _OpenAIProvider:
    """What both real providers share: the SDK client, made on first use, and the streamed request."""
    is_demo = False
    chains = False
    path = ""

    def __init__(self, client: openai.OpenAI | Callable[[], openai.OpenAI], model: str):
        """`client` is an `openai.OpenAI`, or a zero-argument callable making one when the model is
        first called (so that `openai` is not imported before then)."""
        self._client = client
        self.model = model
        self.label = model

    @property
    def client(self) -> openai.OpenAI:
        if callable(self._client):  # two first calls at once may both make one: harmless
            self._client = self._client()
        return self._client

    @client.setter
    def client(self, value: openai.OpenAI) -> None:
        self._client = value

    def _post(self, body: dict) -> httpx2.Response:
        """POST the request through the SDK's client and return its unread streaming response.

        `cast_to=httpx2.Response` is the SDK's documented way to get the raw response: retries, auth,
        timeouts and the status-code errors (`openai.RateLimitError`, ...) all still apply, but no
        request-parameter transform and no response model is involved.
        """
        import httpx2

        return self.client.post(self.path, cast_to=httpx2.Response, body=body, stream=True,
                                options={"security": {"bearer_auth": True}})

    def _events(self, body: dict) -> Iterator[tuple[str, bytes]]:
        """The server-sent events of the reply to `body`; transport failures become the SDK's errors."""
        import httpx2
        import openai

        response = self._post(body)
        try:
            yield from sse_events(response.iter_bytes())
        except httpx2.TimeoutException as exc:
            raise openai.APITimeoutError(request=response.request) from exc
        except httpx2.RequestError as exc:  # e.g. the connection closed mid-stream
            raise openai.APIConnectionError(request=response.request) from exc
        finally:
            response.close()


def _read_to_end(events: Iterator) -> None:
    """Read the rest of a reply after its last event (the body's end, normally already received): a
    response closed before its end closes its connection too, and the next request would open a new
    one (TCP, and TLS with a remote model) instead of reusing it."""
    for _ in events:
        pass


class ResponsesModel(_OpenAIProvider):
    chains = True
    path = "/responses"

    # Events the stream carries that say nothing we use; their data (some hold the whole response
    # object, tools and instructions included) is not even parsed when the server names them.
    _IGNORED = frozenset({
        "response.created", "response.in_progress", "response.queued",
        "response.output_item.added", "response.content_part.added", "response.content_part.done",
        "response.output_text.done", "response.output_text.annotation.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.refusal.delta", "response.refusal.done",
        "response.reasoning_summary_part.added", "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
        "response.reasoning_text.delta", "response.reasoning_text.done",
    })

    def stream(self, instructions, context, tools, full_context=None):
        """`context` may be only the tail of the conversation, from the newest assistant item with a
        `response_id` (the chain head) on; `full_context()` then returns all of it, which is replayed
        when there is no chain head or the server no longer knows the chain."""
        import openai

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
        except ModelError:
            raise
        except Exception as exc:  # the SDK's errors, and anything else that cut the reply short
            raise ModelError(describe_error(exc)) from exc

    def _stream(self, instructions, items, tools, previous_id):
        body = {"model": self.model, "instructions": instructions, "input": items, "stream": True}
        if tools:
            body["tools"] = tools
        if previous_id:
            body["previous_response_id"] = previous_id
        ignored = self._IGNORED
        events = self._events(body)
        for name, data in events:
            if name in ignored:
                continue
            event = json.loads(data)
            kind = event.get("type") or name
            if kind == "response.output_text.delta":
                if delta := event.get("delta"):
                    yield TextDelta(delta)
            elif kind == "response.output_item.done":
                item = event.get("item") or {}
                if item.get("type") == "function_call":
                    yield ToolCallRequest(item.get("call_id") or "", item.get("name") or "",
                                          item.get("arguments") or "")
            elif kind == "response.completed":
                _read_to_end(events)
                yield TurnDone((event.get("response") or {}).get("id"))
                return
            elif kind in ("response.failed", "response.incomplete"):
                error = (event.get("response") or {}).get("error") or {}
                raise ModelError(f"The model stopped: {error.get('message') or kind}.")
            elif kind == "error":
                raise ModelError(f"The model reported an error: {_error_text(event.get('error') or event)}")
            elif event.get("error"):
                raise ModelError(f"The model reported an error: {_error_text(event['error'])}")
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


class ChatModel(_OpenAIProvider):
    path = "/chat/completions"

    def stream(self, instructions, context, tools, full_context=None):
        """Always given the whole conversation; `full_context` is ignored."""
        try:
            yield from self._stream(instructions, context, tools)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(describe_error(exc)) from exc

    def _stream(self, instructions, context, tools):
        body = {"model": self.model, "messages": self._messages(instructions, context), "stream": True}
        if tools:
            body["tools"] = [{"type": "function", "function": t} for t in tools]
        calls: dict[int, dict] = {}
        last_index = None
        finished = False
        events = self._events(body)
        for _name, data in events:
            if data.startswith(b"[DONE]"):
                _read_to_end(events)
                break
            chunk = json.loads(data)
            if chunk.get("error"):
                raise ModelError(f"The model reported an error: {_error_text(chunk['error'])}")
            choices = chunk.get("choices")
            if not choices:
                continue
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                if content := delta.get("content"):
                    yield TextDelta(content)
                for part in delta.get("tool_calls") or ():
                    index = part.get("index")
                    if index is None:  # some servers leave it out: a new id starts a new call
                        new = last_index is None or (part.get("id") and part["id"] != calls[last_index]["call_id"])
                        index = len(calls) if new else last_index
                    last_index = index
                    call = calls.setdefault(index, {"call_id": "", "name": "", "arguments": ""})
                    call["call_id"] = part.get("id") or call["call_id"]
                    if function := part.get("function"):
                        call["name"] += function.get("name") or ""
                        call["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
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


NEEDS_A_KEY = ("This agent needs a model, and none is configured: set `OPENAI_API_KEY` (or `OPENAI_BASE_URL` "
               "for a compatible server such as Ollama) and restart the app. I have not done anything.")


class DemoModel:
    """Offline and deterministic. `script(text, available_tool_names) -> (reply, (tool, args) or None)`
    comes with the agent (the Data Manager's lives in app/agents/data_manager.py); an agent without a
    script gets a plain answer that it needs a model key."""
    is_demo = True
    chains = False
    label = "Demo model (offline)"

    def __init__(self, script: Callable | None = None, word_delay: float = 0.02):
        self.script = script
        self.word_delay = word_delay

    def stream(self, instructions, context, tools, full_context=None):
        available = {t["name"] for t in tools}
        last = context[-1] if context else ContextItem("user", "")
        if self.script is None:
            text, call = NEEDS_A_KEY, None
        elif last.role == "tool":
            text, call = self._summarise(context), None
        else:
            text, call = self.script(last.content, available)
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


def model_for(config: dict, spec=None, script: Callable | None = None) -> Model:
    """Pick the provider from the app config: a key or a base URL means a real (compatible) server;
    `spec` (an agent's OpenAIResponses/OpenAIChat) chooses the API and model id, else the config does.
    With neither key nor base URL: the demo model, with the agent's script if it has one."""
    if not config.get("OPENAI_API_KEY") and not config.get("OPENAI_BASE_URL"):
        return DemoModel(script, word_delay=config.get("DEMO_WORD_DELAY", 0.02))
    api_key, base_url, timeout = config.get("OPENAI_API_KEY"), config.get("OPENAI_BASE_URL"), config["OPENAI_TIMEOUT"]
    api = spec.api if spec is not None else config.get("OPENAI_API")
    cls = ChatModel if api == "chat" else ResponsesModel
    model_id = (spec.id if spec is not None else None) or config["OPENAI_MODEL"]
    # The client (and with it `openai`) is made when the model is first called.
    return cls(lambda: make_client(api_key, base_url, timeout), model_id)


class Models:
    """Each agent's model, made on first use and kept (`app.extensions["models"]`). Agents without a
    `model=` share the app's model (`app.extensions["model"]`)."""

    def __init__(self, config: dict, default: Model):
        self.config, self.default = config, default
        self._by_agent: dict[str, Model] = {}
        self._chaining: bool | None = None
        self._chaining_known = False

    def chaining(self, agents) -> bool | None:
        """Whether the models of all these agents chain turns (True), none does (False), or they differ
        or cannot be made (None). Asked once: the agents are fixed for the process's life."""
        if not self._chaining_known:
            try:
                kinds = {bool(getattr(self.for_agent(agent), "chains", False)) for agent in agents}
            except Exception:  # an agent's model that cannot be made fails its own runs, not this
                kinds = set()
            self._chaining = kinds.pop() if len(kinds) == 1 else None
            self._chaining_known = True
        return self._chaining

    def for_agent(self, agent) -> Model:
        model = self._by_agent.get(agent.id)
        if model is None:
            demo = self.default.is_demo
            if demo or agent.model is not None:
                model = model_for(self.config, agent.model, getattr(agent, "demo", None))
            else:
                model = self.default
            self._by_agent[agent.id] = model
        return model
