"""What a view, a CLI command or the REST API asks of a run: start it (a message), decide its calls,
continue it with several decisions, retry it, cancel it.

Every transition is a compare-and-set on the ledger (`Run.transition`, `ToolCall.transition`), so
double clicks, two tabs or two workers decide once. A refusal raises `app.agent.refusals.Refusal`
(its kind, never an HTTP code). Nothing is read after a command's commit: a caller that then loses
the database must still be able to say what was done.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm.attributes import set_committed_value

from app import grants
from app.agent import events
from app.agent.decisions import PreviewChanged, resolve, store_previews
from app.agent.loop import RunRef, agent_of, interrupt_message
from app.agent.recovery import submit
from app.agent.expiry import expire_if_due, is_due
from app.agent.refusals import Conflict, Expired, Forbidden, Invalid, NotFound, Refusal, TooLarge, TooMany
from app.extensions import db
from app.grants import GrantRequest
from app.models import Account, CallStatus, ChatSession, Message, Run, RunEvent, RunStatus, ToolCall, new_id, utcnow


MAX_MESSAGE_CHARS = 8000


@dataclass(frozen=True)
class Started:
    """What `start_run` did. `cursor`: the event from which a stream shows everything the message caused.
    `after_message`: for a new run, the cursor just after the person's message's own event, for a page
    that shows the message itself (None when other events come first: cards the message rejected)."""
    run_id: str
    cursor: int
    message_id: int
    message_text: str   # as stored (trimmed)
    message_at: datetime
    after_message: int | None
    model: str | None = None  # a new run's model (its label)


def start_run(chat: ChatSession, text: str, owner_locked: bool = False, new_run_id: str | None = None) -> Started:
    """Add the person's message and start (or resume) a run. `owner_locked`: the caller took the chat
    owner's account row lock in this transaction (`chats.get_chat_heading_list(lock_owner=True)`),
    which counting the owner's active runs needs first. `new_run_id`: the id a new run takes (for a
    caller that watches it from before it exists); a message that answers a paused run's cards
    resumes that run instead."""
    text = (text or "").strip()
    if not text:
        raise Invalid("Type a message first.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise TooLarge(f"That message is too long ({len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,}).")

    title = _title_from(text) if chat.title == "New chat" else None
    if owner_locked and db.session.get_bind().dialect.name == "postgresql":
        # The usual message: the new run's checks are in its insert (one statement, not two).
        started = _start_new_run(chat, text, title, new_run_id, gated=True)
        if started is not None:
            return started
    latest = _latest_run_within_limits(chat.owner_id, chat.id, owner_locked)
    if latest is not None and latest.is_active:
        raise Conflict("The agent is still answering. Wait for it to finish, or press Stop.", run=latest)
    if latest is None or latest.status != RunStatus.PAUSED:
        return _start_new_run(chat, text, title, new_run_id) or _refuse_missing_agent(chat)

    now = utcnow()
    run_id, cursor = latest.id, _answer_paused_run(latest, text)
    message = Message(session_id=chat.id, run_id=run_id, role="user", content=text, created_at=now)
    db.session.add(message)
    db.session.flush()
    events.append(run_id, "user_message", {"message_id": message.id},
                  row=_user_message_row(message.id, chat.id, run_id, text, now))
    if title:
        chat.title = title
    chat.updated_at = now
    db.session.commit()
    submit(run_id)  # approved calls of a paused run may run first
    return Started(run_id, cursor, message.id, text, now, None)


def _start_new_run(chat: ChatSession, text: str, title: str | None, new_run_id: str | None,
                   gated: bool = False) -> Started | None:
    """Record and submit a new run of the chat's agent (None: that agent is gone). `gated` (PostgreSQL,
    under the owner's lock): the insert also checks what `_latest_run_within_limits` reads (the chat's
    newest run neither active nor paused, the account under MAX_ACTIVE_RUNS); None too when it wrote
    nothing for that reason, and the caller reads why."""
    agent = agent_of(chat.agent_id)
    if agent is None:
        return None
    run_id, now = new_run_id or new_id("run"), utcnow()
    model = current_app.extensions["models"].for_agent(agent).label
    message_id = _record_new_run(chat, run_id, text, model, title, now, gated=gated,
                                 cap=current_app.config.get("MAX_ACTIVE_RUNS") or None)
    if message_id is None:
        return None
    db.session.commit()
    submit(run_id, model_first=True)
    return Started(run_id, 0, message_id, text, now, 2, model)  # after run_started and user_message


def _refuse_missing_agent(chat: ChatSession):
    raise Conflict(f"The agent {chat.agent_id!r} of this chat is no longer configured on this server.")


def _record_new_run(chat: ChatSession, run_id: str, text: str, model: str, title: str | None, now: datetime,
                    gated: bool = False, cap: int | None = None) -> int | None:
    """Insert the run, the person's message and the run's first two events (numbered here: the run is
    inserted with last_seq 2, so nothing needs its row's lock), and give the chat its date (and
    `title`). One statement on PostgreSQL; four on SQLite, which has no data-modifying CTEs. Returns
    the message's id. `gated` (PostgreSQL only): insert only if the chat's newest run is neither
    active nor paused and the account has fewer than `cap` active runs (None: no cap); None if not."""
    params = {"new_run_id": run_id, "new_session_id": chat.id, "new_owner_id": chat.owner_id,
              "new_agent_id": chat.agent_id, "new_text": text, "new_model": model, "new_title": title, "new_now": now}
    postgres = db.session.get_bind().dialect.name == "postgresql"
    if postgres and gated:
        message_id = db.session.execute(_new_run_in_one(True, cap is not None), {**params, "new_cap": cap}) \
            .scalar_one_or_none()
        if message_id is None:
            return None
    elif postgres:
        message_id = db.session.execute(_new_run_in_one(), params).scalar_one()
    else:
        db.session.execute(_new_run_insert(), params)
        message_id = db.session.execute(_new_message_insert(), params).scalar_one()
        db.session.execute(_chat_touch(), params)
    events.append_to_new_run(run_id, 1, "run_started", created_at=now)
    events.append_to_new_run(run_id, 2, "user_message", {"message_id": message_id}, created_at=now,
                             row=_user_message_row(message_id, chat.id, run_id, text, now))
    if postgres:
        events.inserted_with_new_run(run_id)  # the statement above inserted them
    # The ORM's copy of the chat says what the database now holds (no UPDATE of its own at commit).
    set_committed_value(chat, "updated_at", now)
    if title:
        set_committed_value(chat, "title", title)
    return message_id


def _user_message_row(message_id: int, session_id: str, run_id: str, text: str, now: datetime) -> dict:
    """The person's message as stored, for its event's watchers in this process (`events.Event.row`)."""
    return dict(id=message_id, session_id=session_id, run_id=run_id, role="user", content=text, state="done",
                response_id=None, created_at=now)


# start_run's statements, built once (bound: new_<name>, never a column's name, which SQLAlchemy would
# take for a value to set: run_id, session_id, owner_id, agent_id, text, model, title, now).
def _new_run_values() -> dict:
    runs = Run.__table__
    return dict(
        id=_bound(runs.c.id, "run_id"), session_id=_bound(runs.c.session_id), owner_id=_bound(runs.c.owner_id),
        agent_id=_bound(runs.c.agent_id), status=sa.literal(RunStatus.QUEUED, runs.c.status.type),
        input=_bound(runs.c.input, "text"), model=_bound(runs.c.model), last_seq=sa.literal(2, runs.c.last_seq.type),
        created_at=_bound(runs.c.created_at, "now"), updated_at=_bound(runs.c.updated_at, "now"))


def _new_message_values() -> dict:
    messages = Message.__table__
    return dict(
        session_id=_bound(messages.c.session_id), run_id=_bound(messages.c.run_id),
        role=sa.literal("user", messages.c.role.type), content=_bound(messages.c.content, "text"),
        state=sa.literal("done", messages.c.state.type), created_at=_bound(messages.c.created_at, "now"))


def _inserting(table, values: dict, condition=None) -> sa.Insert:
    """An INSERT of one row of `values`; with `condition`, only if it holds."""
    if condition is None:
        return sa.insert(table).values(values)
    return sa.insert(table).from_select(list(values), sa.select(*values.values()).where(condition))


@functools.cache
def _new_run_insert():
    return _inserting(Run.__table__, _new_run_values())


@functools.cache
def _new_message_insert():
    return _message_inserting()


def _message_inserting(condition=None) -> sa.Insert:
    return _inserting(Message.__table__, _new_message_values(), condition).returning(Message.__table__.c.id)


@functools.cache
def _chat_touch():
    chats = ChatSession.__table__
    return sa.update(chats).where(chats.c.id == _bound(chats.c.id, "session_id")).values(
        updated_at=_bound(chats.c.updated_at, "now"),
        title=sa.func.coalesce(_bound(chats.c.title), chats.c.title))


@functools.cache
def _new_run_in_one(gated: bool = False, capped: bool = False):
    """PostgreSQL: the run, its message, the chat's date and the run's first two events in one statement,
    returning the message's id (its `user_message` event names it). `gated`: only if the chat's newest
    run is neither active nor paused and (`capped`) the owner has fewer than new_cap active runs; then
    no row, and nothing written, if not."""
    from sqlalchemy.dialects import postgresql  # here: a SQLite worker never loads the dialect

    free = None
    if gated:
        free = sa.exists(sa.select(sa.literal(1)).where(_free_for_a_new_run(capped)).cte("free").select())
    run = _inserting(Run.__table__, _new_run_values(), free).cte("new_run")
    message = _message_inserting(free).cte("new_message")
    chat = (_chat_touch() if free is None else _chat_touch().where(free)).cte("touched_chat")
    run_events = RunEvent.__table__
    first_two = sa.union_all(  # from the message's row: none when it was not inserted
        sa.select(sa.literal(1).label("seq"), sa.literal("run_started").label("type"),
                  sa.cast(sa.literal("{}"), postgresql.JSON).label("data")).select_from(message),
        sa.select(sa.literal(2), sa.literal("user_message"),
                  sa.func.json_build_object("message_id", message.c.id)).select_from(message)).subquery("first_two")
    inserted = sa.insert(run_events).from_select(
        ["run_id", "seq", "type", "data", "created_at"],
        sa.select(_bound(run_events.c.run_id), first_two.c.seq, first_two.c.type, first_two.c.data,
                  _bound(run_events.c.created_at, "now"))).cte("first_events")
    return sa.select(message.c.id).add_cte(run, chat, inserted)


def _free_for_a_new_run(capped: bool):
    """The chat's newest run is neither active nor paused (a paused one is resumed by the message
    instead), and (`capped`) the owner has fewer than new_cap runs active (bound: new_session_id,
    new_owner_id, new_cap)."""
    runs = Run.__table__
    newest_status = sa.select(runs.c.status).where(runs.c.session_id == _bound(runs.c.session_id)) \
        .order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(1).scalar_subquery()
    free = sa.func.coalesce(newest_status.not_in([*RunStatus.ACTIVE, RunStatus.PAUSED]), sa.true())
    if capped:
        active = sa.select(sa.func.count()).select_from(runs).where(
            runs.c.owner_id == _bound(runs.c.owner_id), runs.c.status.in_(RunStatus.ACTIVE)).scalar_subquery()
        free = sa.and_(free, active < sa.bindparam("new_cap", type_=sa.Integer()))
    return free


def _bound(column, name: str | None = None):
    return sa.bindparam(f"new_{name or column.name}", type_=column.type)


def check_active_runs(owner_id: int) -> None:
    """At most MAX_ACTIVE_RUNS runs of one account are queued or running at once (a run waiting for a
    decision does not count): one person cannot take all of a worker's runs, or the model budget.
    The account's row is locked first, so two messages at once cannot both take the last place
    (SQLite's BEGIN IMMEDIATE already serialises them); nothing else locks accounts after runs."""
    cap = current_app.config.get("MAX_ACTIVE_RUNS")
    if not cap:
        return
    _lock_account(owner_id)
    _refuse_past(cap, db.session.scalar(_active_runs_count(), {"owner_id": owner_id}))


def _latest_run_within_limits(owner_id: int, session_id: str, owner_locked: bool = False) -> Run | None:
    """`check_active_runs` and the chat's newest run (`Run.latest_in`), read by one statement after the
    account's lock (a statement of its own: on PostgreSQL a statement's snapshot is taken before it
    waits for a lock, so a count in the locking statement could miss a run just started)."""
    cap = current_app.config.get("MAX_ACTIVE_RUNS")
    if not cap:
        return Run.latest_in(session_id)
    if not owner_locked:
        _lock_account(owner_id)
    active, latest = db.session.execute(_latest_run_and_active_count(),
                                        {"owner_id": owner_id, "session_id": session_id}).one()
    _refuse_past(cap, active)
    return latest


def _lock_account(owner_id: int) -> None:
    if db.session.get_bind().dialect.name != "sqlite":  # SQLite's BEGIN IMMEDIATE already serialises
        db.session.execute(sa.select(Account.id).where(Account.id == owner_id).with_for_update())


def _refuse_past(cap: int, active: int) -> None:
    if active >= cap:
        db.session.rollback()
        raise TooMany(f"You have {active} replies in progress (the limit is {cap}). Wait for one to finish, "
                      "or stop one, then try again.")


@functools.cache
def _active_runs_count():
    """The account's queued or running runs (bound: owner_id)."""
    return sa.select(sa.func.count()).select_from(Run).where(
        Run.owner_id == sa.bindparam("owner_id", type_=Run.__table__.c.owner_id.type),
        Run.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]))


