"""Following a run's event log over server-sent events, and turning its events into the HTML
fragments the browser's event stream swaps in.

Fragments are rendered from the stored rows at send time (a card shows its call's current state), or
from the rows this process wrote with the event (`Event.calls`: the state that event recorded; a later
change comes with a later event), so replaying an event is harmless; only `text` events append, and
the client drops ids it has seen.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import sqlalchemy as sa
from flask import current_app, render_template, stream_with_context
from markupsafe import Markup, escape

from app.agent.events import Event, Watch
from app.agent.follow import STATUS_AFTER, follow
from app.extensions import db
from app.markdown import StreamingReply
from app.models import Account, Message, Run, RunStatus, ToolCall

def follow_run(run_id: str, cursor: int, render: Callable[[list[Event]], str],
               finish: Callable[[str | None], str], first: str = "", hold_paused: bool = False,
               watch: Watch | None = None, first_read=None, status: str | None = None) -> Iterator[str]:
    """The run's events after `cursor` as server-sent events: `first`, then what `app.agent.follow`
    yields (rendered by `render`, closed by `finish(status)`), with a comment as keep-alive.
    `watch`, `first_read` and `status`: see `app.agent.follow.follow`."""
    db.session.remove()

    def stream():
        if first:
            yield first
        for chunk in follow(run_id, cursor, render, finish, hold_paused=hold_paused, watch=watch, first=first_read,
                            status=status):
            yield ": ping\n\n" if chunk is None else chunk

    return stream_with_context(stream())


def sse(data: str, event: str | None = None, id: int | str | None = None) -> str:
    """One server-sent event. `id` None sends no id line (the browser keeps its last one); "" clears it."""
    lines = [f"event: {event}"] if event else []
    if id is not None:
        lines.append(f"id: {id}")
    lines += [f"data: {line}" for line in (data.splitlines() or [""])]
    return "\n".join(lines) + "\n\n"


# A stream shows a streaming reply at most every TEXT_INTERVAL seconds, and a long one less often:
# rendering it whole costs more the longer it grows, so the hold after a render is RENDER_SHARE times
# what the render took (a viewer's renders then use at most about a tenth of a core). Words relayed
# meanwhile wait in memory (`Watch.hold_relays`), and are shown together as the hold ends.
TEXT_INTERVAL = 0.04
RENDER_SHARE = 10
# While a reply's last paragraph only grows, a stream sends just the words added to it (see
# StreamView.render_streaming), and the whole reply again this often, so a page that skipped some
# (app.js applies added words only where they fit) is whole again within the second.
WHOLE_EVERY = 1.0


_CALL_COLUMNS = tuple(ToolCall.__table__.columns.keys())


class CallCard(SimpleNamespace):
    """A call's row as plain values, for its card: as this process wrote it (`Event.calls`), or as a
    stream remembers it between batches. Who decided is read only if the card names someone else."""

    def __init__(self, row: dict):
        super().__init__(**{name: row.get(name) for name in _CALL_COLUMNS})

    @classmethod
    def of(cls, call: ToolCall) -> "CallCard":
        return cls({name: getattr(call, name) for name in _CALL_COLUMNS})

    @property
    def decider(self) -> Account | None:
        return None if self.decider_id is None else db.session.get(Account, self.decider_id)


class StreamView:
    """What one stream remembers between batches, so that most events render without a query: the
    run's fixed fields (read once), each reply's text so far (kept from its text events, whose `at`
    says where their words go; read from the database once when the stream joined mid-reply or
    missed words). After showing a reply it holds its `watch`'s relayed words for a while (see
    render_batch)."""

    def __init__(self, run_id: str, run=None, watch: Watch | None = None):
        self.run_id = run_id
        self.watch = watch
        self.texts: dict[int, str] = {}
        self.renders: dict[int, StreamingReply] = {}  # per reply: its finished blocks, rendered once
        self.frames: dict[int, tuple[str, str]] = {}  # per reply: its update's HTML before and after the reply
        self.sent_whole: dict[int, float] = {}  # per reply: when this stream last sent all of it
        self.approved: dict[str, CallCard] = {}  # cards last shown approved, by call id
        self._run = run
        self._held: list = []

    def run(self):
        """The run's id, session_id and agent_id (they never change; the view may hand them in)."""
        if self._run is None:
            self._run = db.session.execute(sa.select(Run.id, Run.session_id, Run.agent_id)
                                           .where(Run.id == self.run_id)).one()
        return self._run

    def card(self, event: Event, call_id: str):
        """The call as its card shows it: as this process wrote it with the event, if it did; `executing`
        after a card this stream showed approved from memory (that transition changes nothing else);
        else read, from the rows `prefetch` loaded for the batch."""
        known = self.approved.pop(call_id, None)
        if event.calls is not None and call_id in event.calls:
            call = CallCard(event.calls[call_id])
        elif event.data.get("status") == "executing" and known is not None:
            return CallCard({**vars(known), "status": "executing"})
        else:
            call = db.session.get(ToolCall, call_id)
        if call is not None and call.status == "approved":
            self.approved[call_id] = call if isinstance(call, CallCard) else CallCard.of(call)
        return call

    def prefetch(self, batch: list[Event]) -> None:
        """Load the person's messages and the cards the batch shows in one statement each (into the
        session's identity map, where render_event's `Session.get` finds them)."""
        message_ids = [e.data["message_id"] for e in batch if e.type == "user_message"]
        call_ids = {call_id for e in batch if e.type == "tool_calls" for call_id in e.data["call_ids"]
                    if e.calls is None or call_id not in e.calls}
        call_ids.update(e.data["call_id"] for e in batch if e.type == "tool_call_updated" and not (
            e.data.get("status") == "executing" and e.data["call_id"] in self.approved) and not (
            e.calls is not None and e.data["call_id"] in e.calls))
        held = []  # the identity map holds rows weakly: keep them until the batch is rendered
        if message_ids:
            held += db.session.scalars(sa.select(Message).where(Message.id.in_(message_ids))
                                       .options(sa.orm.lazyload(Message.tool_calls))).all()
        if call_ids:
            held += db.session.scalars(sa.select(ToolCall).where(ToolCall.id.in_(call_ids))).all()
        self._held = held

    def started(self, message_id: int) -> None:
        self.texts[message_id] = ""

    def add_text(self, data: dict) -> None:
        """Place a text event's words in the reply kept in memory; forget the reply (read it from the
        database when next rendered) if words before them are missing. Relayed words come with the
        whole `reply` so far, which is all the stream needs."""
        message_id, words, at = data["message_id"], data.get("text", ""), data.get("at")
        known = self.texts.get(message_id)
        if (reply := data.get("reply")) is not None:
            if known is None or len(reply) > len(known):
                self.texts[message_id] = reply
            return
        if known is None:
            return
        if at is None or at > len(known):
            del self.texts[message_id]
        elif at + len(words) > len(known):  # words it already holds (read after they were stored) stay
            self.texts[message_id] = known[:at] + words

    def shown(self, started: float, took: float) -> None:
        """A reply's text was rendered at `started`, in `took` seconds: hold the next relayed words."""
        if self.watch is not None:
            self.watch.hold_relays(started + max(TEXT_INTERVAL, RENDER_SHARE * took))

    def render_streaming(self, message_id: int, text: str) -> str:
        """A streaming reply's update: the reply so far, as Markdown (its finished blocks rendered once
        per stream), in its element, then the "Writing…" status. The templates are rendered once per
        reply, around a marker, and each update fills the reply in.

        When this stream sent the whole reply less than WHOLE_EVERY ago and the update only adds
        characters to its last paragraph (`StreamingReply.grown`), it is just those characters, to
        append to that paragraph: an update then costs (here, on the wire and in the browser) what its
        new words do, not what the whole reply does. They say where they go (`data-at`, the paragraph's
        length before them as the browser counts it, in UTF-16 units): app.js adds them only there."""
        reply = self.renders.setdefault(message_id, StreamingReply())
        html = reply.render(text)
        now = time.monotonic()
        sent_whole = self.sent_whole.get(message_id)
        if reply.grown is not None and sent_whole is not None and now - sent_whole < WHOLE_EVERY:
            before, added = reply.grown
            if not added:
                return ""
            at = len(before.encode("utf-16-le")) // 2
            return (f'<span hx-swap-oob="beforeend:#msg-{message_id}-text &gt; p:last-child" data-at="{at}">'
                    f"{escape(added)}</span>")
        self.sent_whole[message_id] = now
        if (frame := self.frames.get(message_id)) is None:
            env = current_app.jinja_env
            shell = SimpleNamespace(id=message_id, content="", state="streaming", html=Markup(_REPLY_SLOT))
            update = (env.get_template("chat/events/_message_replace.html").render(message=shell)
                      + env.get_template("chat/events/_activity.html").render(activity="Writing…"))
            before, after = update.split(_REPLY_SLOT)
            frame = self.frames[message_id] = (before, after)
        return "".join((frame[0], html, frame[1]))  # str's join: the frame is HTML already, not text

    def reply(self, message_id: int) -> str | None:
        """The reply so far, from memory, or None."""
        return self.texts.get(message_id)

    def read_reply(self, message_id: int) -> Message | None:
        message = db.session.get(Message, message_id, options=[sa.orm.lazyload(Message.tool_calls)])
        if message is not None:
            self.texts[message_id] = message.content
        return message


