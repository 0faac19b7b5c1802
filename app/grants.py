""""Always allow": standing approvals a person gives from a pending card, matched against later calls.

A grant names one account, one agent and one tool; optionally one chat (else all the person's
chats) and the exact arguments (else any); it lasts an hour, a day or until revoked. The run loop
asks `matching` for each new gated call (app.agent.rules); a matching call runs without a card. A
tool may refuse grants (`allow_always=False`), and only an admin may grant a tool whose calls only
admins decide. Knows nothing of requests or HTML.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from app.agent.refusals import Invalid, NotFound
from app.extensions import db
from app.models import ApprovalGrant, ChatSession, ToolCall, utcnow

DURATIONS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "forever": None}
SCOPES = ("chat", "all")


@dataclass(frozen=True)
class GrantRequest:
    """What the person ticked next to Approve: where (this chat or all), whether only for the
    arguments shown, and for how long ("hour", "day", "forever": until revoked)."""
    scope: str = "chat"
    same_arguments: bool = False
    duration: str = "forever"

    def checked(self, call: ToolCall | None = None) -> "GrantRequest":
        """Itself, or Invalid (carrying `call`, so the card can be shown again with the message)."""
        if self.scope not in SCOPES:
            raise Invalid(f"Always allow: the scope must be one of {', '.join(SCOPES)}, not {self.scope!r}.", call=call)
        if self.duration not in DURATIONS:
            raise Invalid(f"Always allow: the duration must be one of {', '.join(DURATIONS)}, not {self.duration!r}.",
                          call=call)
        return self


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def refusal_of(call: ToolCall, owner_id: int, decider_id: int | None, decider_is_admin: bool) -> str | None:
    """Why this decider may not grant "Always allow" from this call (None: they may)."""
    if not call.allow_always:
        return f"{call.name} cannot be allowed always: each call needs its own approval."
    if decider_id != owner_id:
        return "Only the person whose chat it is can allow a tool always."
    if call.approvers == "admin" and not decider_is_admin:
        return f"Only an admin can allow {call.name} always."
    return None


def create(call: ToolCall, owner_id: int, agent_id: str, session_id: str, request: GrantRequest,
           now: datetime) -> ApprovalGrant:
    """The grant made by approving `call` with "Always allow" (in the decision's transaction)."""
    request = request.checked()
    duration = DURATIONS[request.duration]
    grant = ApprovalGrant(account_id=owner_id, agent_id=agent_id, tool_name=call.name,
                          session_id=session_id if request.scope == "chat" else None,
                          arguments=dict(call.arguments or {}) if request.same_arguments else None,
                          expires_at=now + duration if duration else None, created_at=now,
                          created_from_call_id=call.id)
    db.session.add(grant)
    db.session.flush()
    return grant


def matching(owner_id: int | None, agent_id: str, tool_name: str, session_id: str | None, arguments: dict,
             now: datetime) -> int | None:
    """The id of the owner's oldest live grant covering this call, if any (arguments compared as JSON
    values). Core rows: it runs for every new gated call."""
    if owner_id is None:
        return None
    grants = ApprovalGrant.__table__
    candidates = db.session.execute(sa.select(grants.c.id, grants.c.arguments).where(
        grants.c.account_id == owner_id, grants.c.agent_id == agent_id,
        grants.c.tool_name == tool_name, grants.c.revoked_at.is_(None),
        sa.or_(grants.c.expires_at.is_(None), grants.c.expires_at > now),
        sa.or_(grants.c.session_id.is_(None), grants.c.session_id == session_id))
        .order_by(grants.c.id))
    return next((grant.id for grant in candidates if grant.arguments is None or grant.arguments == arguments), None)


@dataclass
class Listed:
    grant: ApprovalGrant
    chat_title: str | None  # None: all chats
    live: bool


def list_for(account_id: int) -> list[Listed]:
    """The account's grants, newest first: live ones, then expired or revoked ones (for the record)."""
    rows = db.session.execute(sa.select(ApprovalGrant, ChatSession.title)
                              .outerjoin(ChatSession, ChatSession.id == ApprovalGrant.session_id)
                              .where(ApprovalGrant.account_id == account_id)
                              .order_by(ApprovalGrant.created_at.desc(), ApprovalGrant.id.desc()).limit(200))
    now = utcnow()
    listed = [Listed(grant, title, grant.revoked_at is None and (
        grant.expires_at is None or _aware(grant.expires_at) > now)) for grant, title in rows]
    return sorted(listed, key=lambda item: not item.live)


def revoke(account_id: int, grant_id: int) -> None:
    """Revoke one of the account's grants (another account's is a NotFound); revoking twice is fine."""
    grant = db.session.scalar(sa.select(ApprovalGrant).where(
        ApprovalGrant.id == grant_id, ApprovalGrant.account_id == account_id))
    if grant is None:
        raise NotFound("No such grant.")
    if grant.revoked_at is None:
        grant.revoked_at = utcnow()
    db.session.commit()


def describe(grant: ApprovalGrant) -> str:
    """One line for the audit: which grant, of what."""
    scope = "this chat" if grant.session_id else "all chats"
    only = f", only {grant.arguments}" if grant.arguments is not None else ""
    return f"grant #{grant.id}: always allow {grant.tool_name} in {scope}{only}"
