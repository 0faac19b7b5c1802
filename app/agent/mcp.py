"""MCP servers as tools: `MCPTools(command=..., args=[...])` (stdio) or `MCPTools(url=...)` (streamable HTTP).

The bridge: each MCPTools owns, per process, one helper process (`mcp_helper.py`, plain Python with
the official `mcp` SDK) that holds the MCP session. The worker writes one JSON request per line to
its stdin and a reader thread (a greenlet under gevent: `subprocess` and `threading` are patched, so
nothing here blocks the hub) hands each answer to the call waiting for it. The helper is started when
the agent's tools are first needed, started again after it dies, and stopped at exit.

Gating fails closed: a tool needs confirmation unless the server annotates it `readOnlyHint: true`
and it is not listed in `requires_confirmation_tools`. Arguments are validated against the server's
input schema before a card is shown. Execution goes through the agent loop like any tool (`executing`
committed before the call), so a worker killed mid-call leaves `outcome_unknown`. A server that is
down, dies mid-call or does not answer in time makes the call fail with a readable error.
"""
from __future__ import annotations

import atexit
import itertools
import json
import logging
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

from app.agent.tools import DefinitionError, Tool, ToolError, caller_location, check_approval_options

log = logging.getLogger(__name__)

HELPER = Path(__file__).with_name("mcp_helper.py")
DEFAULT_TIMEOUT = 60.0
START_SECONDS = 30.0
_RETRY_LISTING_SECONDS = 10.0

_open: weakref.WeakSet[MCPTools] = weakref.WeakSet()


class MCPTools:
    """The tools of one MCP server, for an agent's `tools=[...]`.

    - `command`, `args`, `env`, `cwd`: start a stdio server (e.g. `command="python", args=["server.py"]`).
    - `url`: a streamable-HTTP server (e.g. `url="http://127.0.0.1:8000/mcp"`).
    - `include_tools` / `exclude_tools`: which of the server's tools the agent gets.
    - `requires_confirmation_tools`: tools that always need confirmation (any tool not annotated
      `readOnlyHint: true` needs it anyway).
    - `timeout`: seconds a call may take (default 60, or MCP_TIMEOUT).
    - `approvers="admin"`: only admins decide the calls of this server's gated tools;
      `allow_always=False`: nobody may "Always allow" them; `approval_timeout`: seconds a call waits.
    """

    def __init__(self, command: str | None = None, *, args: list[str] | None = None,
                 env: dict[str, str] | None = None, cwd: str | None = None, url: str | None = None,
                 include_tools: list[str] | None = None, exclude_tools: list[str] | None = None,
                 requires_confirmation_tools: list[str] | None = None, timeout: float | None = None,
                 approvers: str | None = None, allow_always: bool = True, approval_timeout: float | None = None,
                 **unsupported: Any):
        where = caller_location(2)
        if unsupported:
            raise DefinitionError(f"{where}: MCPTools({next(iter(unsupported))}=...) is not supported here; "
                                  "remove it (see README, \"Write your own agent\").")
        check_approval_options(f"{where}: MCPTools", approvers, approval_timeout)
        self.approval_options = {"approvers": approvers, "allow_always": allow_always,
                                 "approval_timeout": approval_timeout}
        if bool(command) == bool(url):
            raise DefinitionError(f"{where}: MCPTools needs either command=... (stdio) or url=... (streamable HTTP).")
        if command and " " in command.strip() and not args:  # the reference accepts "python server.py"
            command, *args = command.split()
        self.spec = {"command": command, "args": list(args or []), "env": dict(env or {}), "cwd": cwd, "url": url}
        self.include_tools = set(include_tools) if include_tools is not None else None
        self.exclude_tools = set(exclude_tools or ())
        self.requires_confirmation_tools = set(requires_confirmation_tools or ())
        self.timeout = timeout
        self.default_timeout = DEFAULT_TIMEOUT  # the app sets MCP_TIMEOUT here (app factory)
        self.location = where
        self.name = url or " ".join([command or "", *self.spec["args"]]).strip()
        self._bridge: _Bridge | None = None
        self._tools: tuple[Tool, ...] | None = None
        self._listing_failed_at = 0.0
        self._warming = False
        self.last_error: str | None = None
        self._lock = threading.Lock()
        _open.add(self)

    # -- tools ---------------------------------------------------------------------------------------

    @property
    def is_listed(self) -> bool:
        return self._tools is not None

    def listed(self) -> tuple[Tool, ...]:
        """The tools already listed (never blocks: safe inside a transaction); () until then."""
        return self._tools or ()

    def warm(self) -> None:
        """List the tools in the background if that has not happened yet (for pages that show them)."""
        if self._tools is None and not self._warming:
            self._warming = True
            threading.Thread(target=self._warm, name=f"mcp-list {self.name}", daemon=True).start()

    def _warm(self) -> None:
        try:
            self.load()
        finally:
            self._warming = False

    def load(self) -> tuple[Tool, ...]:
        """The server's tools as gated `Tool`s, starting the server and listing them on first need
        (kept afterwards). Blocks (cooperatively) while the server starts: never call it with a
        database transaction open.

        A server that cannot be started contributes no tools; the next need tries again (at most
        every few seconds) and `last_error` says why."""
        import time

        if self._tools is not None:
            return self._tools
        if time.monotonic() - self._listing_failed_at < _RETRY_LISTING_SECONDS:
            return ()
        try:
            listed = self._ensure().tools
        except ToolError as exc:
            self.last_error, self._listing_failed_at = str(exc), time.monotonic()
            log.warning("MCP server %s: %s", self.name, exc)
            return ()
        self._tools = tuple(self._tool(entry) for entry in listed
                            if (self.include_tools is None or entry["name"] in self.include_tools)
                            and entry["name"] not in self.exclude_tools)
        self.last_error = None
        return self._tools

    def _tool(self, entry: dict) -> Tool:
        name = entry["name"]
        hints = entry.get("annotations") or {}
        read_only = hints.get("readOnlyHint") is True
        destructive = hints.get("destructiveHint")
        if read_only:
            destructive = False  # the spec: destructiveHint only means something when not read-only
        elif destructive is None:
            destructive = True  # the spec's default for a tool that may write

        def call(**arguments: Any) -> str:
            return self.call(name, arguments)

        note = "The server marks this tool as destructive." if destructive else None
        return Tool.from_json_schema(
            name, entry.get("description") or "", entry.get("input_schema") or {}, call,
            requires_confirmation=name in self.requires_confirmation_tools or not read_only,
            preview=(lambda _ctx, _args: note) if note else None,
            source="mcp", destructive=destructive, **self.approval_options)

    # -- calls ---------------------------------------------------------------------------------------

    def call(self, name: str, arguments: dict) -> str:
        """Call a tool once (never re-sent). Raises ToolError with a readable message if the server is
        down, dies during the call, does not answer in time or reports an error."""
        answer = self._ensure().request({"method": "call", "name": name, "arguments": arguments},
                                        self._timeout() + 5)
        result = answer["result"]
        if result.get("is_error"):
            raise ToolError(result.get("text") or "The MCP tool reported an error.")
        return result.get("text") or "Done."

    def _timeout(self) -> float:
        return float(self.timeout or self.default_timeout)

    def _ensure(self) -> _Bridge:
        with self._lock:
            if self._bridge is None or not self._bridge.alive:
                self._bridge = _Bridge({**self.spec, "timeout": self._timeout()}, self.name)
            return self._bridge

    def close(self) -> None:
        with self._lock:
            if self._bridge is not None:
                self._bridge.close()
                self._bridge = None

    def __repr__(self) -> str:
        return f"MCPTools({self.name!r})"


