"""Following a run's event log over server-sent events, and turning its events into the HTML
fragments the browser's event stream swaps in.

Fragments are rendered from the stored rows at send time (a card always shows its current state), so
replaying an event is harmless; only `text` events append, and the client drops ids it has seen.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import sqlalchemy as sa
from flask import current_app, render_template, stream_with_context

from app.agent.events import Event
from app.agent.follow import STATUS_AFTER, follow
from app.extensions import db
from app.models import Message, Run, ToolCall

def follow_run(run_id: str, cursor: int, render: Callable[[list[Event]], str],
               finish: Callable[[str | None], str], first: str = "", hold_paused: bool = False) -> Iterator[str]:
    """The run's events after `cursor` as server-sent events: `first`, then what `app.agent.follow`
    yields (rendered by `render`, closed by `finish(status)`), with a comment as keep-alive."""
    db.session.remove()

    def stream():
        if first:
            yield first
        for chunk in follow(run_id, cursor, render, finish, hold_paused=hold_paused):
            yield ": ping\n\n" if chunk is None else chunk

    return stream_with_context(stream())


def sse(data: str, event: str | None = None, id: int | None = None) -> str:
    lines = [f"event: {event}"] if event else []
    if id is not None:
        lines.append(f"id: {id}")
    lines += [f"data: {line}" for line in (data.splitlines() or [""])]
    return "\n".join(lines) + "\n\n"


TEXT_INTERVAL = 0.2  # seconds: a stream re-renders a streaming reply at most this often


def render_batch(batch: list[Event], last_text: dict[int, float] | None = None) -> list[tuple[Event, str]]:
    """Each event with its fragment. A reply's text events are coalesced: only the batch's last one per
    message is rendered (the reply so far, as Markdown; it includes the earlier ones' words).

    With `last_text` (one dict per stream: message id -> when its text was last sent), a reply is
    re-rendered at most every TEXT_INTERVAL, as rendering it whole costs more the longer it grows (see
    bench/markdown_stream.py). A skipped event is never needed: the next text event, or the
    `message_completed` every reply ends with (also after Stop or a failure), shows all of it."""
    now = time.monotonic()
    newest = {event.data["message_id"]: event.seq for event in batch if event.type == "text"}
    shown = []
    for event in batch:
        if event.type == "text":
            message_id = event.data["message_id"]
            if newest[message_id] != event.seq:
                continue
            if last_text is not None:
                if now - last_text.get(message_id, float("-inf")) < TEXT_INTERVAL:
                    continue
                last_text[message_id] = now
        shown.append((event, render_event(event)))
    return shown


def render_event(event: Event) -> str:
    data = event.data or {}
    match event.type:
        case "text":
            # The reply so far, rendered whole (the same renderer and sanitiser as a finished one), read
            # now: it holds at least this event's words, so a replayed or late event never shows less.
            # Rendered without Flask's context processors (the outbox query, the user): the hottest path.
            message = db.session.get(Message, data["message_id"], options=[sa.orm.lazyload(Message.tool_calls)])
            if message is None:
                return ""
            env = current_app.jinja_env
            return (env.get_template("chat/events/_message_replace.html").render(message=message)
                    + (env.get_template("chat/events/_activity.html").render(activity="Writing…")
                       if message.state == "streaming" else ""))
        case "user_message" | "message_started" | "message_completed":
            # These fragments never show the message's cards: skip loading its tool calls.
            message = db.session.get(Message, data["message_id"], options=[sa.orm.lazyload(Message.tool_calls)])
            if message is None:
                return ""
            template = "chat/events/_message_replace.html" if event.type == "message_completed" \
                else "chat/events/_message_append.html"
            run = db.session.get(Run, message.run_id) if message.role == "assistant" else None
            return render_template(template, message=message, agent_id=run.agent_id if run else None)
        case "tool_calls":
            calls = [db.session.get(ToolCall, call_id) for call_id in data["call_ids"]]
            return render_template("chat/events/_calls_append.html", message_id=data["message_id"],
                                   calls=[c for c in calls if c is not None])
        case "tool_call_updated":
            call = db.session.get(ToolCall, data["call_id"])
            if call is None:
                return ""
            fragment = render_template("chat/events/_call_replace.html", call=call)
            if data.get("status", call.status) == "executing":
                fragment += render_template("chat/events/_activity.html", activity=f"Calling {call.name}…")
            return fragment
        case _:
            # A replayed state change shows the state it recorded, not today's: replaying an old
            # "started" as "paused" would replace the stream element and close the stream before the
            # rest arrived.
            run = db.session.get(Run, event.run_id)
            status = STATUS_AFTER.get(event.type, run.status)
            return render_template("chat/events/_run_state.html", cursor=event.seq, run=SimpleNamespace(
                id=run.id, session_id=run.session_id, status=status, error=run.error, agent_id=run.agent_id))