@functools.cache
def _latest_run_and_active_count():
    """(active runs of the account, the chat's newest Run or None) in one row (bound: owner_id, session_id)."""
    latest_id = sa.select(Run.id).where(
        Run.session_id == sa.bindparam("session_id", type_=Run.__table__.c.session_id.type)) \
        .order_by(Run.created_at.desc(), Run.id.desc()).limit(1).scalar_subquery()
    return sa.select(_active_runs_count().scalar_subquery().label("active"), Run) \
        .select_from(sa.select(sa.literal(1)).subquery("one_row")).outerjoin(Run, Run.id == latest_id)


def _answer_paused_run(run: Run, text: str) -> int:
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
    return cursor


@dataclass(frozen=True)
class Decided:
    """What `decide` did. `call`: as read before the decision (after the commit its attributes are read
    again); `cursor`: where to stream the run from, after the decision's own events; `written`: the
    call's row as the decision wrote it, `run` its run's fixed fields and `run_status` its status then
    (queued if it resumed, else paused), all None when nothing was written (an edit that changed
    nothing); `also`: the caller's column read with the call (`ToolCall.owned_with_run`)."""
    call: ToolCall
    cursor: int
    written: sa.Row | None = None
    run: RunRef | None = None
    run_status: str | None = None
    also: object = None