class _Bridge:
    """One helper process and the calls waiting for its answers."""

    def __init__(self, spec: dict, name: str):
        self.name = name
        self._ids = itertools.count(1)
        self._waiting: dict[int, list] = {}  # id -> [Event, answer]
        self._write_lock = threading.Lock()
        self.alive = True
        self.tools: list[dict] = []
        hello = [threading.Event(), None]
        self._waiting[0] = hello
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-P", str(HELPER), json.dumps(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=None, text=True, bufsize=1, cwd=spec.get("cwd") or None, start_new_session=False)
        except OSError as exc:
            self.alive = False
            raise ToolError(f"Could not start the MCP helper: {exc}") from None
        threading.Thread(target=self._read, name=f"mcp-reader {name}", daemon=True).start()
        if not hello[0].wait(START_SECONDS + 5):
            self.close()
            raise ToolError(f"The MCP server {name} did not start in {START_SECONDS:.0f} s.")
        answer = hello[1] or {"error": "The MCP server stopped while starting."}
        if "error" in answer:
            self.close()
            raise ToolError(answer["error"])
        self.tools = answer["tools"]

    def request(self, message: dict, timeout: float) -> dict:
        if not self.alive:
            raise ToolError(f"The MCP server {self.name} is not running.")
        slot = [threading.Event(), None]
        request_id = next(self._ids)
        self._waiting[request_id] = slot
        try:
            with self._write_lock:
                self.process.stdin.write(json.dumps({**message, "id": request_id}) + "\n")
                self.process.stdin.flush()
        except (OSError, ValueError):
            self._waiting.pop(request_id, None)
            self._died()
            raise ToolError(f"The MCP server {self.name} is not running; the call was not sent.") from None
        if not slot[0].wait(timeout):
            self._waiting.pop(request_id, None)
            raise ToolError(f"The MCP server {self.name} did not answer in {timeout:.0f} s; the call was not "
                            "sent again, but it may have taken effect.")
        answer = slot[1]
        if answer is None:
            raise ToolError(f"The MCP server {self.name} stopped during the call; it was not run again.")
        if "error" in answer:
            raise ToolError(answer["error"])
        return answer

    def _read(self) -> None:
        try:
            for line in self.process.stdout:
                try:
                    answer = json.loads(line)
                except ValueError:
                    continue
                slot = self._waiting.pop(answer.get("id"), None)
                if slot is not None:
                    slot[1] = answer
                    slot[0].set()
        except (OSError, ValueError):
            pass
        self._died()
        try:
            self.process.wait(timeout=10)  # reap it (gevent's child watcher would too; plain threads need this)
        except Exception:  # noqa: BLE001 - still running after closing its stdout: close() kills it
            pass

    def _died(self) -> None:
        """The helper is gone: wake every waiting call (its outcome stays unknown to the server)."""
        self.alive = False
        for slot in list(self._waiting.values()):
            slot[0].set()
        self._waiting.clear()

    def close(self) -> None:
        self.alive = False
        try:
            self.process.stdin.close()  # the helper closes its session and exits
            self.process.wait(timeout=5)
        except Exception:  # noqa: BLE001 - stuck or already gone
            try:
                self.process.kill()
            except OSError:
                pass
        self._died()


@atexit.register
def close_all() -> None:
    """Stop every helper this process started (each stops its stdio server)."""
    for tools in list(_open):
        tools.close()
