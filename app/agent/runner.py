"""The agent loop and the run state machine.

    run:  queued -> running -> paused -> queued -> running -> ... -> completed | failed | cancelled
    call: pending -> approved | rejected;  approved -> executing -> done | failed | outcome_unknown

Every transition is a compare-and-set (`UPDATE ... WHERE status = <expected>`, then check the row
count), so double clicks, two tabs or two workers decide once and execute once. Nothing here knows of
requests or HTML: views, tests, CLI commands and the background executor all call these functions
inside an app context, and read the results from the database.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from app.agent import events
from app.agent.refusals import Conflict, Invalid, NotFound, TooLarge, TooMany
from app.agent.llm import ContextItem, ModelError, TextDelta, ToolCallRequest, TurnDone
from app.agent.tools import ToolArgumentError, ToolContext, ToolError
from app.extensions import db
from app.models import Account, CallStatus, ChatSession, Message, Run, RunStatus, ToolCall, new_id, utcnow

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.04              # batch streamed tokens: one write per ~40 ms, not per token
MAX_MODEL_TURNS = 12              # a model that keeps calling tools is stopped, not looped forever
MAX_MESSAGE_CHARS = 8000
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"

INTERRUPTED = "Interrupted: the server stopped while this reply was being written. Retry to continue."
OUTCOME_UNKNOWN_TEXT = ("Error: the outcome is unknown. The server stopped while this tool was running; "
                        "it was not run again.")


# ---------------------------------------------------------------------------------------------------
# Commands: start, decide, retry, cancel
# ---------------------------------------------------------------------------------------------------

def start_run(chat: ChatSession, text: str) -> tuple[Run, int]:
    """Add the person's message and start (or resume) a run. Returns the run and the event cursor
    from which a stream shows everything this message caused."""
    text = (text or "").strip()
    if not text:
        raise Invalid("Type a message first.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise TooLarge(f"That message is too long ({len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,}).")

    check_active_runs(chat.owner_id)
    latest = Run.latest_in(chat.id)
    if latest is not None and latest.is_active:
        raise Conflict("The agent is still answering. Wait for it to finish, or press Stop.", run=latest)

    answers_cards = latest is not None and latest.status == RunStatus.PAUSED
    if answers_cards:
        run, cursor = _answer_paused_run(latest, text)
    else:
        agent = agent_of(chat.agent_id)
        if agent is None:
            raise Conflict(f"The agent {chat.agent_id!r} of this chat is no longer configured on this server.")
        run = Run(session_id=chat.id, owner_id=chat.owner_id, agent_id=chat.agent_id, input=text,
                  status=RunStatus.QUEUED, model=current_app.extensions["models"].for_agent(agent).label)
        db.session.add(run)
        db.session.flush()
        cursor = 0
        events.append(run.id, "run_started")
    message = Message(session_id=chat.id, run_id=run.id, role="user", content=text)
    db.session.add(message)
    db.session.flush()
    events.append(run.id, "user_message", {"message_id": message.id})
    if chat.title == "New chat":
        chat.title = _title_from(text)
    chat.updated_at = utcnow()
    run_id = run.id
    db.session.commit()
    submit(run_id, model_first=not answers_cards)  # approved calls of a paused run may run first
    return run, cursor


def check_active_runs(owner_id: int) -> None:
    """At most MAX_ACTIVE_RUNS runs of one account are queued or running at once (a run waiting for a
    decision does not count): one person cannot take all of a worker's runs, or the model budget.
    The account's row is locked first, so two messages at once cannot both take the last place
    (SQLite's BEGIN IMMEDIATE already serialises them); nothing else locks accounts after runs."""
    cap = current_app.config.get("MAX_ACTIVE_RUNS")
    if not cap:
        return
    db.session.execute(sa.select(Account.id).where(Account.id == owner_id).with_for_update())
    active = db.session.scalar(sa.select(sa.func.count()).select_from(Run).where(
        Run.owner_id == owner_id, Run.status.in_([RunStatus.QUEUED, RunStatus.RUNNING])))
    if active >= cap:
        db.session.rollback()
        raise TooMany(f"You have {active} replies in progress (the limit is {cap}). Wait for one to finish, "
                      "or stop one, then try again.")


def _answer_paused_run(run: Run, text: str) -> tuple[Run, int]:
    """A message typed while cards are pending rejects them, with the message as the reason."""
    cursor = Run.lock(run.id)
    pending = db.session.scalars(sa.select(ToolCall.id).where(
        ToolCall.run_id == run.id, ToolCall.status == CallStatus.PENDING)).all()
    for call_id in pending:
        if ToolCall.transition(call_id, CallStatus.PENDING, CallStatus.REJECTED,
                            decided_by="user", decided_at=utcnow(), reason=text):
            events.append(run.id, "tool_call_updated", {"call_id": call_id, "status": CallStatus.REJECTED})
    if not Run.transition(run.id, RunStatus.PAUSED, RunStatus.QUEUED, input=text):
        db.session.rollback()
        raise Conflict("This run changed meanwhile; reload to see its state.", run=db.session.get(Run, run.id))
    events.append(run.id, "run_resumed")
    return run, cursor


def decide(owner_id: int | None, run_id: str, call_id: str, approve: bool, reason: str | None = None,
           decider_id: int | None = None) -> tuple[ToolCall, int]:
    """Approve or reject one pending call. Returns the call and the cursor to stream the run from.

    `owner_id` scopes the lookup to that account's runs (None: an admin, for anyone's); `decider_id` is
    recorded as who decided. The second of two racing decisions gets a 409 with the call's current state."""
    call = ToolCall.owned_by(owner_id, run_id, call_id) or _refuse_missing("No such tool call.")
    reason = (reason or "").strip()[:2000] or None
    cursor = Run.lock(run_id)
    status = CallStatus.APPROVED if approve else CallStatus.REJECTED
    if not ToolCall.transition(call.id, CallStatus.PENDING, status, decided_by="user", decided_at=utcnow(),
                            reason=None if approve else reason, decider_id=decider_id):
        db.session.rollback()
        call = db.session.get(ToolCall, call.id)
        raise Conflict(f"This call was already {call.status.replace('_', ' ')}.", call=call)
    events.append(run_id, "tool_call_updated", {"call_id": call.id, "status": status})
    still_pending = db.session.scalar(sa.select(sa.func.count()).select_from(ToolCall).where(
        ToolCall.run_id == run_id, ToolCall.status == CallStatus.PENDING))
    resumed = still_pending == 0 and Run.transition(run_id, RunStatus.PAUSED, RunStatus.QUEUED)
    if resumed:
        events.append(run_id, "run_resumed")
    db.session.commit()
    # Nothing reads the database after the commit here: a caller that then loses it must still be
    # able to say the decision was recorded (its attributes load again when next read).
    if resumed:
        submit(run_id)
    return call, cursor


def retry(owner_id: int, run_id: str) -> tuple[Run, int]:
    """Continue a failed run from its last good state (the broken-off reply stays, marked)."""
    check_active_runs(owner_id)
    run = _owned_run(owner_id, run_id)
    cursor = run.last_seq
    if not Run.transition(run.id, RunStatus.FAILED, RunStatus.QUEUED, error=None):
        db.session.rollback()
        raise Conflict("Only a failed run can be retried.", run=db.session.get(Run, run.id))
    events.append(run_id, "run_resumed")
    db.session.commit()
    submit(run_id)
    return run, cursor  # read again when used (nothing is read after the commit, see decide)


def cancel(owner_id: int, run_id: str) -> Run:
    """Stop a run now. A streaming worker notices at its next flush; a paused run's cards expire."""
    run = _owned_run(owner_id, run_id)
    for status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED):
        if Run.transition(run.id, status, RunStatus.CANCELLED, lease_owner=None, lease_until=None):
            break
    else:
        db.session.rollback()
        raise Conflict(f"This run has already {run.status}.", run=run)
    for call_id in db.session.scalars(sa.select(ToolCall.id).where(
            ToolCall.run_id == run.id, ToolCall.status.in_([CallStatus.PENDING, CallStatus.APPROVED]))):
        if ToolCall.transition(call_id, None, CallStatus.REJECTED, reason="The run was stopped.",
                            decided_by="user", decided_at=utcnow()):
            events.append(run.id, "tool_call_updated", {"call_id": call_id, "status": CallStatus.REJECTED})
    for message_id in db.session.scalars(sa.select(Message.id).where(
            Message.run_id == run.id, Message.state == "streaming")):
        _interrupt_message(run.id, message_id)
    events.append(run.id, "run_cancelled")
    db.session.commit()
    return run  # read again when used (nothing is read after the commit, see decide)