def decide(owner_id: int | None, run_id: str, call_id: str, approve: bool | None, reason: str | None = None,
           decider_id: int | None = None, arguments: dict | None = None, user_input: dict | None = None,
           result: str | None = None, seen: str | None = None, always: GrantRequest | None = None,
           also=None, also_params: dict | None = None) -> Decided:
    """Decide one pending call from its card. Returns what it did (`Decided`): the answer shows the
    card, and the run, as the decision left them, and streams the run from after its events.

    `approve` True/False approves or rejects; `arguments` is an edit (kept pending with its fresh
    preview when `approve` is None); `user_input` and `result` answer the other kinds of pause; `seen`
    is the fingerprint of the arguments and preview the person saw (app.agent.decisions): an approval
    of anything else is refused with the call's new state. `always` approves with "Always allow"
    (app.grants). `owner_id` scopes the lookup to that account's runs (None: an admin, for anyone's);
    `decider_id` is recorded as who decided. The second of two racing decisions gets a 409 with the
    call's current state; a call whose approval expired is expired now (if the sweeper has not yet)
    and refused. `also` (with `also_params`): a column to read with the call, for the caller."""
    call, run = ToolCall.owned_with_run(owner_id, run_id, call_id, also, also_params) \
        or _refuse_missing("No such tool call.")
    always = always.checked(call) if always is not None and approve else None
    cursor = run.last_seq
    _expire_due(run_id, [call])  # the sweeper may not have run yet
    if call.status != CallStatus.PENDING:
        db.session.rollback()
        raise _settled(db.session.get(ToolCall, call.id))
    _check_approver(call, decider_is_admin=owner_id is None)
    ref = RunRef(run_id, run.session_id, run.owner_id, run.agent_id)
    decision = Decision(call.call_id, arguments=arguments, confirmed=approve, note=reason,
                        user_input=user_input, external_result=result)
    try:
        change = resolve(ref, agent_of(run.agent_id), call, decision, fingerprint_seen=seen)
    except PreviewChanged as exc:
        _show_new_preview(run_id, call.id, exc.preview)
        raise _settled_or(Conflict(str(exc), call=_current(call))) from None
    except Invalid as exc:
        db.session.rollback()
        raise _settled_or(Invalid(str(exc), call=_current(call))) from None
    if change is None:
        db.session.rollback()
        return Decided(call, cursor)
    values = {**change.values, "decider_id": decider_id} if change.status != CallStatus.PENDING else change.values
    if always is not None and change.status == CallStatus.APPROVED:
        _grant_from(call, ref, decider_id, owner_id is None, always, utcnow())
    # The call's compare-and-set, its event and (when nothing else is pending) the run's resumption,
    # in one statement on PostgreSQL, three on SQLite.
    # (With the call's whole new row: this process's streams, and the caller, show it without a read.)
    events.append(run_id, "tool_call_updated", {"call_id": call.id, "status": change.status})
    written = events.write_with_call(
        run_id, ToolCall.cas(call.id, CallStatus.PENDING, change.status, **values).returning_row(),
        resume_after=None if change.status == CallStatus.PENDING else call.id)
    if not written.ok:
        db.session.rollback()
        raise _settled(db.session.get(ToolCall, call.id))
    db.session.commit()
    # Nothing reads the database after the commit here: a caller that then loses it must still be
    # able to say the decision was recorded (its attributes load again when next read).
    if written.resumed:
        submit(run_id)
    return Decided(call, written.last_seq, written.call, ref, RunStatus.QUEUED if written.resumed else RunStatus.PAUSED,
                   getattr(run, "also", None))


