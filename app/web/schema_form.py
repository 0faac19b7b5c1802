"""A form for a tool's arguments, generated from its JSON schema, and reading it back.

Each property becomes a field by its type: text (with length bounds), number (step 1 for integers,
min/max from the bounds), a checkbox for booleans, a <select> for enums and Literals, and a JSON
textarea for lists and objects. Reading the form turns the text back into JSON values; the tool's own
validation (Tool.validate) then judges them, so the form never is the only check.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

PREFIX = "arg."  # form field names: arg.<argument>, so no argument can collide with csrf_token & co


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    widget: str             # text | textarea | number | checkbox | select | json
    required: bool
    value: str              # as the input shows it
    checked: bool = False
    options: tuple = ()     # (value, label) for a select
    minimum: object = None
    maximum: object = None
    step: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    description: str = ""

    @property
    def input_name(self) -> str:
        return PREFIX + self.name


def _kind(schema: dict) -> tuple[dict, bool]:
    """The property's schema without an `anyOf [..., null]` wrapper, and whether null is allowed."""
    options = schema.get("anyOf")
    if isinstance(options, list):
        real = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
        if len(real) == 1:
            return {**real[0], **{k: v for k, v in schema.items() if k != "anyOf"}}, len(real) < len(options)
    return schema, schema.get("type") == "null"


def form_fields(schema: dict, values: dict | None, names=None, typed: dict | None = None) -> list[FormField]:
    """The fields for `names` (all properties if None), showing `values` (the call's arguments) or, after
    a refused submission, `typed` (what the person typed, as text: nothing they typed is lost)."""
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    values, typed = values or {}, typed or {}
    fields = []
    for name in (names if names is not None else list(properties)):
        prop, _ = _kind(properties.get(name, {}))
        kind = prop.get("type")
        value = values.get(name, prop.get("default"))
        shown = typed.get(name)
        common = dict(name=name, label=name.replace("_", " "), required=name in required,
                      description=prop.get("description", ""))
        if "enum" in prop:
            options = tuple((json.dumps(v) if not isinstance(v, str) else v, str(v)) for v in prop["enum"])
            current = shown if shown is not None else ("" if value is None else
                                                       value if isinstance(value, str) else json.dumps(value))
            fields.append(FormField(widget="select", value=current, options=options, **common))
        elif kind == "boolean":
            checked = (shown == "on") if name in typed else bool(value)
            fields.append(FormField(widget="checkbox", value="on", checked=checked, **common))
        elif kind in ("integer", "number"):
            low = prop.get("minimum", prop.get("exclusiveMinimum"))
            high = prop.get("maximum", prop.get("exclusiveMaximum"))
            current = shown if shown is not None else ("" if value is None else json.dumps(value))
            fields.append(FormField(widget="number", value=current, minimum=low, maximum=high,
                                    step="1" if kind == "integer" else "any", **common))
        elif kind == "string":
            current = shown if shown is not None else ("" if value is None else str(value))
            long = (prop.get("maxLength") or 0) > 200 or "\n" in current
            fields.append(FormField(widget="textarea" if long else "text", value=current,
                                    min_length=prop.get("minLength"), max_length=prop.get("maxLength"), **common))
        else:  # lists, objects, anything else: JSON text
            current = shown if shown is not None else ("" if value is None else json.dumps(value, indent=2))
            fields.append(FormField(widget="json", value=current, **common))
    return fields


def read_form(schema: dict, form, names) -> tuple[dict, list[str], dict]:
    """(values, problems, typed) from a submitted form: the values as JSON, each problem in plain words,
    and what was typed (to show the form again as it was). An empty optional field is left out."""
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    values, problems, typed = {}, [], {}
    for name in names:
        prop, nullable = _kind(properties.get(name, {}))
        kind = prop.get("type")
        if kind == "boolean" and "enum" not in prop:
            typed[name] = "on" if form.get(PREFIX + name) else ""
            values[name] = bool(form.get(PREFIX + name))
            continue
        text = form.get(PREFIX + name, "")
        typed[name] = text
        if text.strip() == "" and kind != "string":
            if name in required and not nullable:
                problems.append(f"{name}: this field is required")
            continue
        if "enum" in prop:
            match = [v for v in prop["enum"] if (v if isinstance(v, str) else json.dumps(v)) == text]
            if match:
                values[name] = match[0]
            else:
                problems.append(f"{name}: choose one of the options")
        elif kind == "integer":
            try:
                values[name] = int(text.strip())
            except ValueError:
                problems.append(f"{name}: expected a whole number, got {text.strip()[:40]!r}")
        elif kind == "number":
            try:
                values[name] = float(text.strip())
            except ValueError:
                problems.append(f"{name}: expected a number, got {text.strip()[:40]!r}")
        elif kind == "string":
            if text == "" and name not in required:
                continue
            values[name] = text
        else:
            try:
                values[name] = json.loads(text)
            except ValueError as exc:
                problems.append(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    return values, problems, typed