@dataclass(frozen=True)
class Decision:
    """What a client decided about one call of a paused run (one entry of the REST API's continue).

    `call_id` is the model's id for the call. `confirmed` None leaves the call pending. `tool_name` and
    `arguments`, when sent, are checked against the stored call: the server's copy is the truth, so a
    different name is refused, and different arguments are an edit, which only an `editable` tool
    accepts (validated again; approved as edited, or left pending with them). `user_input` and
    `external_result` are the reference's fields for the other kinds of pause; no tool asks for them
    yet, so sending them is refused rather than silently ignored."""
    call_id: str
    tool_name: str | None = None
    arguments: dict | None = None
    confirmed: bool | None = None
    note: str | None = None
    user_input: dict | None = None
    external_result: str | None = None


def continue_run(owner_id: int, run_id: str, decisions: list[Decision], decider_id: int | None = None
                 ) -> tuple[Run, int]:
    """Apply several decisions to a paused run at once. Returns the run and the cursor to stream from.

    All or nothing: every entry is checked before anything is written (422 for an unknown call, a
    different tool name, an edit the tool does not allow or invalid edited arguments; 409 for a
    decision that contradicts one already made), then each new decision is a compare-and-set, all in
    one transaction; losing any of them (a double click, two clients) rolls back the lot and is a 409
    with the current run. Calls left out or with `confirmed` None stay pending, and the run stays
    paused until none is. A failed run is retried (so a continue whose model call failed can simply
    be sent again); any other state is a 409, and no model is called."""
    run = _owned_run(owner_id, run_id)
    cursor = Run.lock(run.id)
    calls = {c.call_id: c for c in db.session.scalars(
        sa.select(ToolCall).where(ToolCall.run_id == run.id).order_by(ToolCall.created_at, ToolCall.position))}
    changes = _check_decisions(_RunRef(run.id, run.session_id, run.owner_id, run.agent_id), calls, decisions)
    if run.status == RunStatus.FAILED:
        db.session.rollback()
        return retry(owner_id, run_id)
    if run.status != RunStatus.PAUSED:
        db.session.rollback()
        raise Conflict(f"This run is not waiting for a decision: it is {run.status}.", run=run)
    try:
        for call, status, values in changes:
            if status != CallStatus.PENDING:
                values = {**values, "decider_id": decider_id}
            if not ToolCall.transition(call.id, CallStatus.PENDING, status, **values):
                raise _Lost()
            events.append(run_id, "tool_call_updated", {"call_id": call.id, "status": status})
        still_pending = db.session.scalar(sa.select(sa.func.count()).select_from(ToolCall).where(
            ToolCall.run_id == run_id, ToolCall.status == CallStatus.PENDING))
        resumed = still_pending == 0
        if resumed:
            if not Run.transition(run_id, RunStatus.PAUSED, RunStatus.QUEUED):
                raise _Lost()
            events.append(run_id, "run_resumed")
        db.session.commit()
    except (_Lost, sa.exc.OperationalError) as exc:
        if isinstance(exc, sa.exc.OperationalError) and getattr(exc.orig, "sqlstate", None) != "40P01":
            raise  # only a deadlock (PostgreSQL picked us to lose a race) is a conflict
        db.session.rollback()
        raise Conflict("This run changed meanwhile: another decision got there first.",
                       run=db.session.get(Run, run_id)) from None
    if resumed:
        submit(run_id)
    return run, cursor  # read again when used (nothing is read after the commit, see decide)