def _current(call: ToolCall) -> ToolCall:
    """The call as stored now (after a rollback or commit, which expired the one in hand)."""
    return db.session.get(ToolCall, call.id)


def _settled_or(refusal: Refusal) -> Refusal:
    """`refusal`, unless the call was decided by someone else meanwhile: on PostgreSQL the lock on the
    run re-reads the run's row but not the call joined to it, so a racing decision can find a call
    pending that the winner already approved, then see its preview change when the tool ran; the
    person is told it was already decided, not that its data changed."""
    call = refusal.call
    return _settled(call) if call is not None and call.status != CallStatus.PENDING else refusal


def _show_new_preview(run_id: str, call_pk: str, preview: str | None) -> None:
    """Store a call's changed preview (it stays pending), in a transaction of its own; commits."""
    db.session.rollback()
    store_previews(run_id, {call_pk: preview})


def _expire_due(run_id: str, calls) -> None:
    """Expire the calls whose approval time has passed (committed: the refusal that follows must not
    undo it); the run goes on if nothing of the turn is pending any more."""
    due = [call for call in calls if is_due(call)]
    if not due:
        return
    resumed = False
    for call in due:
        resumed = expire_if_due(call) or resumed
    db.session.commit()
    if resumed:
        submit(run_id)
    Run.lock(run_id)  # the caller goes on as under the lock it had taken


