"""Turning run events into the HTML fragments the browser's event stream swaps in.

Fragments are rendered from the stored rows at send time (a card always shows its current state), so
replaying an event is harmless; only `text` events append, and the client drops ids it has seen.
"""
from __future__ import annotations

from types import SimpleNamespace

from flask import render_template

from app.extensions import db
from app.models import Message, Run, RunEvent, RunStatus, ToolCall


STATUS_AFTER = {
    "run_started": RunStatus.RUNNING,
    "run_resumed": RunStatus.RUNNING,
    "run_paused": RunStatus.PAUSED,
    "run_completed": RunStatus.COMPLETED,
    "run_failed": RunStatus.FAILED,
    "run_cancelled": RunStatus.CANCELLED,
}


def sse(data: str, event: str | None = None, id: int | None = None) -> str:
    lines = [f"event: {event}"] if event else []
    if id is not None:
        lines.append(f"id: {id}")
    lines += [f"data: {line}" for line in (data.splitlines() or [""])]
    return "\n".join(lines) + "\n\n"


def render_event(event: RunEvent) -> str:
    data = event.data or {}
    match event.type:
        case "text":
            return render_template("chat/events/_text.html", message_id=data["message_id"], text=data["text"])
        case "user_message" | "message_started" | "message_completed":
            message = db.session.get(Message, data["message_id"])
            if message is None:
                return ""
            template = "chat/events/_message_replace.html" if event.type == "message_completed" \
                else "chat/events/_message_append.html"
            return render_template(template, message=message)
        case "tool_calls":
            calls = [db.session.get(ToolCall, call_id) for call_id in data["call_ids"]]
            return render_template("chat/events/_calls_append.html", message_id=data["message_id"],
                                   calls=[c for c in calls if c is not None])
        case "tool_call_updated":
            call = db.session.get(ToolCall, data["call_id"])
            return render_template("chat/events/_call_replace.html", call=call) if call else ""
        case _:
            # A replayed state change shows the state it recorded, not today's: replaying an old
            # "started" as "paused" would close the stream before the later events arrive.
            run = db.session.get(Run, event.run_id)
            status = STATUS_AFTER.get(event.type, run.status)
            return render_template("chat/events/_run_state.html", run=SimpleNamespace(
                id=run.id, session_id=run.session_id, status=status, error=run.error))