class _Lost(Exception):
    """A compare-and-set found the row already changed by someone else."""


def _check_decisions(run: _RunRef, calls: dict[str, ToolCall], decisions: list[Decision]) -> list:
    """Check every entry against the stored calls; return (call, new status, values) for the new
    decisions, in the calls' order (one lock order for every continue, so two cannot deadlock)."""
    agent = agent_of(run.agent_id)
    seen, changes = set(), []
    for decision in decisions:
        call = calls.get(decision.call_id)
        if call is None:
            raise Invalid(f"This run has no tool call {decision.call_id!r}.")
        if decision.call_id in seen:
            raise Invalid(f"Tool call {decision.call_id!r} is listed twice.")
        seen.add(decision.call_id)
        if decision.tool_name is not None and decision.tool_name != call.name:
            raise Invalid(f"Tool call {call.call_id!r} is a call of {call.name}, not {decision.tool_name}.")
        if decision.user_input is not None:
            raise Invalid(f"Tool call {call.call_id!r} ({call.name}) does not ask for input.")
        if decision.external_result is not None:
            raise Invalid(f"Tool call {call.call_id!r} ({call.name}) runs on the server; it takes no "
                          "result from the client.")
        edited = decision.arguments is not None and decision.arguments != call.arguments
        if call.status != CallStatus.PENDING:
            was_approved = None if call.decided_by is None else call.status != CallStatus.REJECTED
            if edited or (decision.confirmed is not None and decision.confirmed != was_approved):
                raise Conflict(f"Tool call {call.call_id!r} was already {call.status.replace('_', ' ')}.",
                               run=db.session.get(Run, run.id), call=call)
            continue  # an echo of what was already decided
        values: dict = {}
        if edited:
            tool = agent.tool(call.name) if agent else None
            if tool is None or not tool.editable:
                raise Invalid(f"{call.name} does not allow editing its arguments: send them as stored, "
                              "or leave tool_args out.")
            try:
                values["arguments"] = tool.validate(decision.arguments)
            except ToolArgumentError as exc:
                raise Invalid(str(exc)) from None
            values["preview"] = _safe_preview(tool, tool_context(run), values["arguments"])
        if decision.confirmed is None:
            if edited:  # the edit waits for its own confirmation, with a fresh preview
                changes.append((call, CallStatus.PENDING, values))
            continue
        values.update(decided_by="user", decided_at=utcnow())
        if decision.confirmed:
            changes.append((call, CallStatus.APPROVED, values))
        else:
            changes.append((call, CallStatus.REJECTED, {**values, "reason": (decision.note or "").strip()[:2000] or None}))
    order = list(calls)
    return sorted(changes, key=lambda change: order.index(change[0].call_id))


