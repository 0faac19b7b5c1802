"""The approvals inbox: the pending tool calls a person may decide, across their chats (an admin: everyone's).

Reads only; deciding is the core's command (`commands.decide`), the same one the chat's card uses.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlalchemy as sa

from app.extensions import db
from app.models import Account, CallStatus, ChatSession, Run, ToolCall, iso_utc, utcnow

MAX_LISTED = 200


@dataclass
class Pending:
    call: ToolCall
    chat: ChatSession
    owner: Account      # whose run it is (the requester)


def _decidable_by(select, scoped: bool):
    """Scope to the calls a person may decide: those of the account `decidable_account_id` (`scoped`;
    else anyone's, for admins and the service key), pending and not expired at `decidable_now` (see
    `decidable_params`). Trashed chats are hidden everywhere, so their calls are too."""
    now = sa.bindparam("decidable_now", type_=ToolCall.__table__.c.expires_at.type)
    select = select.where(ToolCall.status == CallStatus.PENDING, ChatSession.deleted_at.is_(None),
                          sa.or_(ToolCall.expires_at.is_(None), ToolCall.expires_at > now))
    if not scoped:
        return select
    # A member decides their own runs' calls, except those only an admin may decide.
    return select.where(Run.owner_id == sa.bindparam("decidable_account_id", type_=Run.__table__.c.owner_id.type),
                        sa.or_(ToolCall.approvers.is_(None), ToolCall.approvers != "admin"))


def decidable_params(account_id: int | None) -> dict:
    """The values `_decidable_by`'s statements are run with, for `account_id` (None: anyone's calls)."""
    return {"decidable_now": utcnow(), "decidable_account_id": account_id}


def _joined(select):
    return select.join(Run, Run.id == ToolCall.run_id).join(ChatSession, ChatSession.id == Run.session_id)


def scope_of(account: Account) -> int | None:
    """Whose calls this person may decide: an admin anyone's (None), a member their own."""
    return None if account.is_admin else account.id


def pending_calls(account_id: int | None, limit: int = MAX_LISTED) -> list[Pending]:
    """The calls waiting for a decision, oldest first, each with its chat and the run's owner."""
    rows = db.session.execute(_decidable_by(_joined(sa.select(ToolCall, ChatSession, Account))
                                            .join(Account, Account.id == Run.owner_id), account_id is not None)
                              .order_by(ToolCall.created_at, ToolCall.position, ToolCall.id).limit(limit),
                              decidable_params(account_id))
    return [Pending(*row) for row in rows]


def pending_count(account_id: int | None) -> int:
    """How many calls wait for this person (one COUNT: it is on every page)."""
    return db.session.scalar(pending_count_select(account_id is not None), decidable_params(account_id))


@functools.cache
def pending_count_select(scoped: bool, but_one: bool = False) -> sa.Select:
    """pending_count's statement (built once; run with `decidable_params`), to fold into another one as a
    scalar subquery (`.correlate(None)`). `but_one`: not counting the call `decidable_but`."""
    select = _decidable_by(_joined(sa.select(sa.func.count()).select_from(ToolCall)), scoped)
    if but_one:
        select = select.where(ToolCall.id != sa.bindparam("decidable_but", type_=ToolCall.__table__.c.id.type))
    return select


@functools.cache
def others_pending_column(scoped: bool) -> sa.ScalarSelect:
    """pending_count_select(but_one=True) as a column to read with another statement (built once, so
    that statement can be too: `ToolCall.owned_with_run`'s `also`)."""
    return pending_count_select(scoped, but_one=True).scalar_subquery().correlate(None)


def as_json(item: Pending, card_url: str, chat_url: str) -> dict:
    """One pending call for API clients: what it would do, whose it is, and where its card is."""
    call = item.call
    return {
        "id": call.id, "run_id": call.run_id, "session_id": item.chat.id, "session_name": item.chat.title,
        "agent_id": item.chat.agent_id, "tool_call_id": call.call_id, "tool_name": call.name,
        "tool_args": call.arguments, "preview": call.preview, "status": call.status,
        "kind": call.kind,  # confirm | input (fields to fill in) | external (the person runs it)
        "requester": item.owner.api_user_id or item.owner.display_name,
        "created_at": iso_utc(call.created_at), "expires_at": iso_utc(call.expires_at),
        "approvers": call.approvers,
        "card_url": card_url, "chat_url": chat_url,
    }