def _check_approver(call: ToolCall, decider_is_admin: bool) -> None:
    """A call only admins may decide (`approvers="admin"`) is refused to anyone else, the run's owner too."""
    if call.approvers == "admin" and not decider_is_admin and call.status == CallStatus.PENDING:
        db.session.rollback()
        raise Forbidden(f"Only an admin can decide this call of {call.name}: it waits for an admin.", call=call)


def _settled(call: ToolCall) -> Conflict:
    """The refusal of a decision on a call that is no longer pending (expired: said so)."""
    if call.status == CallStatus.EXPIRED:
        return Expired(f"The approval of this call of {call.name} expired; it was not executed.", call=call)
    return Conflict(f"This call was already {call.status.replace('_', ' ')}.", call=call)


def _grant_from(call: ToolCall, run: RunRef, decider_id: int | None, decider_is_admin: bool,
                always: GrantRequest, now) -> None:
    """"Always allow" with the approval: refused (nothing written) unless this person may grant it."""
    refusal = grants.refusal_of(call, run.owner_id, decider_id, decider_is_admin)
    if refusal:
        db.session.rollback()
        raise Forbidden(refusal, call=db.session.get(ToolCall, call.id))
    grants.create(call, run.owner_id, run.agent_id, run.session_id, always, now)


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
        interrupt_message(run.id, message_id)
    events.append(run.id, "run_cancelled")
    db.session.commit()
    return run  # read again when used (nothing is read after the commit, see decide)


