"""What one decision does to one pending call, for every kind of pause (app.models.CallKind):

- confirm: approve as stored, approve an edit (or keep it pending with its fresh preview), or reject;
- input: the person's values for the tool's `user_input_fields`, merged into the model's arguments;
- external: the result of the person running the call themselves (the function never runs here).

An approval is bound to the arguments and the preview the person saw: the preview is made again
(without side effects) at approval, and if it changed, or the person's fingerprint is of another
state, nothing is approved (`PreviewChanged`: the call stays pending with the new preview).
Used by `commands.decide` (a card) and `commands.continue_run` (the REST API); knows no HTTP.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import sqlalchemy as sa

from app.agent import events
from app.agent.loop import RunRef, agent_of, safe_preview, tool_context
from app.agent.refusals import Conflict, Invalid
from app.agent.tools import ToolArgumentError
from app.extensions import db
from app.models import CallKind, CallStatus, Run, RunStatus, ToolCall, utcnow

MAX_RESULT_CHARS = 20_000


def fingerprint(arguments: dict | None, preview: str | None) -> str:
    """A short digest of what a card shows: its arguments and preview (the approval is bound to it)."""
    text = json.dumps([arguments, preview], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class PreviewChanged(Conflict):
    """The call's preview is not what the person saw: it is shown again, to be approved once more."""

    def __init__(self, call: ToolCall, preview: str | None):
        super().__init__("The preview changed since the card was shown (the data changed meanwhile). "
                         "Nothing was run: check the new preview and decide again.", call=call)
        self.preview = preview


@dataclass(frozen=True)
class Change:
    """A decision's effect on one pending call: its new status and the columns to set."""
    status: str
    values: dict


def resolve(run: RunRef, agent, call: ToolCall, decision, fingerprint_seen: str | None = None) -> Change | None:
    """What `decision` (a `commands.Decision`) does to the pending `call`, checked but not written;
    None: nothing (the call stays as it is). Raises Invalid for a decision this call cannot take and
    PreviewChanged when an approval is of a state the person did not see."""
    tool = agent.tool(call.name) if agent else None
    if decision.user_input is not None and call.kind != CallKind.INPUT:
        raise Invalid(f"Tool call {call.call_id!r} ({call.name}) does not ask for input.")
    if decision.external_result is not None and call.kind != CallKind.EXTERNAL:
        raise Invalid(f"Tool call {call.call_id!r} ({call.name}) runs on the server; it takes no result "
                      "from the client.")
    decided = {"decided_by": "user", "decided_at": utcnow()}
    if decision.confirmed is False:
        return Change(CallStatus.REJECTED, {**decided, "reason": (decision.note or "").strip()[:2000] or None})
    if call.kind == CallKind.INPUT:
        if decision.user_input is None:
            if decision.confirmed:
                raise Invalid(f"{call.name} asks for input: send the values of {', '.join(_input_fields(tool))} "
                              "(requires_user_input with user_input_schema).")
            return None
        return Change(CallStatus.APPROVED, {**decided, **_with_input(tool, call, decision.user_input)})
    if call.kind == CallKind.EXTERNAL:
        if decision.external_result is None:
            if decision.confirmed:
                raise Invalid(f"{call.name} is run by a person, not on the server: send its result "
                              "(external_execution_required with result).")
            return None
        return Change(CallStatus.DONE, {**decided, "result": _result_text(decision.external_result)})
    if decision.arguments is not None and decision.arguments != call.arguments:
        values = _edited(run, tool, call, decision.arguments)
        return Change(CallStatus.PENDING, values) if decision.confirmed is None \
            else Change(CallStatus.APPROVED, {**values, **decided})
    if not decision.confirmed:
        return None
    current = safe_preview(tool, tool_context(run), call.arguments) if tool else call.preview
    seen = fingerprint_seen or fingerprint(call.arguments, call.preview)
    if current != call.preview or seen != fingerprint(call.arguments, current):
        raise PreviewChanged(call, current)
    return Change(CallStatus.APPROVED, decided)


def _edited(run: RunRef, tool, call: ToolCall, arguments: dict) -> dict:
    """Edited arguments, validated and previewed again; the model's own are kept to show and tell."""
    if tool is None or not tool.editable:
        raise Invalid(f"{call.name} does not allow editing its arguments: send them as stored, "
                      "or leave tool_args out.")
    try:
        validated = tool.validate(arguments)
    except ToolArgumentError as exc:
        raise Invalid(str(exc)) from None
    original = call.original_arguments if call.original_arguments is not None else call.arguments
    return {"arguments": validated, "original_arguments": None if validated == original else original,
            "preview": safe_preview(tool, tool_context(run), validated)}


def _input_fields(tool) -> tuple[str, ...]:
    return tool.input_fields if tool is not None else ()


def _with_input(tool, call: ToolCall, values: dict) -> dict:
    """The model's arguments with the person's values for the input fields, validated whole."""
    if tool is None:
        raise Invalid(f"The tool {call.name} is not available now.")
    fields = tool.input_fields
    unknown = [name for name in values if name not in fields]
    if unknown:
        raise Invalid(f"{call.name} asks only for {', '.join(fields)}; not for {', '.join(unknown)}.")
    merged = {**(call.arguments or {}), **values}
    try:
        validated = tool.validate(merged)
    except ToolArgumentError as exc:
        raise Invalid(str(exc)) from None
    return {"arguments": validated, "original_arguments": call.arguments}


def _result_text(result) -> str:
    text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
    if not text.strip():
        raise Invalid("The result is empty: say what came of it (the agent reads it).")
    if len(text) > MAX_RESULT_CHARS:
        raise Invalid(f"The result is too long ({len(text):,} characters; the limit is {MAX_RESULT_CHARS:,}).")
    return text


def refresh_previews(run_id: str | None) -> int:
    """Make the previews of a paused run's pending calls again (previews have no side effects) and store
    those that changed, so a card shows what approving it would do now (approval checks once more).
    Returns how many changed; commits only then."""
    run = db.session.get(Run, run_id) if run_id else None
    if run is None or run.status != RunStatus.PAUSED:
        return 0
    agent = agent_of(run.agent_id)
    ctx = tool_context(RunRef(run.id, run.session_id, run.owner_id, run.agent_id))
    fresh = {}
    for call in db.session.scalars(sa.select(ToolCall).where(ToolCall.run_id == run.id,
                                                             ToolCall.status == CallStatus.PENDING)):
        tool = agent.tool(call.name) if agent else None
        if tool is not None and tool.preview and call.arguments is not None:
            preview = safe_preview(tool, ctx, call.arguments)
            if preview != call.preview:
                fresh[call.id] = preview
    if not fresh:
        return 0
    store_previews(run.id, fresh)
    return len(fresh)


def store_previews(run_id: str, previews: dict[str, str | None]) -> None:
    """Store the new previews of pending calls (by row id; they stay pending) and tell every open card;
    commits."""
    Run.lock(run_id)
    for call_pk, preview in previews.items():
        if ToolCall.transition(call_pk, CallStatus.PENDING, CallStatus.PENDING, preview=preview):
            events.append(run_id, "tool_call_updated", {"call_id": call_pk, "status": CallStatus.PENDING})
    db.session.commit()