# ---------------------------------------------------------------------------------------------------
# Execution (in the background executor, never inside a request)
# ---------------------------------------------------------------------------------------------------

def agent_of(agent_id: str | None):
    """The agent with this id from the registry the app was built with (app.extensions["agents"]),
    or None: the core is handed its agents, it never imports them."""
    return current_app.extensions["agents"].get(agent_id)


def submit(run_id: str, *, model_first: bool = False) -> None:
    """Hand the run to the background executor. Call it with no transaction open: under gevent,
    starting a worker switches greenlets, and one holding SQLite's write lock would stall the rest.

    model_first: the run's next step is a model request, so let it send that before this request
    renders its response (under gevent the executor's greenlet would otherwise wait, which is time
    to first token). Not after a decision: the next step is a tool, and a tool blocked in C (a
    locked SQLite file) would hold the decision's response back with it."""
    current_app.extensions["run_executor"].submit(run_id)
    if model_first:
        time.sleep(0)


@dataclass(frozen=True)
class _RunRef:
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
    taken = db.session.execute(
        sa.update(Run).where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(status=RunStatus.RUNNING, lease_owner=WORKER_ID, lease_until=_lease_until(), updated_at=utcnow())
        .returning(Run.session_id, Run.owner_id, Run.agent_id)
        .execution_options(synchronize_session=False)).first()
    if taken is None:
        db.session.rollback()
        return  # another worker has it, or it was cancelled meanwhile
    run = _RunRef(run_id, *taken)
    agent = agent_of(run.agent_id)
    if agent is None:
        _finish(run.id, RunStatus.FAILED, "run_failed",
                error=f"The agent {run.agent_id!r} is no longer configured on this server.")
        return
    model = current_app.extensions["models"].for_agent(agent)
    try:
        for _ in range(MAX_MODEL_TURNS):
            if not _execute_approved_calls(run, agent):
                return
            outcome = _model_turn(run, agent, model)
            if outcome != "tools":
                return
        _finish(run.id, RunStatus.FAILED, "run_failed",
                error=f"Stopped after {MAX_MODEL_TURNS} model turns in a row without an answer.")
    except Exception:
        log.exception("run %s crashed", run_id)
        db.session.rollback()
        _finish(run_id, RunStatus.FAILED, "run_failed", error="Something went wrong on the server. Retry to continue.")


