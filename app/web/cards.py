"""How a confirmation card presents a call: the Approve button's words, whether the action destroys
data, and argument values people can read (JSON pretty-printed, long text folded).

The labels are keyed by tool name here, in the presentation layer, so the agent core stays free of
UI words; a tool without an entry gets a plain "Approve"."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone

import sqlalchemy as sa
from flask import current_app, g
from flask_login import current_user

from app import grants
from app.agent.context import changed_by_person
from app.agent.decisions import fingerprint
from app.extensions import db
from app.agent.refusals import Invalid, NotFound
from app.models import CallKind, Run, ToolCall
from app.web.schema_form import form_fields, read_form

FOLD_CHARS = 160   # longer values (or several lines) are folded behind their first words
SUMMARY_CHARS = 72


def _count(arguments: dict, noun: str) -> str:
    count = arguments.get("count")
    if isinstance(count, int) and not isinstance(count, bool):
        return f"{count:,} {noun if count == 1 else noun + 's'}"
    return noun + "s"


@dataclass(frozen=True)
class Action:
    label: Callable[[dict], str]
    destructive: bool = False


ACTIONS: dict[str, Action] = {
    "delete_records": Action(lambda a: f"Delete {_count(a, 'row')}", destructive=True),
}


def approve_label(call) -> str:
    action = ACTIONS.get(call.name)
    if action is None or not call.arguments:
        return "Approve"
    try:
        return action.label(call.arguments)
    except (KeyError, TypeError, ValueError):
        return "Approve"


def is_destructive(call) -> bool:
    action = ACTIONS.get(call.name)
    return bool(action and action.destructive)


@dataclass(frozen=True)
class ShownValue:
    text: str          # what to show (JSON pretty-printed for objects and lists)
    block: bool        # multi-line: shown in a <pre>
    summary: str | None  # set when the value is folded: its first words


def shown_value(value) -> ShownValue:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, indent=2, ensure_ascii=False)
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False)
    block = "\n" in text
    folded = len(text) > FOLD_CHARS or text.count("\n") > 6
    summary = None
    if folded:
        first = " ".join(text.split())
        summary = first[:SUMMARY_CHARS].rstrip() + "…"
    return ShownValue(text, block, summary)


def pretty_raw(raw: str) -> str:
    """The model's raw arguments, pretty-printed when they are JSON at all."""
    try:
        return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return raw or ""


def utc_iso(moment) -> str:
    """ISO 8601 with its zone, for <time datetime>: SQLite gives back naive datetimes (stored as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat()


def run_facts(run_id: str) -> tuple[int, str] | None:
    """A run's owner id and agent id, read once per request (they never change; a stream, which knows
    them from its first read, hands them in with `know_run`)."""
    known = g.setdefault("run_facts", {})
    if run_id not in known:
        row = db.session.execute(sa.select(Run.owner_id, Run.agent_id).where(Run.id == run_id)).one_or_none()
        known[run_id] = (row.owner_id, row.agent_id) if row is not None else None
    return known[run_id]


def know_run(run_id: str, owner_id: int, agent_id: str) -> None:
    g.setdefault("run_facts", {})[run_id] = (owner_id, agent_id)


def tool_of(call):
    """The tool of a call, from the agent of its run (None if that agent or tool is gone)."""
    facts = run_facts(call.run_id)
    agent = current_app.extensions["agents"].get(facts[1]) if facts else None
    return agent.tool(call.name) if agent else None


def edit_fields(call, typed: dict | None = None):
    """The Edit form's fields for a pending call, or [] if its tool does not allow editing."""
    tool = tool_of(call)
    if tool is None or not tool.editable or call.kind != CallKind.CONFIRM or call.arguments is None:
        return []
    return form_fields(tool.parameters, call.arguments, typed=typed)


def input_fields(call, typed: dict | None = None):
    """The fields a call asks the person to fill in."""
    tool = tool_of(call)
    if tool is None:
        return []
    return form_fields(tool.parameters, call.arguments, names=tool.input_fields, typed=typed)


def seen(call) -> str:
    """The fingerprint of what this card shows: an approval is bound to it (app.agent.decisions)."""
    return fingerprint(call.arguments, call.preview)


def decision_from_form(owner_id, run_id: str, call_id: str, decision: str, form) -> tuple[dict, dict | None]:
    """What a card's form asks of `commands.decide` (its keyword arguments), and what the person typed
    (to give a refused form back as it was). A value that is not even of its type is refused here
    (Invalid, with the call), before the tool's own validation sees the rest."""
    if decision in ("approve", "reject"):
        return {"approve": decision == "approve"}, None
    call = ToolCall.owned_by(owner_id, run_id, call_id)
    if call is None:
        raise NotFound("No such tool call.")
    if decision == "result":
        text, kind = form.get("result", ""), form.get("format", "text")
        typed = {"result": text, "format": kind}
        if kind == "json":
            try:
                json.loads(text)
            except ValueError as exc:
                raise _given_back(Invalid(f"The result is not valid JSON ({exc.msg} at line {exc.lineno} "
                                          f"column {exc.colno}).", call=call), typed) from None
        return {"approve": None, "result": text.strip()}, typed
    tool = tool_of(call)
    if tool is None:
        raise Invalid(f"The tool {call.name} is not available now.", call=call)
    names = tool.input_fields if decision == "input" else list(tool.parameters.get("properties", {}))
    values, problems, typed = read_form(tool.parameters, form, names)
    if problems:
        raise _given_back(Invalid(f"Invalid arguments for {call.name}: {'; '.join(problems)}.", call=call), typed)
    if decision == "input":
        return {"approve": None, "user_input": values}, typed
    return {"approve": None, "arguments": values}, typed


def _given_back(refusal, typed: dict):
    refusal.typed = typed  # the view shows the form again as it was typed
    return refusal


def problems_of(refusal) -> list[str]:
    """A refusal's message as a list of problems, one per line of the form (`a; b` -> [a, b])."""
    text = str(refusal)
    head, _, rest = text.partition(": ")
    if head.startswith("Invalid arguments for") and rest:
        return [p.strip().rstrip(".") for p in rest.split("; ")]
    return [text]


def may_grant(call) -> bool:
    if not call.allow_always or not current_user.is_authenticated:
        return False
    facts = run_facts(call.run_id)
    return facts is not None and grants.refusal_of(call, facts[0], current_user.id, current_user.is_admin) is None


def register(bp) -> None:
    bp.add_app_template_global(edit_fields, "edit_fields")
    bp.add_app_template_global(input_fields, "input_fields")
    bp.add_app_template_global(seen, "seen_fingerprint")
    bp.add_app_template_global(changed_by_person, "changed_by_person")
    bp.add_app_template_filter(utc_iso, "utc_iso")
    bp.add_app_template_global(may_grant, "may_grant")
    bp.add_app_template_global(grants.DURATIONS, "grant_durations")
    bp.add_app_template_global(approve_label, "approve_label")
    bp.add_app_template_global(is_destructive, "is_destructive")
    bp.add_app_template_global(shown_value, "shown_value")
    bp.add_app_template_filter(pretty_raw, "pretty_raw")
