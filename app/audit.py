"""The audit of tool calls: every proposal, its decision (who, when, why), execution and outcome.

A view over the `tool_calls` ledger, which already records each of these as it happens (see
docs/architecture.md, "Audit"): no second log that could disagree with it, and nothing in the run loop
to change. Members see their own runs' calls, admins everyone's. Knows nothing of requests or HTML.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterator

import sqlalchemy as sa
import sqlalchemy.orm as so

from app import grants
from app.agent.context import changed_by_person
from app.extensions import db
from app.models import Account, ApprovalGrant, CallStatus, ChatSession, Run, ToolCall, iso_utc

PER_PAGE = 50
MAX_FILTER = 200

# What became of the proposal, as a person reads it; `decision` filters by these.
DECISIONS = ("pending", "approved", "rejected", "auto", "rule", "grant", "expired", "invalid")

FIELDS = ("id", "proposed_at", "person", "agent_id", "chat_id", "chat_title", "tool", "tool_call_id",
          "arguments", "model_arguments", "requires_confirmation", "preview", "decision", "decided_by",
          "decided_at", "reason", "status", "result", "error", "updated_at", "kind", "original_arguments",
          "changed", "grant_id", "grant", "approvers", "expires_at")


class AuditFilterError(ValueError):
    """A filter that cannot be applied (a bad date, an unknown decision): a 422 with this message."""


@dataclass(frozen=True)
class AuditFilter:
    person: str | None = None      # an email or API user id (admins only; a member always sees their own)
    agent: str | None = None
    tool: str | None = None
    decision: str | None = None
    since: datetime | None = None  # proposed at or after
    until: datetime | None = None  # proposed before
    page: int = 1

    def as_args(self) -> dict[str, str]:
        """The filter as query parameters (for links to other pages and to the exports)."""
        args = {"person": self.person, "agent": self.agent, "tool": self.tool, "decision": self.decision,
                "since": self.since and self.since.date().isoformat(),
                "until": self.until and (self.until - timedelta(days=1)).date().isoformat()}
        return {key: value for key, value in args.items() if value}


def parse_filter(args) -> AuditFilter:
    """From query parameters: `since`/`until` are dates (YYYY-MM-DD, UTC; `until` inclusive)."""
    def text(name: str) -> str | None:
        value = " ".join((args.get(name) or "").split())
        if len(value) > MAX_FILTER:
            raise AuditFilterError(f"{name} is too long (at most {MAX_FILTER} characters).")
        return value or None

    decision = text("decision")
    if decision and decision not in DECISIONS:
        raise AuditFilterError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}.")
    try:
        page = int(args.get("page") or 1)
    except ValueError:
        raise AuditFilterError("page must be a whole number.") from None
    if page < 1 or page > 100_000:
        raise AuditFilterError("page must be between 1 and 100000.")
    until = _day(text("until"), "until")
    return AuditFilter(person=text("person"), agent=text("agent"), tool=text("tool"), decision=decision,
                       since=_day(text("since"), "since"), until=until and until + timedelta(days=1), page=page)


def _day(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=timezone.utc)
    except ValueError:
        raise AuditFilterError(f"{name} must be a date such as 2026-12-03, not {value!r}.") from None


Decider = so.aliased(Account)


def _select(viewer_id: int | None, where: AuditFilter):
    """The calls `viewer_id` may audit (None: everyone's), filtered, newest first."""
    select = (sa.select(ToolCall, Run, ChatSession, Account, Decider, ApprovalGrant)
              .join(Run, Run.id == ToolCall.run_id).join(ChatSession, ChatSession.id == Run.session_id)
              .join(Account, Account.id == Run.owner_id).outerjoin(Decider, Decider.id == ToolCall.decider_id)
              .outerjoin(ApprovalGrant, ApprovalGrant.id == ToolCall.grant_id))
    if viewer_id is not None:
        select = select.where(Run.owner_id == viewer_id)
    elif where.person:
        select = select.where(sa.or_(Account.email == where.person.lower(), Account.external_id == where.person))
    if where.agent:
        select = select.where(Run.agent_id == where.agent)
    if where.tool:
        select = select.where(ToolCall.name == where.tool)
    if where.decision:
        select = select.where(_decision_is(where.decision))
    if where.since:
        select = select.where(ToolCall.created_at >= where.since)
    if where.until:
        select = select.where(ToolCall.created_at < where.until)
    return select.order_by(ToolCall.created_at.desc(), ToolCall.id.desc())


def _decision_is(decision: str):
    return {
        "pending": ToolCall.status == CallStatus.PENDING,
        "rejected": ToolCall.status == CallStatus.REJECTED,
        "approved": sa.and_(ToolCall.decided_by == "user", ToolCall.status != CallStatus.REJECTED),
        "auto": ToolCall.decided_by == "auto",
        "rule": ToolCall.decided_by == "rule",
        "grant": ToolCall.decided_by == "grant",
        "expired": ToolCall.status == CallStatus.EXPIRED,
        "invalid": sa.and_(ToolCall.decided_by.is_(None), ToolCall.status != CallStatus.PENDING),
    }[decision]


def page(viewer_id: int | None, where: AuditFilter) -> tuple[list[dict], bool]:
    """One page of records, newest first, and whether there is another after it."""
    rows = db.session.execute(_select(viewer_id, where).offset((where.page - 1) * PER_PAGE).limit(PER_PAGE + 1)).all()
    return [record(*row) for row in rows[:PER_PAGE]], len(rows) > PER_PAGE


def records(viewer_id: int | None, where: AuditFilter) -> Iterator[dict]:
    """Every matching record (the exports), read in batches; no transaction is held while one is sent."""
    offset = 0
    while True:
        rows = db.session.execute(_select(viewer_id, where).offset(offset).limit(500)).all()
        batch = [record(*row) for row in rows]
        db.session.commit()
        yield from batch
        if len(rows) < 500:
            return
        offset += 500


def record(call: ToolCall, run: Run, chat: ChatSession, owner: Account, decider: Account | None,
           grant: ApprovalGrant | None = None) -> dict:
    """One call as the audit shows it. Room for what decisions will add (edited arguments, rule or grant
    names, expiry): new keys, the existing ones unchanged."""
    return {
        "id": call.id, "proposed_at": iso_utc(call.created_at), "person": owner.api_user_id or owner.display_name,
        "agent_id": run.agent_id, "chat_id": chat.id, "chat_title": chat.title, "tool": call.name,
        "tool_call_id": call.call_id, "arguments": call.arguments, "model_arguments": call.raw_arguments,
        "requires_confirmation": call.requires_confirmation, "preview": call.preview,
        "decision": decision_of(call), "decided_by": decided_by(call, decider),
        "decided_at": iso_utc(call.decided_at), "reason": call.reason, "status": call.status,
        "result": call.result, "error": call.error, "updated_at": iso_utc(call.updated_at),
        "kind": call.kind, "original_arguments": call.original_arguments,
        "changed": [f"{name}: {json.dumps(old, ensure_ascii=False)} → {json.dumps(new, ensure_ascii=False)}"
                    for name, old, new in changed_by_person(call)],
        "grant_id": call.grant_id, "grant": grants.describe(grant) if grant else None,
        "approvers": call.approvers, "expires_at": iso_utc(call.expires_at),
    }


def decision_of(call: ToolCall) -> str:
    if call.status == CallStatus.PENDING:
        return "pending"
    if call.status == CallStatus.REJECTED:
        return "rejected"
    if call.status == CallStatus.EXPIRED:
        return "expired"
    if call.decided_by in ("auto", "rule", "grant"):
        return call.decided_by
    return "approved" if call.decided_by == "user" else "invalid"


def decided_by(call: ToolCall, decider: Account | None) -> str | None:
    """The account that decided; "auto" (the tool needs no confirmation); "rule" (the tool's rule let
    this call through); "grant #N" (the owner's "Always allow"); "expired" (nobody decided in time);
    "API key" (the service key decided, naming no account); None while undecided."""
    if call.decided_by in ("auto", "rule", "expired"):
        return call.decided_by
    if call.decided_by == "grant":
        return f"grant #{call.grant_id}"
    if call.decided_by == "user":
        return decider.api_user_id or decider.display_name if decider else "API key"
    return None


# --- Exports ---------------------------------------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> str:
    """A cell a spreadsheet shows as text: JSON for structures, and a leading ' before anything it
    would run as a formula (CSV injection)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    value = str(value).lower() if isinstance(value, bool) else str(value)
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def as_csv(items: Iterator[dict]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(FIELDS)
    for item in items:
        writer.writerow([csv_cell(item[field]) for field in FIELDS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def as_jsonl(items: Iterator[dict]) -> Iterator[str]:
    for item in items:
        yield json.dumps(item, ensure_ascii=False) + "\n"
