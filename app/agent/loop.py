"""The agent loop, in the background executor (never inside a request): take the run's lease, run
its approved calls, call the model, record the calls it makes, and finish (pause, complete, fail).

    run:  queued -> running -> paused -> queued -> running -> ... -> completed | failed | cancelled
    call: pending -> approved | rejected | expired;  approved -> executing -> done | failed | outcome_unknown
    (a new call may start approved: it needs no confirmation, its rule let it through, or a grant: app.agent.rules)

Transactions are few and short and none stays open across a model call or a tool; every commit
renews the lease and is the cancel check (`recovery.commit_owned`).
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime
from types import SimpleNamespace

import sqlalchemy as sa
from flask import current_app

from app.agent import events, rules
from app.agent.context import TurnStart, build_context, conversation_select, read_context, turn_from_rows
from app.agent.events import Then
from app.agent.llm import ContextItem, ModelError, TextDelta, ToolCallRequest, TurnDone
from app.agent.recovery import WORKER_ID, commit_owned, lease_until
from app.agent.tools import ToolArgumentError, ToolContext, ToolError
from app.extensions import begin_reads, db, reads_only
from app.models import CallStatus, Message, Run, RunStatus, ToolCall, new_id, utcnow

log = logging.getLogger(__name__)


# A reply's words reach this process's streams from memory as they arrive (each stream takes them as
# often as it shows them: `Watch.hold_relays`), and are stored (with their text event, which other
# processes' streams and a reload read) every STORE_SECONDS: a durable write per token, or per 40 ms,
# cost more than everything else a streamed reply does.
STORE_SECONDS = 0.25


MAX_MODEL_TURNS = 12              # a model that keeps calling tools is stopped, not looped forever


def agent_of(agent_id: str | None):
    """The agent with this id from the registry the app was built with (app.extensions["agents"]),
    or None: the core is handed its agents, it never imports them."""
    return current_app.extensions["agents"].get(agent_id)


@dataclass(frozen=True)
class RunRef:
    """Plain values of the run being executed. The loop never touches ORM objects across a commit: an
    expired attribute would silently open a transaction and hold it (and SQLite's write lock) for the
    whole model stream or tool run."""
    id: str
    session_id: str
    owner_id: int
    agent_id: str


def execute(run_id: str) -> None:
    """Take the run's lease and drive it until it pauses, completes, fails or is cancelled.

    Transactions are few and short: taking the run shares one with the first step (a tool call's
    `executing`, or the model turn's new message), and none stays open across a model call or a tool."""
    # The same statement names the first call waiting to be executed (none: a new run's first step is
    # the model, with no query for its calls), and on PostgreSQL reads that model turn's context.
    chains = _agreed_chaining()
    taken, turn = _take(run_id, chains)
    if taken is None:
        db.session.rollback()
        return  # another worker has it, or it was cancelled meanwhile
    run = RunRef(run_id, *taken[:3])
    next_call = taken[3]
    agent = agent_of(run.agent_id)
    if agent is None:
        _finish(run.id, RunStatus.FAILED, "run_failed",
                error=f"The agent {run.agent_id!r} is no longer configured on this server.")
        return
    model = current_app.extensions["models"].for_agent(agent)
    try:
        for _ in range(MAX_MODEL_TURNS):
            if next_call is not None:
                ran, turn = _execute_approved_calls(run, agent, next_call, chains)
                if not ran:
                    return
            next_call = _UNKNOWN  # after a model turn, its auto-approved calls may wait
            outcome, turn = _model_turn(run, agent, model, turn), None
            if outcome != "tools":
                return
        _finish(run.id, RunStatus.FAILED, "run_failed",
                error=f"Stopped after {MAX_MODEL_TURNS} model turns in a row without an answer.")
    except Exception:
        log.exception("run %s crashed", run_id)
        db.session.rollback()
        _finish(run_id, RunStatus.FAILED, "run_failed", error="Something went wrong on the server. Retry to continue.")


def _model_turn(run: RunRef, agent, model, turn: TurnStart | None = None) -> str:
    """One model call. Returns 'done', 'tools' (calls ran or are approved: loop), or 'stopped'. `turn`:
    its context, if the run's taking read it."""
    chains = getattr(model, "chains", False)
    if turn is None:
        begin_reads()  # unless it joins the run's taking, the context is a read of its own
        turn = read_context(run.session_id, from_chain_head=chains, owner_id=run.owner_id, agent_id=run.agent_id)
    context, reply_id = turn.context, turn.reply_id
    # Nothing more is written before the model call: the reply's row is made with its first words (or
    # at the turn's end), in the transaction that numbers them. The commit ends the run's taking, if
    # it is still open; no transaction stays open while the model streams.
    db.session.commit()
    message_id = None

    def full_context() -> list[ContextItem]:
        """The whole conversation, for a provider whose chain was forgotten (read, then let go)."""
        items = build_context(run.session_id)
        db.session.rollback()
        return items

    requests: list[ToolCallRequest] = []
    response_id = None
    reply = ""  # the reply so far
    written = 0  # characters of it stored so far: each text event says where its words go
    last_store = 0.0  # the first words are stored at once (the reply's row with them)
    # A tail starts at the chain head; without one the context is already the whole conversation.
    is_tail = chains and context and context[0].role == "assistant" and context[0].response_id
    stream_kwargs = {"full_context": full_context} if is_tail else {}
    try:
        tools = agent.load_tools()  # may start MCP servers: no transaction is open here
        for event in model.stream(agent.instructions, context, [t.openai_function() for t in tools],
                                  **stream_kwargs):
            if isinstance(event, TextDelta):
                reply += event.text
                now = time.monotonic()
                if now - last_store >= STORE_SECONDS:
                    if message_id is None:
                        message_id, insert = _new_reply(run, reply, reply_id)
                        if not commit_owned(run.id, then=insert):
                            return "stopped"
                    elif not _flush_text(run.id, message_id, written, reply[written:]):
                        return "stopped"
                    written, last_store = len(reply), now
                else:
                    events.relay(run.id, message_id, reply)
            elif isinstance(event, ToolCallRequest):
                requests.append(event)
            elif isinstance(event, TurnDone):
                response_id = event.response_id
    except ModelError as exc:
        db.session.rollback()
        Run.hold(run.id)
        if message_id is None:
            message_id, _ = _new_reply(run, reply, None)
        elif len(reply) > written:
            _append_text(run.id, message_id, written, reply[written:])
        interrupt_message(run.id, message_id)
        _finish(run.id, RunStatus.FAILED, "run_failed", error=str(exc))
        return "stopped"
    finally:
        if message_id is not None:
            events.relayed(run.id, message_id)
    pending_text = reply[written:]

    # The turn's end is one transaction: the last words, the message, its calls, the new state. The
    # events' numbering also checks and renews the lease and sets the run's new state, and it takes the
    # run's row before any existing row (the lock order; a reply inserted now is new, see
    # _new_reply); the calls' previews are made before the transaction begins.
    calls, gated = _new_calls(run, agent, message_id, requests, turn.grants_live)
    made_whole = message_id is None
    then: tuple[Then, ...] = ()
    if made_whole:  # no words flushed yet (a turn of tool calls): its reply is made now, whole
        message_id, then = _new_reply(run, pending_text, reply_id, state="done", response_id=response_id)
        for call in calls:
            call["message_id"] = message_id
    else:
        then = (Then(_message_done, {"message_id": message_id, "turn_response_id": response_id,
                                     "text": pending_text}),)
    if calls:
        then += (_calls_then(calls),)
    if not made_whole and pending_text:
        events.append(run.id, "text", {"message_id": message_id, "text": pending_text, "at": written})
    events.append(run.id, "message_completed", {"message_id": message_id, "state": "done"},
                  row={"state": "done", "response_id": response_id})
    if calls:
        events.append(run.id, "tool_calls", {"message_id": message_id, "call_ids": [call["id"] for call in calls]},
                      calls={call["id"]: call for call in calls})
    outcome = "done" if not requests else "stopped" if gated else "tools"
    ended = {"done": RunStatus.COMPLETED, "stopped": RunStatus.PAUSED}.get(outcome)
    if ended:
        events.append(run.id, "run_completed" if ended == RunStatus.COMPLETED else "run_paused")
    if not events.write(run.id, WORKER_ID, lease_until(), then=then, run_values=ended and {
            "status": ended, "error": None, "lease_owner": None, "lease_until": None}):
        db.session.rollback()
        return "stopped"  # cancelled meanwhile, or recovered by another worker
    db.session.commit()
    return outcome


def _new_calls(run: RunRef, agent, message_id: int, requests: list[ToolCallRequest],
               grants_live: bool = True) -> tuple[list[dict], bool]:
    """The turn's calls as ledger rows, and whether any needs confirmation (then nothing of this turn
    runs until every gated call is decided). Invalid ones fail at once (the model reads the error).
    `grants_live` False: the account had no grant for the agent, so none is looked for."""
    ctx = tool_context(run)
    any_gated = False
    now = utcnow()
    calls = []
    for position, request in enumerate(requests):
        call = dict(id=new_id("tc"), run_id=run.id, message_id=message_id, position=position,
                    call_id=request.call_id, name=request.name, raw_arguments=request.arguments or "",
                    arguments=None, requires_confirmation=False, kind="confirm", status=CallStatus.FAILED,
                    error=None, preview=None, decided_by=None, decided_at=None, created_at=now, updated_at=now,
                    approvers=None, expires_at=None, allow_always=False, grant_id=None)
        tool = agent.tool(request.name)
        if tool is None:
            call["error"] = f"Unknown tool {request.name!r}. Available: {', '.join(t.name for t in agent.tools)}."
        else:
            call.update(requires_confirmation=tool.pauses, kind=tool.kind)
            try:
                call["arguments"] = tool.validate_proposal(request.arguments or "{}")
            except ToolArgumentError as exc:
                call["error"] = f"Invalid arguments: {exc}"
            else:
                call.update(rules.gate(tool, call["arguments"], ctx, run.agent_id, now, grants_live))
                if call["status"] == CallStatus.PENDING:
                    any_gated = True
                    call["preview"] = safe_preview(tool, ctx, call["arguments"])
        calls.append(call)
    return calls, any_gated


_UNKNOWN = ""  # "ask the database which approved call comes first"


def _agreed_chaining() -> bool | None:
    """On PostgreSQL, whether every agent's model chains its turns (`Models.chaining`), so a statement
    that does not know the run's agent yet can read a model turn's context with its other work (where
    the context starts depends on it); None on SQLite, or when the models disagree."""
    if db.session.get_bind().dialect.name != "postgresql":
        return None
    return current_app.extensions["models"].chaining(current_app.extensions["agents"].all())


def _take(run_id: str, chains: bool | None) -> tuple[sa.Row | None, TurnStart | None]:
    """Take the queued run: (session_id, owner_id, agent_id, its first approved call), or None. With
    `chains` (`_agreed_chaining`) the same statement reads the first model turn's context if no
    approved call comes first."""
    params = {"run_id": run_id, "worker": WORKER_ID, "until": lease_until(), "now": utcnow()}
    if chains is None:
        return db.session.execute(_taking(), params).first(), None
    rows = db.session.execute(_taking_with_turn(chains), params).all()
    if not rows:
        return None, None
    taken = rows[0]
    if taken.next_call is not None or taken.id is None:
        return taken, None
    return taken, turn_from_rows(rows, reserve_reply_id=True, grants=True)


# The loop's own hot statements are Core, built once with their values bound (no ORM unit of work,
# no statement built per step).
@functools.cache
def _taking():
    """Take a queued run (bound: run_id, worker, until, now): its fields and its first approved call."""
    runs = Run.__table__
    run_id = sa.bindparam("run_id", type_=runs.c.id.type)
    return sa.update(runs).where(runs.c.id == run_id, runs.c.status == RunStatus.QUEUED) \
        .values(status=RunStatus.RUNNING, lease_owner=sa.bindparam("worker", type_=runs.c.lease_owner.type),
                lease_until=sa.bindparam("until", type_=runs.c.lease_until.type),
                updated_at=sa.bindparam("now", type_=runs.c.updated_at.type)) \
        .returning(runs.c.session_id, runs.c.owner_id, runs.c.agent_id,
                   ToolCall.first_approved(run_id).label("next_call"))


@functools.cache
def _taking_with_turn(chains: bool):
    """PostgreSQL: `_taking`, joined to the run's conversation (`_run_turn`, one row per message and
    call) when no approved call waits; one row of NULLs for it otherwise."""
    run_id = sa.bindparam("run_id", type_=Run.__table__.c.id.type)

    taken = _taking().cte("taken")
    turn = _run_turn(run_id, chains).where(sa.select(taken.c.next_call).scalar_subquery().is_(None)).subquery("turn")
    return sa.select(taken, turn).select_from(taken).outerjoin(turn, sa.true()) \
        .order_by(turn.c.id, turn.c.position)


def _run_turn(run_id, chains: bool) -> sa.Select:
    """The run's next model turn's context (`context.conversation_select`, reserving the reply's id,
    with the grants), finding the run's session, owner and agent by `run_id` (they never change)."""
    runs = Run.__table__

    def of_run(column):
        return sa.select(column).where(runs.c.id == run_id).scalar_subquery()

    return conversation_select(of_run(runs.c.session_id), chains, reserve_reply_id=True,
                               grants=(of_run(runs.c.owner_id), of_run(runs.c.agent_id)))


@functools.cache
def _turn_after_the_calls(chains: bool):
    """For `events.write_with_call(read=…)`: the next model turn's context, read by the statement that
    records a call's outcome when no approved call comes after it (that call's row as it was before)."""
    def read(changed, run_id):
        return _run_turn(run_id, chains).where(sa.select(changed.c.next_call).scalar_subquery().is_(None))
    return read


def _turn_with(rows: tuple[dict, ...], call) -> TurnStart:
    """The TurnStart of `_turn_after_the_calls`'s rows, with `call`'s new row in place of its old one."""
    new = {name: getattr(call, name) for name in ("call_id", "name", "raw_arguments", "status", "result", "reason",
                                                  "error", "kind", "arguments", "original_arguments", "position")}
    rows = [SimpleNamespace(**(row | new if row["id"] == call.message_id and row["call_id"] == call.call_id
                               else row)) for row in rows]
    rows.sort(key=lambda row: (row.id, -1 if row.position is None else row.position))
    return turn_from_rows(rows, reserve_reply_id=True, grants=True)


@functools.cache
def _first_approved():
    """The run's first approved call (bound: run_id)."""
    return sa.select(ToolCall.first_approved(sa.bindparam("run_id", type_=ToolCall.__table__.c.run_id.type)))


def _next_approved(run_id: str) -> str | None:
    return db.session.scalar(_first_approved(), {"run_id": run_id})


def _execute_approved_calls(run: RunRef, agent, next_call: str, chains: bool | None = None
                            ) -> tuple[bool, TurnStart | None]:
    """Run every approved call once, from `next_call` (_UNKNOWN: look it up): `executing` is committed
    before the side effect starts, and the outcome is committed as soon as it is known. Each of the
    two is one statement on PostgreSQL (the call, the run's lease and numbering, the event), and the
    outcome's statement names the next approved call, so no query lists them; with `chains`
    (`_agreed_chaining`) the last outcome's statement also reads the next model turn's context.
    Returns (False: stop here, the run is no longer ours; that context, if read)."""
    ctx = tool_context(run)
    read = _turn_after_the_calls(chains) if chains is not None else None
    turn = None
    if next_call == _UNKNOWN:
        next_call = _next_approved(run.id)
    while next_call is not None:
        call_id, next_call = next_call, None
        events.append(run.id, "tool_call_updated", {"call_id": call_id, "status": CallStatus.EXECUTING})
        started = events.write_with_call(
            run.id, ToolCall.cas(call_id, CallStatus.APPROVED, CallStatus.EXECUTING).returning_row(),
            WORKER_ID, lease_until())
        if not started.ours:
            db.session.rollback()
            return False, None  # cancelled between approval and execution: the side effect never starts
        if started.call is None:  # decided otherwise meanwhile (the run was stopped): it never starts
            db.session.rollback()
            next_call = _next_approved(run.id)
            continue
        db.session.commit()
        name, arguments = started.call.name, started.call.arguments
        tool = agent.tool(name)
        if tool is None:  # an MCP tool listed by another worker: list it here (no transaction is open)
            agent.load_tools()
            tool = agent.tool(name)
        try:
            if tool is None:  # e.g. its MCP server cannot be reached now
                raise ToolError(f"The tool {name} is not available now.")
            values = {"status": CallStatus.DONE, "result": tool.run(ctx, arguments or {})}
        except ToolError as exc:
            values = {"status": CallStatus.FAILED, "error": str(exc)}
        except Exception as exc:  # a tool reports a problem by raising; it must not take the run down
            log.warning("tool %s raised %s", name, type(exc).__name__, exc_info=True)
            values = {"status": CallStatus.FAILED, "error": _raised(exc)}
        status = values.pop("status")
        events.append(run.id, "tool_call_updated", {"call_id": call_id, "status": status})
        # The outcome is recorded even after a Stop (the side effect happened); not when another worker
        # has recovered the run meanwhile (the call is then outcome_unknown, and stays so).
        ended = events.write_with_call(
            run.id, ToolCall.cas(call_id, CallStatus.EXECUTING, status, **values).returning_row(next_approved=True),
            read=read)
        if not ended.ok:
            db.session.rollback()
            next_call = _next_approved(run.id)
            continue
        next_call = ended.call.next_call
        turn = _turn_with(ended.read, ended.call) if ended.read and next_call is None else None
        db.session.commit()  # the ledger records the outcome before anything else can go wrong
    return True, turn


def _raised(exc: Exception) -> str:
    """What a tool's exception says, for the card and the model (never a traceback)."""
    text = " ".join(str(exc).split())[:1000]
    return f"{type(exc).__name__}: {text}" if text else f"The tool failed ({type(exc).__name__})."


def tool_context(run: RunRef) -> ToolContext:
    return ToolContext(workspace=db.engines["workspace"], owner_id=run.owner_id, run_id=run.id,
                       session_id=run.session_id)


def safe_preview(tool, ctx, arguments) -> str | None:
    """What the card says a call would do. The preview reads the workspace as a reader only (on SQLite
    a snapshot, not the write lock), so showing or approving a card never waits for a busy writer."""
    if not tool.preview:
        return None
    if ctx.workspace is not None:
        ctx = replace(ctx, workspace=ctx.workspace.execution_options(**reads_only(ctx.workspace)))
    try:
        return tool.preview(ctx, arguments)
    except Exception:  # a preview is a courtesy; the card works without it
        log.exception("preview of %s failed", tool.name)
        return None


def _new_reply(run: RunRef, text: str, reply_id: int | None, state: str = "streaming",
               response_id: str | None = None) -> tuple[int, tuple[Then, ...]]:
    """The turn's reply with its first words, and `message_started` and their `text` event queued.
    With its id reserved (`reply_id`, PostgreSQL) its row is a write for `events.write` to fold into the
    statement that numbers those events (returned); without, it is inserted now. Either way a new row
    nobody else can see or lock yet, so it may come before the run's row is taken (the lock order)."""
    values = {"reply_session_id": run.session_id, "reply_run_id": run.id, "reply_state": state,
              "reply_content": text, "reply_response_id": response_id, "reply_created_at": utcnow()}
    if reply_id is None:
        message_id, insert = db.session.execute(_reply_insert(None), values).scalar_one(), ()
    else:
        message_id, insert = reply_id, (Then(_reply_insert, {**values, "reply_id": reply_id}),)
    row = {name: values[f"reply_{name}"] for name in _REPLY_COLUMNS}
    events.append(run.id, "message_started", {"message_id": message_id},
                  row={**row, "id": message_id, "role": "assistant"})
    if text:
        events.append(run.id, "text", {"message_id": message_id, "text": text, "at": 0})
    return message_id, insert


def _append_text(run_id: str, message_id: int, at: int, text: str) -> None:
    """In a transaction that already holds the run's row (see Run.lock). The event and the stored
    reply change together; `at` (the characters stored before these words) lets a stream that keeps
    the reply in memory place them, and know when it missed some."""
    events.append(run_id, "text", {"message_id": message_id, "text": text, "at": at})
    db.session.execute(_message_text_update(), {"message_id": message_id, "text": text})


def _flush_text(run_id: str, message_id: int, at: int, text: str) -> bool:
    """Append streamed text to the message and the event log in one short transaction. Numbering the
    event comes first: it takes the run's row (and renews the lease) before the message's, the order
    a Stop takes them in (see Run.lock), at no extra statement on the hottest write path."""
    events.append(run_id, "text", {"message_id": message_id, "text": text, "at": at})
    if not events.write(run_id, WORKER_ID, lease_until(),
                        then=(Then(_message_text_update, {"message_id": message_id, "text": text}),)):
        db.session.rollback()
        return False
    db.session.commit()
    return True


# The reply's and its calls' writes, each built once per `gate` (see events.Then: None, or the condition
# under which PostgreSQL's folded statement makes them).
_REPLY_COLUMNS = ("session_id", "run_id", "state", "content", "response_id", "created_at")


@functools.cache
def _reply_insert(gate):
    """A turn's reply, role assistant (bound: reply_<column>). Without `gate` inserted as it is and its id
    returned; with `gate`, its reserved id is given too (reply_id)."""
    messages = Message.__table__
    values = {name: sa.bindparam(f"reply_{name}", type_=messages.c[name].type) for name in _REPLY_COLUMNS}
    values["role"] = sa.literal("assistant", messages.c.role.type)
    if gate is None:
        return sa.insert(messages).values(values).returning(messages.c.id)
    values["id"] = sa.bindparam("reply_id", type_=messages.c.id.type)
    return sa.insert(messages).from_select(list(values), sa.select(*values.values()).where(gate))


@functools.cache
def _message_text_update(gate=None):
    """Append text to a reply (bound: message_id, text)."""
    messages = Message.__table__
    update = sa.update(messages).where(messages.c.id == sa.bindparam("message_id", type_=messages.c.id.type)) \
        .values(content=messages.c.content + sa.bindparam("text", type_=messages.c.content.type))
    return update if gate is None else update.where(gate)


@functools.cache
def _message_done(gate=None):
    """End a streamed reply (bound: message_id, turn_response_id, text: its last words)."""
    messages = Message.__table__
    return _message_text_update(gate).values(
        state="done", response_id=sa.bindparam("turn_response_id", type_=messages.c.response_id.type))


def _calls_then(calls: list[dict]) -> Then:
    """The turn's new calls' rows: one per row on SQLite, one JSON array folded into the turn's end on
    PostgreSQL (its datetimes as ISO text, which PostgreSQL reads back as timestamps)."""
    as_json = [{key: value.isoformat() if isinstance(value, datetime) else value for key, value in call.items()}
               for call in calls]
    return Then(_calls_insert, calls, folded_params={"new_calls": as_json})


@functools.cache
def _calls_insert(gate):
    """New calls (bound: a row per call; with `gate`, new_calls: a JSON array of rows, PostgreSQL's
    `json_populate_recordset`: a column a row leaves out is NULL)."""
    calls = ToolCall.__table__
    if gate is None:
        return sa.insert(calls)
    rows = sa.func.json_populate_recordset(sa.literal_column(f"NULL::{calls.name}"), sa.bindparam(
        "new_calls", type_=sa.JSON())).table_valued(*calls.c.keys()).alias("new_calls")
    names = list(calls.c.keys())
    return sa.insert(calls).from_select(names, sa.select(*(rows.c[name] for name in names)).where(gate))


def interrupt_message(run_id: str, message_id: int) -> None:
    messages = Message.__table__
    db.session.execute(sa.update(messages).where(messages.c.id == message_id).values(state="interrupted"))
    events.append(run_id, "message_completed", {"message_id": message_id, "state": "interrupted"},
                  row={"state": "interrupted"})


def _finish(run_id: str, status: str, event: str, error: str | None = None) -> None:
    """Leave the running state (only if we still hold it: a cancel wins over a late finish)."""
    if Run.transition(run_id, RunStatus.RUNNING, status, extra=[Run.lease_owner == WORKER_ID],
                       error=error, lease_owner=None, lease_until=None):
        events.append(run_id, event)
        db.session.commit()
    else:
        db.session.rollback()