_REPLY_SLOT = "\x00reply\x00"  # no template's output has a NUL


def render_batch(batch: list[Event], view: StreamView) -> list[tuple[Event, str]]:
    """Each event with its fragment. A reply's text events are coalesced: only the batch's last one per
    message with words is rendered (the reply so far, as Markdown; it includes the earlier ones' words).
    After it the view's watch holds relayed words for TEXT_INTERVAL, or longer for a long reply (see
    RENDER_SHARE and bench/markdown_stream.py): a reply is re-rendered at most that often."""
    newest = {event.data["message_id"]: i for i, event in enumerate(batch)
              if event.type == "text" and event.data.get("text")}
    last_update = {event.data["call_id"]: event.seq for event in batch if event.type == "tool_call_updated"}
    view.prefetch(batch)
    shown = []
    for i, event in enumerate(batch):
        if event.type == "tool_call_updated" and last_update[event.data["call_id"]] != event.seq:
            # A card shows its row as it is now: the batch's last update of this call renders it.
            shown.append((event, _activity(event, view)))
            continue
        if event.type == "message_started":
            view.started(event.data["message_id"])
        elif event.type == "text":
            view.add_text(event.data)
            if newest.get(event.data["message_id"]) != i:
                continue
            started = time.monotonic()
            shown.append((event, render_event(event, view)))
            view.shown(started, time.monotonic() - started)
            continue
        shown.append((event, render_event(event, view)))
    return shown


