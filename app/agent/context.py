"""The conversation as the model sees it: the stored messages and what each tool call came to."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import sqlalchemy as sa

from app.agent.llm import ContextItem
from app.extensions import db
from app.models import ApprovalGrant, CallKind, CallStatus, Message, ToolCall


OUTCOME_UNKNOWN_TEXT = ("Error: the outcome is unknown. The server stopped while this tool was running; "
                        "it was not run again.")


EXPIRED_TEXT = "Not executed: the approval expired."

SUPERSEDED = "superseded"  # a message state: kept for the person, never shown to the model again


def build_context(session_id: str, from_chain_head: bool = False) -> list[ContextItem]:
    """The conversation as provider-neutral items. `from_chain_head`: only from the newest answered
    turn the model can chain from (Responses API `previous_response_id`), so a turn's cost does not
    grow with the session; the provider asks for the whole conversation if the chain was forgotten."""
    return read_context(session_id, from_chain_head).context


@dataclass(frozen=True, slots=True)
class TurnStart:
    """What a model turn reads before it calls the model, in one statement (`read_context`)."""
    context: list[ContextItem]
    reply_id: int | None = None   # the turn's reply's id, drawn from the messages' sequence (PostgreSQL)
    grants_live: bool = True      # the account had a live "Always allow" grant for the agent


def read_context(session_id: str, from_chain_head: bool = False, owner_id: int | None = None,
                 agent_id: str | None = None) -> TurnStart:
    """`build_context` for a model turn of `owner_id`'s run of `agent_id`, with (same statement):
    - on PostgreSQL, the id of the turn's reply, so its row can be inserted by the statement that
      numbers its events (`events.Then`); SQLite has no sequence to draw it from;
    - whether the account has any live grant for the agent: if not, the turn's calls need not look
      for one (a grant made while the model thinks is used from the next turn on; one revoked
      meanwhile is never used, the lookup itself is fresh)."""
    reserve = db.session.get_bind().dialect.name == "postgresql"
    rows = db.session.execute(_conversation(from_chain_head, reserve, owner_id is not None),
                              {"session_id": session_id, "owner_id": owner_id, "agent_id": agent_id})
    return turn_from_rows(rows, reserve, grants=owner_id is not None)


def turn_from_rows(rows, reserve_reply_id: bool, grants: bool) -> TurnStart:
    """The TurnStart that the rows of `conversation_select` (with those options) make."""
    messages: dict[int, tuple] = {}
    reply_id, grants_live = None, not grants
    for row in rows:
        _, calls = messages.setdefault(row.id, (row, []))
        if row.call_id is not None:
            calls.append(row)
        if reserve_reply_id:
            reply_id = row.reply_id
        if grants:
            grants_live = row.grants_live
    items: list[ContextItem] = []
    for message, calls in messages.values():
        if message.state == SUPERSEDED:  # an exchange the person edited or regenerated (app.chats.resend)
            continue
        if message.role == "user":
            items.append(ContextItem("user", message.content))
        elif message.state == "done":
            items.append(ContextItem("assistant", message.content, response_id=message.response_id, tool_calls=[
                {"call_id": c.call_id, "name": c.name, "arguments": c.raw_arguments} for c in calls]))
            items.extend(ContextItem("tool", tool_output(c), call_id=c.call_id) for c in calls)
    return TurnStart(items, reply_id, grants_live)


@functools.cache
def _conversation(from_chain_head: bool, reserve_reply_id: bool = False, grants: bool = False):
    """One statement (bound: session_id): the messages with their calls joined, as Core rows. Built once:
    it runs before every model turn. `reserve_reply_id` (PostgreSQL): each row also carries one new id
    from the messages' sequence (an uncorrelated scalar subquery: drawn once per statement). `grants`
    (bound: owner_id, agent_id): and whether the account has a live grant for the agent."""
    messages, granted = Message.__table__, ApprovalGrant.__table__
    return conversation_select(
        sa.bindparam("session_id", type_=messages.c.session_id.type), from_chain_head, reserve_reply_id,
        (sa.bindparam("owner_id", type_=granted.c.account_id.type),
         sa.bindparam("agent_id", type_=granted.c.agent_id.type)) if grants else None)


def conversation_select(session_id, from_chain_head: bool, reserve_reply_id: bool = False, grants=None):
    """`_conversation` for the session `session_id` and the grants of `grants` = (owner_id, agent_id):
    bound parameters, or expressions (`loop._taking_with_turn` reads them from the run it takes)."""
    messages, calls = Message.__table__, ToolCall.__table__
    query = sa.select(messages.c.id, messages.c.role, messages.c.content, messages.c.state, messages.c.response_id,
                      calls.c.call_id, calls.c.name, calls.c.raw_arguments, calls.c.status, calls.c.result,
                      calls.c.reason, calls.c.error, calls.c.kind, calls.c.arguments, calls.c.original_arguments,
                      calls.c.position) \
        .select_from(messages).outerjoin(calls, calls.c.message_id == messages.c.id) \
        .where(messages.c.session_id == session_id)
    if from_chain_head:
        head = sa.select(sa.func.max(messages.c.id)).where(
            messages.c.session_id == session_id, messages.c.role == "assistant", messages.c.state == "done",
            messages.c.response_id.is_not(None)).scalar_subquery()
        query = query.where(messages.c.id >= sa.func.coalesce(head, 0))
    if reserve_reply_id:
        sequence = sa.func.pg_get_serial_sequence(messages.name, messages.c.id.name)
        query = query.add_columns(sa.select(sa.func.nextval(sequence)).scalar_subquery().label("reply_id"))
    if grants:
        granted = ApprovalGrant.__table__
        owner_id, agent_id = grants
        query = query.add_columns(sa.exists().where(
            granted.c.account_id == owner_id, granted.c.agent_id == agent_id,
            granted.c.revoked_at.is_(None)).label("grants_live"))
    return query.order_by(messages.c.id, calls.c.position)


def tool_output(call) -> str:
    """What the model reads back for a call, told first what the person changed of its arguments (a
    ToolCall, or a row with its status, result, reason, error, kind and arguments)."""
    told = _what_the_person_changed(call)
    return f"{told}\n{_outcome(call)}" if told else _outcome(call)


def changed_by_person(call: ToolCall) -> list[tuple[str, object, object]]:
    """(argument, the model's value, the value run) for each argument the person changed or filled in."""
    if call.original_arguments is None or call.arguments is None:
        return []
    original, now = call.original_arguments, call.arguments
    keys = list(original) + [k for k in now if k not in original]
    return [(k, original.get(k), now.get(k)) for k in keys if (k in original, original.get(k)) != (k in now, now.get(k))]


def _what_the_person_changed(call: ToolCall) -> str:
    changes = changed_by_person(call)
    if not changes:
        return ""
    said = "; ".join(f"{name}: {_short(old)} → {_short(new)}" if old is not None else f"{name}: {_short(new)}"
                     for name, old, new in changes)
    verb = "filled in" if call.kind == CallKind.INPUT else "edited the arguments"
    return f"The person {verb}: {said}."


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."


def _outcome(call: ToolCall) -> str:
    if call.status == CallStatus.DONE:
        return call.result or ""
    if call.status == CallStatus.REJECTED:
        return f"Rejected by the user: {call.reason}" if call.reason else "Rejected by the user."
    if call.status == CallStatus.OUTCOME_UNKNOWN:
        return OUTCOME_UNKNOWN_TEXT
    if call.status == CallStatus.EXPIRED:
        return EXPIRED_TEXT
    if call.status == CallStatus.FAILED:
        return f"Error: {call.error}"
    return "Error: this call was not executed."
