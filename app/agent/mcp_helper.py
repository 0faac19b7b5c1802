"""The MCP helper: a separate plain-Python process (no gevent) that holds one MCP client session.

Run by `app.agent.mcp` as `python -P mcp_helper.py '<json server spec>'`, never imported by the app:
the `mcp` SDK is asyncio-based, and asyncio inside a gevent worker fails or hangs when it starts a
stdio server (docs/architecture.md, "MCP tools"). The worker talks to this process over its
stdin/stdout with gevent's cooperative pipes, one JSON object per line:

    -> (on start)                                  <- {"id": 0, "tools": [...]} | {"id": 0, "error": "..."}
    -> {"id": 7, "method": "call", "name": "x", "arguments": {...}}
                                                   <- {"id": 7, "result": {"text": "...", "is_error": false}}
                                                   |  {"id": 7, "error": "..."}

Calls are served concurrently. When stdin closes (the worker stopped or died) the session is closed,
which stops a stdio server, and the process exits.
"""
from __future__ import annotations

import json
import os
import sys

import anyio
from mcp import Client, StdioServerParameters

CONNECT_SECONDS = 30


def _server(spec: dict):
    if spec.get("url"):
        return spec["url"]
    return StdioServerParameters(command=spec["command"], args=spec.get("args") or [],
                                 env=spec.get("env") or None, cwd=spec.get("cwd") or None)


def _tool_json(t) -> dict:
    annotations = t.annotations.model_dump(by_alias=True, exclude_none=True) if t.annotations else {}
    return {"name": t.name, "description": t.description or "", "input_schema": t.input_schema or {},
            "annotations": annotations}


def _result_text(result) -> str:
    parts = []
    for block in result.content or []:
        text = getattr(block, "text", None)
        parts.append(text if text is not None else json.dumps(block.model_dump(mode="json", exclude_none=True)))
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return str(exc) or type(exc).__name__


async def main(spec: dict) -> None:
    out_lock = anyio.Lock()

    async def send(message: dict) -> None:
        async with out_lock:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    try:
        async with Client(_server(spec), read_timeout_seconds=spec.get("timeout")) as client:
            with anyio.fail_after(CONNECT_SECONDS):
                listed = await client.list_tools()
            await send({"id": 0, "tools": [_tool_json(t) for t in listed.tools]})
            await serve(client, send, spec.get("timeout") or 60)
    except BaseException as exc:  # noqa: BLE001 - reported to the worker, which shows it
        await send({"id": 0, "error": f"Could not start the MCP server: {_describe(exc)}"})


async def serve(client, send, timeout: float) -> None:
    """Answer the worker's requests, several at once, until its end of the pipe closes."""

    async def call(request: dict) -> None:
        try:
            with anyio.fail_after(timeout):
                result = await client.call_tool(request["name"], request.get("arguments") or {})
            await send({"id": request["id"], "result": {"text": _result_text(result),
                                                          "is_error": bool(result.is_error)}})
        except TimeoutError:
            await send({"id": request["id"], "error": f"The MCP server did not answer in {timeout:.0f} s; the call "
                                                      "was not sent again, but it may have taken effect."})
        except Exception as exc:  # noqa: BLE001
            detail = _describe(exc)
            if "closed" in detail.lower():  # the server process ended (or the HTTP session dropped)
                await send({"id": request["id"], "error": f"The MCP server stopped during the call ({detail}); "
                                                          "it was not run again."})
                # The session is dead: end this helper, so the worker starts a fresh one on next need.
                os._exit(0)
            await send({"id": request["id"], "error": f"The MCP server failed: {detail}"})

    async with anyio.create_task_group() as group:
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                group.cancel_scope.cancel()  # the worker is gone: stop, never finish calls for nobody
                return
            request = json.loads(line)
            if request.get("method") == "call":
                group.start_soon(call, request)


if __name__ == "__main__":
    try:
        anyio.run(main, json.loads(sys.argv[1]))
    except KeyboardInterrupt:
        pass