def _model_turn(run: _RunRef, agent, model) -> str:
    """One model call. Returns 'done', 'tools' (calls ran or are approved: loop), or 'stopped'."""
    chains = getattr(model, "chains", False)
    context = build_context(run.session_id, from_chain_head=chains)
    message_id = db.session.execute(sa.insert(Message).values(
        session_id=run.session_id, run_id=run.id, role="assistant", state="streaming", content="",
        created_at=utcnow()).returning(Message.id)).scalar_one()
    events.append(run.id, "message_started", {"message_id": message_id})
    if not _commit_owned(run.id):  # no transaction stays open while the model streams
        return "stopped"

    def full_context() -> list[ContextItem]:
        """The whole conversation, for a provider whose chain was forgotten (read, then let go)."""
        items = build_context(run.session_id)
        db.session.rollback()
        return items

    requests: list[ToolCallRequest] = []
    response_id = None
    pending_text, last_flush = "", 0.0  # the first words go out at once; later ones in batches
    # A tail starts at the chain head; without one the context is already the whole conversation.
    is_tail = chains and context and context[0].role == "assistant" and context[0].response_id
    stream_kwargs = {"full_context": full_context} if is_tail else {}
    try:
        tools = agent.load_tools()  # may start MCP servers: no transaction is open here
        for event in model.stream(agent.instructions, context, [t.openai_function() for t in tools],
                                  **stream_kwargs):
            if isinstance(event, TextDelta):
                pending_text += event.text
                if time.monotonic() - last_flush >= FLUSH_SECONDS:
                    if not _flush_text(run.id, message_id, pending_text):
                        return "stopped"
                    pending_text, last_flush = "", time.monotonic()
            elif isinstance(event, ToolCallRequest):
                requests.append(event)
            elif isinstance(event, TurnDone):
                response_id = event.response_id
    except ModelError as exc:
        db.session.rollback()
        Run.lock(run.id)
        if pending_text:
            _append_text(run.id, message_id, pending_text)
        _interrupt_message(run.id, message_id)
        _finish(run.id, RunStatus.FAILED, "run_failed", error=str(exc))
        return "stopped"

    # The turn's end is one transaction: the last words, the message, its calls, the new state.
    Run.lock(run.id)
    if pending_text:
        _append_text(run.id, message_id, pending_text)
    db.session.execute(sa.update(Message).where(Message.id == message_id)
                       .values(state="done", response_id=response_id)
                       .execution_options(synchronize_session=False))
    events.append(run.id, "message_completed", {"message_id": message_id})
    if not requests:
        _finish(run.id, RunStatus.COMPLETED, "run_completed")
        return "done"

    gated = _record_calls(run, agent, message_id, requests)
    if gated:
        _finish(run.id, RunStatus.PAUSED, "run_paused")
        return "stopped"
    return "tools" if _commit_owned(run.id) else "stopped"


def _record_calls(run: _RunRef, agent, message_id: int, requests: list[ToolCallRequest]) -> bool:
    """Store the turn's calls in the ledger. Invalid ones fail at once (the model reads the error);
    if any valid call needs confirmation, nothing of this turn runs until every gated call is decided."""
    ctx = tool_context(run)
    any_gated = False
    calls = []
    for position, request in enumerate(requests):
        call = ToolCall(id=new_id("tc"), run_id=run.id, message_id=message_id, position=position,
                        call_id=request.call_id, name=request.name, raw_arguments=request.arguments or "")
        tool = agent.tool(request.name)
        if tool is None:
            call.status, call.error = CallStatus.FAILED, f"Unknown tool {request.name!r}. " \
                f"Available: {', '.join(t.name for t in agent.tools)}."
        else:
            call.requires_confirmation = tool.requires_confirmation
            try:
                call.arguments = tool.validate(request.arguments or "{}")
            except ToolArgumentError as exc:
                call.status, call.error = CallStatus.FAILED, f"Invalid arguments: {exc}"
            else:
                if tool.requires_confirmation:
                    any_gated = True
                    call.status = CallStatus.PENDING
                    call.preview = _safe_preview(tool, ctx, call.arguments)
                else:
                    call.status, call.decided_by, call.decided_at = CallStatus.APPROVED, "auto", utcnow()
        calls.append(call)
    db.session.add_all(calls)
    db.session.flush()
    events.append(run.id, "tool_calls", {"message_id": message_id, "call_ids": [call.id for call in calls]})
    return any_gated