@dataclass(frozen=True)
class Decision:
    """What a client decided about one call of a paused run (one entry of the REST API's continue).

    `call_id` is the model's id for the call. `confirmed` None leaves the call pending. `tool_name` and
    `arguments`, when sent, are checked against the stored call: the server's copy is the truth, so a
    different name is refused, and different arguments are an edit, which only an `editable` tool
    accepts (validated again; approved as edited, or left pending with them). `user_input` answers a
    call that asks for input, `external_result` one the person ran themselves (app.agent.decisions);
    sent for any other call, they are refused rather than silently ignored."""
    call_id: str
    tool_name: str | None = None
    arguments: dict | None = None
    confirmed: bool | None = None
    note: str | None = None
    user_input: dict | None = None
    external_result: str | None = None


def continue_run(owner_id: int, run_id: str, decisions: list[Decision], decider_id: int | None = None,
                 decider_is_admin: bool = False, locked: Run | None = None,
                 locked_calls: list[ToolCall] | None = None) -> tuple[Run, int]:
    """Apply several decisions to a paused run at once. Returns the run and the cursor to stream from.

    All or nothing: every entry is checked before anything is written (422 for an unknown call, a
    different tool name, an edit the tool does not allow or invalid edited arguments; 409 for a
    decision that contradicts one already made), then each new decision is a compare-and-set, all in
    one transaction; losing any of them (a double click, two clients) rolls back the lot and is a 409
    with the current run. Calls left out or with `confirmed` None stay pending, and the run stays
    paused until none is. A failed run is retried (so a continue whose model call failed can simply
    be sent again); any other state is a 409, and no model is called. `locked`: the owner's run, already
    read by the caller under its row lock in this transaction (not read again), and `locked_calls` its
    calls if read with it (`Run.read_locked_with_calls`)."""
    run = locked or Run.owned_by(owner_id, run_id, lock=True) or _refuse_missing("No such run.")
    cursor = run.last_seq
    if locked is None or locked_calls is None:
        locked_calls = db.session.scalars(sa.select(ToolCall).where(ToolCall.run_id == run.id)
                                          .order_by(ToolCall.created_at, ToolCall.position))
    calls = {c.call_id: c for c in locked_calls}
    _expire_due(run.id, calls.values())
    try:
        changes = _check_decisions(RunRef(run.id, run.session_id, run.owner_id, run.agent_id), calls, decisions,
                                   decider_is_admin)
    except PreviewChanged as exc:
        _show_new_preview(run.id, exc.call.id, exc.preview)
        raise Conflict(str(exc), run=db.session.get(Run, run.id)) from None
    if run.status == RunStatus.FAILED:
        db.session.rollback()
        return retry(owner_id, run_id)
    if run.status != RunStatus.PAUSED:
        db.session.rollback()
        raise Conflict(f"This run is not waiting for a decision: it is {run.status}.", run=run)
    try:
        resumed = _write_decisions(run_id, changes, decider_id)
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