def _activity(event: Event, view: StreamView) -> str:
    """The status line of a call that began executing ("Calling …"), without its card."""
    if event.data.get("status") != "executing":
        return ""
    call_id = event.data["call_id"]
    if (written := (event.calls or {}).get(call_id)) is not None:
        name = written["name"]
    else:
        call = view.approved.get(call_id) or db.session.get(ToolCall, call_id)
        name = None if call is None else call.name
    return "" if name is None else render_template("chat/events/_activity.html", activity=f"Calling {name}…")


def render_event(event: Event, view: StreamView) -> str:
    data = event.data or {}
    match event.type:
        case "text" | "message_completed":
            # The reply so far, rendered whole (the same renderer and sanitiser as a finished one): it
            # holds at least this event's words, so a replayed or late event never shows less.
            # Rendered without Flask's context processors (the outbox query, the user): the hottest path.
            # An interrupted reply shows what was stored: words relayed but never stored are dropped,
            # as a reload would.
            content = view.reply(data["message_id"])
            state = "streaming" if event.type == "text" else data.get("state")
            if content is None or state not in ("streaming", "done"):
                message = view.read_reply(data["message_id"])
                if message is None:
                    return ""
                content, state = message.content, message.state
            if state == "streaming":
                return view.render_streaming(data["message_id"], content)
            reply = SimpleNamespace(id=data["message_id"], content=content, state=state)
            return current_app.jinja_env.get_template("chat/events/_message_replace.html").render(message=reply)
        case "message_started":
            # A new reply is empty and streaming: its shell needs no query (text events fill it).
            run = view.run()
            reply = SimpleNamespace(id=data["message_id"], role="assistant", content="", state="streaming",
                                    session_id=run.session_id, created_at=event.created_at, tool_calls=[])
            return render_template("chat/events/_message_append.html", message=reply, agent_id=run.agent_id)
        case "user_message":
            # This fragment never shows the message's cards: skip loading its tool calls.
            message = db.session.get(Message, data["message_id"], options=[sa.orm.lazyload(Message.tool_calls)])
            if message is None:
                return ""
            return render_template("chat/events/_message_append.html", message=message, agent_id=None)
        case "tool_calls":
            written = event.calls or {}
            calls = [CallCard(written[call_id]) if call_id in written else db.session.get(ToolCall, call_id)
                     for call_id in data["call_ids"]]
            return render_template("chat/events/_calls_append.html", message_id=data["message_id"],
                                   calls=[c for c in calls if c is not None])
        case "tool_call_updated":
            call = view.card(event, data["call_id"])
            if call is None:
                return ""
            # The outbox changed when the notification was sent: it is rendered with that `done` event
            # only (an earlier event that already finds the card done is followed by it).
            status = data.get("status", call.status)
            fragment = render_template("chat/events/_call_replace.html", call=call,
                                       outbox=call.name == "send_notification" and status == "done")
            if status == "executing":
                fragment += render_template("chat/events/_activity.html", activity=f"Calling {call.name}…")
            return fragment
        case _:
            # A replayed state change shows the state it recorded, not today's: replaying an old
            # "started" as "paused" would replace the stream element and close the stream before the
            # rest arrived. Only a failure's message is read (the run's other fields never change).
            run = view.run()
            status = STATUS_AFTER.get(event.type)
            error = db.session.scalar(sa.select(Run.error).where(Run.id == run.id)) \
                if status in (None, RunStatus.FAILED) else None
            if status is None:
                status = db.session.scalar(sa.select(Run.status).where(Run.id == run.id))
            return render_template("chat/events/_run_state.html", cursor=event.seq, run=SimpleNamespace(
                id=run.id, session_id=run.session_id, status=status, error=error, agent_id=run.agent_id))
