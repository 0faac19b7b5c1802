"""Whether a new call needs a person, and which approval options it carries (the agent file's rules).

A call that asks for input or hands work over always waits for a person. For a tool that may ask
for confirmation (`requires_confirmation`), in this order: a rule `(arguments, run_context) ->
bool` that says no lets the call through, recorded as approved by that rule (a rule that raises asks:
fail safe); else a matching "Always allow" grant of the run's owner lets it through (app.grants);
else it waits for a person until `expires_at`. The tool's `approvers` and `allow_always` are stored on
the call so every card, the inbox and the decide paths enforce what the tool said when it was made.

Knows nothing of Flask requests or HTML.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import current_app

from app import grants
from app.agent.tools import Tool, ToolContext
from app.models import CallStatus

log = logging.getLogger(__name__)

DEFAULT_APPROVAL_TIMEOUT = 86400.0  # seconds; APPROVAL_TIMEOUT

APPROVED_BY_RULE = "rule"
APPROVED_BY_GRANT = "grant"


def needs_confirmation(tool: Tool, arguments: dict, ctx: ToolContext) -> bool:
    """The tool's rule for these arguments; True when the rule itself fails (never run unasked)."""
    if tool.confirmation_rule is None:
        return tool.requires_confirmation
    try:
        return bool(tool.confirmation_rule(dict(arguments), ctx))
    except Exception:
        log.warning("the confirmation rule of %s raised; the call waits for a person", tool.name, exc_info=True)
        return True


def approval_timeout(tool: Tool) -> float:
    return tool.approval_timeout or current_app.config.get("APPROVAL_TIMEOUT") or DEFAULT_APPROVAL_TIMEOUT


def gate(tool: Tool, arguments: dict, ctx: ToolContext, agent_id: str, now: datetime,
         grants_live: bool = True) -> dict:
    """The ledger values of a new, valid call of `tool`: approved at once (decided_by auto, rule or
    grant) or pending with its approval options. `grants_live` False: no grant is looked for (the
    account had none for the agent when the turn began)."""
    if not tool.pauses:
        return {"status": CallStatus.APPROVED, "decided_by": "auto", "decided_at": now}
    expires_at = now + timedelta(seconds=approval_timeout(tool))
    if tool.kind != "confirm":  # input to give or work to hand back: only a person can, every time
        return {"approvers": tool.approvers, "allow_always": False, "status": CallStatus.PENDING,
                "expires_at": expires_at}
    options = {"approvers": tool.approvers, "allow_always": tool.allow_always}
    if not needs_confirmation(tool, arguments, ctx):
        return {**options, "status": CallStatus.APPROVED, "decided_by": APPROVED_BY_RULE, "decided_at": now}
    grant_id = grants.matching(ctx.owner_id, agent_id, tool.name, ctx.session_id, arguments, now) \
        if options["allow_always"] and grants_live else None
    if grant_id is not None:
        return {**options, "status": CallStatus.APPROVED, "decided_by": APPROVED_BY_GRANT, "decided_at": now,
                "grant_id": grant_id}
    return {**options, "status": CallStatus.PENDING, "expires_at": expires_at}