def _execute_approved_calls(run: _RunRef, agent) -> bool:
    """Run every approved call once: `executing` is committed before the side effect starts, and
    the outcome is committed as soon as it is known."""
    ctx = tool_context(run)
    calls = db.session.execute(sa.select(ToolCall.id, ToolCall.name, ToolCall.arguments).where(
        ToolCall.run_id == run.id, ToolCall.status == CallStatus.APPROVED)
        .order_by(ToolCall.created_at, ToolCall.position)).all()
    for call_id, name, arguments in calls:
        Run.lock(run.id)
        if not ToolCall.transition(call_id, CallStatus.APPROVED, CallStatus.EXECUTING):
            continue  # decided otherwise meanwhile (the run was stopped): it never starts
        events.append(run.id, "tool_call_updated", {"call_id": call_id, "status": CallStatus.EXECUTING})
        if not _commit_owned(run.id):
            return False  # cancelled between approval and execution: the side effect never starts
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
        Run.lock(run.id)
        ToolCall.transition(call_id, CallStatus.EXECUTING, status, **values)
        events.append(run.id, "tool_call_updated", {"call_id": call_id, "status": status})
        db.session.commit()  # the ledger records the outcome before anything else can go wrong
    return True


def _raised(exc: Exception) -> str:
    """What a tool's exception says, for the card and the model (never a traceback)."""
    text = " ".join(str(exc).split())[:1000]
    return f"{type(exc).__name__}: {text}" if text else f"The tool failed ({type(exc).__name__})."


def tool_context(run: _RunRef) -> ToolContext:
    return ToolContext(workspace=db.engines["workspace"], owner_id=run.owner_id, run_id=run.id,
                       session_id=run.session_id)


def _safe_preview(tool, ctx, arguments) -> str | None:
    if not tool.preview:
        return None
    try:
        return tool.preview(ctx, arguments)
    except Exception:  # a preview is a courtesy; the card works without it
        log.exception("preview of %s failed", tool.name)
        return None


# ---------------------------------------------------------------------------------------------------
# The conversation as the model sees it
# ---------------------------------------------------------------------------------------------------

SUPERSEDED = "superseded"  # a message state: kept for the person, never shown to the model again


def build_context(session_id: str, from_chain_head: bool = False) -> list[ContextItem]:
    """The conversation as provider-neutral items. `from_chain_head`: only from the newest answered
    turn the model can chain from (Responses API `previous_response_id`), so a turn's cost does not
    grow with the session; the provider asks for the whole conversation if the chain was forgotten."""
    query = sa.select(Message).where(Message.session_id == session_id)
    if from_chain_head:
        head = db.session.scalar(sa.select(Message.id).where(
            Message.session_id == session_id, Message.role == "assistant", Message.state == "done",
            Message.response_id.is_not(None)).order_by(Message.id.desc()).limit(1))
        if head is not None:
            query = query.where(Message.id >= head)
    items: list[ContextItem] = []
    for message in db.session.scalars(query.order_by(Message.id)):
        if message.state == SUPERSEDED:  # an exchange the person edited or regenerated (app.chats.resend)
            continue
        if message.role == "user":
            items.append(ContextItem("user", message.content))
        elif message.state == "done":
            items.append(ContextItem("assistant", message.content, response_id=message.response_id, tool_calls=[
                {"call_id": c.call_id, "name": c.name, "arguments": c.raw_arguments} for c in message.tool_calls]))
            items.extend(ContextItem("tool", tool_output(c), call_id=c.call_id) for c in message.tool_calls)
    return items


def tool_output(call: ToolCall) -> str:
    """What the model reads back for a call."""
    if call.status == CallStatus.DONE:
        return call.result or ""
    if call.status == CallStatus.REJECTED:
        return f"Rejected by the user: {call.reason}" if call.reason else "Rejected by the user."
    if call.status == CallStatus.OUTCOME_UNKNOWN:
        return OUTCOME_UNKNOWN_TEXT
    if call.status == CallStatus.FAILED:
        return f"Error: {call.error}"
    return "Error: this call was not executed."


# ---------------------------------------------------------------------------------------------------
# Recovery: leases that lapsed mean the worker died
# ---------------------------------------------------------------------------------------------------