def _write_decisions(run_id: str, changes: list, decider_id: int | None) -> bool:
    """Each change's compare-and-set; the last one also writes the events and resumes the run when
    nothing is pending any more (events.write_with_call). True if the run was resumed."""
    for number, (call, status, values) in enumerate(changes, start=1):
        if status != CallStatus.PENDING:
            values = {**values, "decider_id": decider_id}
        change = ToolCall.cas(call.id, CallStatus.PENDING, status, **values).returning_row()
        if number < len(changes):
            if (row := db.session.execute(change.statement(), change.params(run_id)).first()) is None:
                raise _Lost()
            events.append(run_id, "tool_call_updated", {"call_id": call.id, "status": status},
                          calls={call.id: row._asdict()})
            continue
        events.append(run_id, "tool_call_updated", {"call_id": call.id, "status": status})
        # A call left pending (kept with an edit) keeps the run paused.
        written = events.write_with_call(run_id, change,
                                         resume_after=None if status == CallStatus.PENDING else call.id)
        if not written.ok:
            raise _Lost()
        return written.resumed
    # No new decision (echoes only): the run goes on if none of its calls is pending.
    still_pending = db.session.scalar(sa.select(sa.func.count()).select_from(ToolCall).where(
        ToolCall.run_id == run_id, ToolCall.status == CallStatus.PENDING))
    if still_pending:
        return False
    if not Run.transition(run_id, RunStatus.PAUSED, RunStatus.QUEUED):
        raise _Lost()
    events.append(run_id, "run_resumed")
    return True


class _Lost(Exception):
    """A compare-and-set found the row already changed by someone else."""


def _check_decisions(run: RunRef, calls: dict[str, ToolCall], decisions: list[Decision],
                     decider_is_admin: bool = False) -> list:
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
        edited = decision.arguments is not None and decision.arguments != call.arguments
        if call.status == CallStatus.EXPIRED and (edited or decision.confirmed is not None):
            raise _settled(call)
        if edited or decision.confirmed is not None or decision.user_input is not None \
                or decision.external_result is not None:
            _check_approver(call, decider_is_admin)
        if call.status != CallStatus.PENDING:
            was_approved = None if call.decided_by is None else call.status != CallStatus.REJECTED
            if edited or (decision.confirmed is not None and decision.confirmed != was_approved):
                raise Conflict(f"Tool call {call.call_id!r} was already {call.status.replace('_', ' ')}.",
                               run=db.session.get(Run, run.id), call=call)
            continue  # an echo of what was already decided
        change = resolve(run, agent, call, decision)
        if change is not None:
            changes.append((call, change.status, change.values))
    order = list(calls)
    return sorted(changes, key=lambda change: order.index(change[0].call_id))


def _owned_run(owner_id: int, run_id: str) -> Run:
    return Run.owned_by(owner_id, run_id) or _refuse_missing("No such run.")


def _refuse_missing(message: str):
    raise NotFound(message)


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 60 else line[:57].rstrip() + "…"
