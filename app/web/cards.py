"""How a confirmation card presents a call: the Approve button's words, whether the action destroys
data, and argument values people can read (JSON pretty-printed, long text folded).

The labels are keyed by tool name here, in the presentation layer, so the agent core stays free of
UI words; a tool without an entry gets a plain "Approve"."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone

from app import grants

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


def may_grant(call) -> bool:
    from flask_login import current_user
    return grants.may_grant(call, current_user if current_user.is_authenticated else None)


def register(bp) -> None:
    bp.add_app_template_filter(utc_iso, "utc_iso")
    bp.add_app_template_global(may_grant, "may_grant")
    bp.add_app_template_global(grants.DURATIONS, "grant_durations")
    bp.add_app_template_global(approve_label, "approve_label")
    bp.add_app_template_global(is_destructive, "is_destructive")
    bp.add_app_template_global(shown_value, "shown_value")
    bp.add_app_template_filter(pretty_raw, "pretty_raw")