def recover() -> None:
    """Fail runs whose worker died (their executing calls become outcome_unknown, never re-run) and
    pick up queued runs nobody is working on. Safe to call from every process at once."""
    now = utcnow()
    stale = db.session.scalars(sa.select(Run.id).where(
        Run.status == RunStatus.RUNNING, Run.lease_until < now)).all()
    for run_id in stale:
        if not Run.transition(run_id, RunStatus.RUNNING, RunStatus.FAILED, error=INTERRUPTED,
                               lease_owner=None, lease_until=None, extra=[Run.lease_until < now]):
            db.session.rollback()
            continue
        for call_id in db.session.scalars(sa.select(ToolCall.id).where(
                ToolCall.run_id == run_id, ToolCall.status == CallStatus.EXECUTING)):
            ToolCall.transition(call_id, CallStatus.EXECUTING, CallStatus.OUTCOME_UNKNOWN)
            events.append(run_id, "tool_call_updated", {"call_id": call_id, "status": CallStatus.OUTCOME_UNKNOWN})
        db.session.execute(sa.update(Message).where(Message.run_id == run_id, Message.state == "streaming")
                           .values(state="interrupted"))
        events.append(run_id, "run_failed")
        db.session.commit()
    queued = db.session.scalars(sa.select(Run.id).where(Run.status == RunStatus.QUEUED)).all()
    db.session.rollback()
    for run_id in queued:
        submit(run_id)


# ---------------------------------------------------------------------------------------------------
# Small compare-and-set helpers
# ---------------------------------------------------------------------------------------------------

def _lease_until():
    """A worker that stops renewing its lease for RUN_LEASE_SECONDS is presumed dead."""
    return utcnow() + timedelta(seconds=current_app.config.get("RUN_LEASE_SECONDS", 30))


def renew_leases(run_ids: list[str]) -> None:
    """The executor's heartbeat: extend the leases of the runs this process is executing."""
    db.session.execute(sa.update(Run.__table__).where(
        Run.id.in_(run_ids), Run.status == RunStatus.RUNNING, Run.lease_owner == WORKER_ID)
        .values(lease_until=_lease_until()))
    db.session.commit()


def _commit_owned(run_id: str) -> bool:
    """Commit the executor's transaction if the run is still ours (renewing the lease in the same
    statement that numbers the events); otherwise roll back and return False: cancelled, or recovered
    by another worker."""
    if events.write(run_id, WORKER_ID, _lease_until()):
        db.session.commit()
        return True
    db.session.rollback()
    return False


def _append_text(run_id: str, message_id: int, text: str) -> None:
    """In a transaction that already holds the run's row (see Run.lock)."""
    events.append(run_id, "text", {"message_id": message_id, "text": text})
    db.session.execute(_message_text_update(message_id, text))


def _flush_text(run_id: str, message_id: int, text: str) -> bool:
    """Append streamed text to the message and the event log in one short transaction. Numbering the
    event comes first: it takes the run's row (and renews the lease) before the message's, the order
    a Stop takes them in (see Run.lock), at no extra statement on the hottest write path."""
    events.append(run_id, "text", {"message_id": message_id, "text": text})
    if not events.write(run_id, WORKER_ID, _lease_until()):
        db.session.rollback()
        return False
    db.session.execute(_message_text_update(message_id, text))
    db.session.commit()
    return True


def _message_text_update(message_id: int, text: str):
    return (sa.update(Message).where(Message.id == message_id).values(content=Message.content + text)
            .execution_options(synchronize_session=False))


def _interrupt_message(run_id: str, message_id: int) -> None:
    db.session.execute(sa.update(Message).where(Message.id == message_id).values(state="interrupted")
                       .execution_options(synchronize_session=False))
    events.append(run_id, "message_completed", {"message_id": message_id})


def _finish(run_id: str, status: str, event: str, error: str | None = None) -> None:
    """Leave the running state (only if we still hold it: a cancel wins over a late finish)."""
    if Run.transition(run_id, RunStatus.RUNNING, status, extra=[Run.lease_owner == WORKER_ID],
                       error=error, lease_owner=None, lease_until=None):
        events.append(run_id, event)
        db.session.commit()
    else:
        db.session.rollback()


def _owned_run(owner_id: int, run_id: str) -> Run:
    return Run.owned_by(owner_id, run_id) or _refuse_missing("No such run.")


def _refuse_missing(message: str):
    raise NotFound(message)


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 60 else line[:57].rstrip() + "…"
