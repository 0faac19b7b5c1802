"""The conversation as the model sees it: the stored messages and what each tool call came to."""
from __future__ import annotations

import sqlalchemy as sa

from app.agent.llm import ContextItem
from app.extensions import db
from app.models import CallStatus, Message, ToolCall


OUTCOME_UNKNOWN_TEXT = ("Error: the outcome is unknown. The server stopped while this tool was running; "
                        "it was not run again.")


SUPERSEDED = "superseded"  # a message state: kept for the person, never shown to the model again


def build_context(session_id: str, from_chain_head: bool = False) -> list[ContextItem]:
    """The conversation as provider-neutral items. `from_chain_head`: only from the newest answered
    turn the model can chain from (Responses API `previous_response_id`), so a turn's cost does not
    grow with the session; the provider asks for the whole conversation if the chain was forgotten."""
    # One statement: the messages with their calls joined (Core rows, no ORM units on the hot path).
    query = sa.select(Message.id, Message.role, Message.content, Message.state, Message.response_id,
                      ToolCall.call_id, ToolCall.name, ToolCall.raw_arguments, ToolCall.status, ToolCall.result,
                      ToolCall.reason, ToolCall.error) \
        .outerjoin(ToolCall, ToolCall.message_id == Message.id).where(Message.session_id == session_id)
    if from_chain_head:
        head = sa.select(sa.func.max(Message.id)).where(
            Message.session_id == session_id, Message.role == "assistant", Message.state == "done",
            Message.response_id.is_not(None)).scalar_subquery()
        query = query.where(Message.id >= sa.func.coalesce(head, 0))
    messages: dict[int, tuple] = {}
    for row in db.session.execute(query.order_by(Message.id, ToolCall.position)):
        _, calls = messages.setdefault(row.id, (row, []))
        if row.call_id is not None:
            calls.append(row)
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
    return items


def tool_output(call) -> str:
    """What the model reads back for a call (a ToolCall, or a row with its status, result, reason, error)."""
    if call.status == CallStatus.DONE:
        return call.result or ""
    if call.status == CallStatus.REJECTED:
        return f"Rejected by the user: {call.reason}" if call.reason else "Rejected by the user."
    if call.status == CallStatus.OUTCOME_UNKNOWN:
        return OUTCOME_UNKNOWN_TEXT
    if call.status == CallStatus.FAILED:
        return f"Error: {call.error}"
    return "Error: this call was not executed."
