"""The fake OpenAI server for tests and the benchmark (see server.py for what it speaks).

Extend it through its hooks, never by patching its internals: `FakeOpenAI(tcp_nodelay=…, backlog=…,
keep_requests=…)`, a `respond_with` callback (it may set `Request.label`), and in a subclass
`prepare_event` (each SSE event just before it is written) and `exchange_done` (after each request).
"""
from tests.fake_openai.server import FakeOpenAI, Request, ToolCall, Turn

__all__ = ["FakeOpenAI", "Request", "ToolCall", "Turn"]
