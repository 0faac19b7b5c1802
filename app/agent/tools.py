"""Tools an agent can call: a JSON schema built from a plain Python function, validation, and running.

Write a tool as an ordinary function with type hints and a Google-style docstring::

    @tool(requires_confirmation=True)
    def delete_records(ctx: ToolContext, table_name: str, count: int) -> str:
        \"\"\"Delete the oldest records from a table.

        Args:
            table_name: Table to delete from.
            count (int): How many records to delete.
        \"\"\"

The first paragraph of the docstring becomes the tool's description and each `Args:` entry the
description of that parameter; the hints give the JSON types. A parameter annotated `ToolContext`
is filled in by the runner and never shown to the model.

This module knows nothing of Flask, HTTP or HTML.
"""
from __future__ import annotations

import copy
import functools
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union

import sqlalchemy
from jsonschema import Draft202012Validator

__all__ = ["Tool", "ToolArgumentError", "ToolContext", "ToolError", "tool"]


class ToolArgumentError(Exception):
    """The model sent arguments that do not fit the tool's schema.

    `str(e)` is one message meant to be shown to the model so it can correct itself;
    `e.problems` lists each problem on its own.
    """

    def __init__(self, message: str, problems: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.problems = list(problems) or [message]


class ToolError(Exception):
    """The tool refuses to do what was asked (unknown table, count out of range...); `str(e)` says why."""


@dataclass(frozen=True)
class ToolContext:
    """What the runner hands to a tool; never part of a tool's schema."""

    workspace: sqlalchemy.Engine
    owner_id: int | None = None
    run_id: str | None = None


@dataclass(frozen=True, eq=False)  # eq=False: a Tool hashes by identity (its `parameters` dict is unhashable)
class Tool:
    """A function the model may call, with its JSON schema.

    `preview`, when set, is `preview(ctx, arguments) -> str | None`: a one-line, human-readable
    account of what a call would do, for the confirmation card (see `describe_call`).

    `editable` says whether the person deciding a gated call may change its arguments first; edited
    arguments are validated again and approved as edited. Off by default: the call runs as proposed.
    """

    name: str
    description: str
    parameters: dict
    requires_confirmation: bool
    func: Callable
    preview: Callable[[ToolContext, dict], str | None] | None = None
    editable: bool = False

    def __post_init__(self) -> None:
        Draft202012Validator.check_schema(self.parameters)
        object.__setattr__(self, "_validator", Draft202012Validator(self.parameters))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (handy in tests and in other code)."""
        return self.func(*args, **kwargs)

    # -- arguments -----------------------------------------------------------------------------------

    def validate(self, arguments: dict | str | None) -> dict:
        """Check the model's arguments (a dict, or the raw JSON string) and return them as a new dict.

        Raises ToolArgumentError naming every problem in plain words. Whole-number floats sent
        for integer parameters (`5.0`) are turned into ints.
        """
        if arguments is None:
            arguments = {}
        if isinstance(arguments, (str, bytes, bytearray)):
            text = arguments.decode() if isinstance(arguments, (bytes, bytearray)) else arguments
            if not text.strip():
                arguments = {}
            else:
                try:
                    arguments = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ToolArgumentError(
                        f"Invalid arguments for {self.name}: not valid JSON ({e.msg} at line {e.lineno} "
                        f"column {e.colno}). Send the arguments as one JSON object."
                    ) from None
        if not isinstance(arguments, dict):
            raise ToolArgumentError(
                f"Invalid arguments for {self.name}: expected a JSON object of named arguments, "
                f"got {_describe_value(arguments)}."
            )
        problems = _problems(self._validator, arguments)  # type: ignore[attr-defined]
        if problems:
            raise ToolArgumentError(f"Invalid arguments for {self.name}: {'; '.join(problems)}.", problems)
        return _coerce(self.parameters, copy.deepcopy(arguments))

    # -- running ---------------------------------------------------------------------------------------

    def run(self, ctx: ToolContext, arguments: dict | str | None) -> str:
        """Validate `arguments`, call the function (injecting `ctx`) and return its result as a string.

        ToolArgumentError and ToolError propagate for the runner to report to the model.
        """
        kwargs = self.validate(arguments)
        ctx_param = _context_parameter(self.func)
        if ctx_param is not None:
            kwargs[ctx_param] = ctx
        return _to_text(self.func(**kwargs))

    def describe_call(self, ctx: ToolContext, arguments: dict | str | None) -> str | None:
        """The preview line for a call, or None if there is no preview or it cannot be made.

        Never raises: a preview is a nicety for the confirmation card, not a check.
        """
        if self.preview is None:
            return None
        try:
            text = self.preview(ctx, self.validate(arguments))
        except Exception:  # noqa: BLE001 - see docstring
            return None
        return str(text) if text is not None else None

    def openai_function(self) -> dict:
        """`{"name", "description", "parameters"}`, for a provider to wrap in its own tool format."""
        return {"name": self.name, "description": self.description, "parameters": copy.deepcopy(self.parameters)}


def tool(
    func: Callable | None = None,
    *,
    requires_confirmation: bool = False,
    name: str | None = None,
    description: str | None = None,
    preview: Callable[[ToolContext, dict], str | None] | None = None,
    editable: bool = False,
) -> Any:
    """Turn a function into a `Tool`; usable as `@tool` and as `@tool(requires_confirmation=True, ...)`."""

    def wrap(f: Callable) -> Tool:
        doc_description, arg_docs = parse_docstring(inspect.getdoc(f) or "")
        return Tool(
            name=name or f.__name__,
            description=description if description is not None else doc_description,
            parameters=build_parameters_schema(f, arg_docs),
            requires_confirmation=requires_confirmation,
            func=f,
            preview=preview,
            editable=editable,
        )

    if func is not None:
        if not callable(func):
            raise TypeError("tool() takes the function as its only positional argument")
        return wrap(func)
    return wrap


# -- docstrings -----------------------------------------------------------------------------------------

_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters|Params)\s*:\s*$", re.IGNORECASE)
_SECTION_HEADER = re.compile(
    r"^(Args|Arguments|Parameters|Params|Returns?|Yields?|Raises|Examples?|Notes?|Attributes|Warnings?|"
    r"See Also|Todo|References)\s*:\s*$", re.IGNORECASE)
_ARG_ENTRY = re.compile(r"^\*{0,2}(?P<name>\w+)\s*(?:\((?P<type>[^)]*)\))?\s*:\s*(?P<text>.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a (cleaned) Google-style docstring into its first paragraph and its `Args:` descriptions."""
    lines = doc.expandtabs().splitlines()
    first: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped:
            if first:
                break
            continue
        if _SECTION_HEADER.match(stripped):
            break
        first.append(stripped)
    description = " ".join(first)

    args: dict[str, str] = {}
    in_args = False
    entry_indent: int | None = None
    current: str | None = None
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not in_args:
            if _ARGS_HEADER.match(stripped) and indent == 0:
                in_args, entry_indent, current = True, None, None
            continue
        if not stripped:
            continue
        if indent == 0:  # the next section ("Returns:", "Raises:"...) or plain text: Args is over
            in_args = False
            if _ARGS_HEADER.match(stripped):
                in_args, entry_indent, current = True, None, None
            continue
        if entry_indent is None:
            entry_indent = indent
        match = _ARG_ENTRY.match(stripped)
        if indent <= entry_indent and match:
            current = match.group("name")
            args[current] = match.group("text").strip()
            entry_indent = indent
        elif current is not None:  # continuation of the current entry
            args[current] = f"{args[current]} {stripped}".strip()
    return description, args


# -- schemas --------------------------------------------------------------------------------------------

_NONE_TYPE = type(None)
_JSON_TYPE_OF = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _is_context_hint(hint: Any) -> bool:
    if hint is ToolContext:
        return True
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not _NONE_TYPE]
        return len(args) == 1 and args[0] is ToolContext
    return False


def _hints(func: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception as e:  # noqa: BLE001 - unresolved forward references and the like
        raise TypeError(f"cannot read the type hints of {func.__qualname__}: {e}") from e


@functools.lru_cache(maxsize=None)
def _context_parameter(func: Callable) -> str | None:
    """The name of the parameter that receives the ToolContext, if any."""
    hints = _hints(func)
    for pname in inspect.signature(func).parameters:
        if _is_context_hint(hints.get(pname)):
            return pname
    return None


def build_parameters_schema(func: Callable, arg_docs: dict[str, str] | None = None) -> dict:
    """The JSON schema (an object with properties, required, no extra properties) of `func`'s parameters."""
    arg_docs = arg_docs or {}
    hints = _hints(func)
    properties: dict[str, dict] = {}
    required: list[str] = []
    for pname, param in inspect.signature(func).parameters.items():
        hint = hints.get(pname, inspect.Parameter.empty)
        if _is_context_hint(hint):
            continue
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"tool {func.__name__}: *{pname} / **{pname} parameters are not supported")
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"tool {func.__name__}: positional-only parameter {pname!r} is not supported")
        if hint is inspect.Parameter.empty:
            raise TypeError(f"tool {func.__name__}: parameter {pname!r} needs a type hint")
        try:
            schema, annotated_doc = schema_for_type(hint)
        except TypeError as e:
            raise TypeError(f"tool {func.__name__}: parameter {pname!r}: {e}") from None
        if param.default is None:  # `x: str = None` means the model may send null too
            schema = _nullable(schema)
        doc = arg_docs.get(pname) or annotated_doc
        if doc:
            schema = {"description": doc, **schema}
        if param.default is inspect.Parameter.empty:
            required.append(pname)
        elif _json_serialisable(param.default):
            schema["default"] = param.default
        properties[pname] = schema
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def schema_for_type(hint: Any) -> tuple[dict, str | None]:
    """JSON schema for one type hint, and a description found in `Annotated[..., "text"]` if any."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(hint)
        schema, doc = schema_for_type(base)
        text = next((x for x in extras if isinstance(x, str)), None)
        return schema, text or doc
    return _schema(hint), None


def _schema(hint: Any) -> dict:
    if hint is Any:
        return {}
    if hint is None or hint is _NONE_TYPE:
        return {"type": "null"}
    if hint in _JSON_TYPE_OF:
        return {"type": _JSON_TYPE_OF[hint]}
    if hint in (list, tuple):
        return {"type": "array"}
    if hint is dict:
        return {"type": "object"}

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return schema_for_type(hint)[0]
    if origin in (Union, types.UnionType):
        nullable = _NONE_TYPE in args
        options = [_schema(a) for a in args if a is not _NONE_TYPE]
        schema = options[0] if len(options) == 1 else {"anyOf": options}
        return _nullable(schema) if nullable else schema
    if origin is Literal:
        values = list(args)
        for v in values:
            if v is not None and type(v) not in _JSON_TYPE_OF:
                raise TypeError(f"Literal values must be str, int, float, bool or None, got {v!r}")
        json_types = []
        for v in values:
            t = "null" if v is None else _JSON_TYPE_OF[type(v)]
            if t not in json_types:
                json_types.append(t)
        return {"type": json_types[0] if len(json_types) == 1 else json_types, "enum": values}
    if origin in (list, typing.List):  # noqa: UP006
        return {"type": "array", "items": _schema(args[0])} if args else {"type": "array"}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema(args[0])}
        if args:
            return {"type": "array", "prefixItems": [_schema(a) for a in args],
                    "items": False, "minItems": len(args)}
        return {"type": "array"}
    if origin is dict:
        if args and args[0] is not str:
            raise TypeError("dict keys must be str (JSON object keys are strings)")
        if len(args) == 2 and args[1] is not Any:
            return {"type": "object", "additionalProperties": _schema(args[1])}
        return {"type": "object"}
    raise TypeError(f"unsupported type hint {hint!r}; use str, int, float, bool, list[...], dict, Literal[...] "
                    "or Optional[...]")


def _nullable(schema: dict) -> dict:
    """Let `schema` also accept null."""
    if not schema:  # Any: null is already allowed
        return schema
    if set(schema) == {"anyOf"}:
        return {"anyOf": [*schema["anyOf"], {"type": "null"}]}
    if "type" not in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    schema = dict(schema)
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if "null" not in kinds:
        kinds = [*kinds, "null"]
    schema["type"] = kinds[0] if len(kinds) == 1 else kinds
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]
    return schema


def _json_serialisable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


# -- validation messages --------------------------------------------------------------------------------

_TYPE_WORDS = {
    "string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
    "array": "a list", "object": "an object", "null": "null",
}


def _describe_value(value: Any) -> str:
    if value is None:
        return "null"
    kind = ("a boolean" if isinstance(value, bool) else "an integer" if isinstance(value, int)
            else "a number" if isinstance(value, float) else "a string" if isinstance(value, str)
            else "a list" if isinstance(value, list) else "an object" if isinstance(value, dict)
            else type(value).__name__)
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problems(validator: Draft202012Validator, arguments: dict) -> list[str]:
    problems: list[str] = []

    def add(text: str) -> None:
        if text not in problems:
            problems.append(text)

    errors = sorted(validator.iter_errors(arguments), key=lambda e: (list(map(str, e.path)), e.validator))
    for e in errors:
        where = _path(e.absolute_path)
        prefix = f"{where}: " if where else ""
        if e.validator == "required":
            for pname in e.validator_value:
                if isinstance(e.instance, dict) and pname not in e.instance:
                    add(f"{prefix}missing required argument '{pname}'" if not where
                        else f"{where}: missing required key '{pname}'")
        elif e.validator == "additionalProperties" and e.validator_value is False and isinstance(e.instance, dict):
            allowed = list(e.schema.get("properties", {}))
            for key in e.instance:
                if key not in allowed:
                    hint = f" (allowed: {', '.join(allowed)})" if allowed else " (this tool takes no arguments)"
                    add(f"{prefix}unexpected argument '{key}'{hint}" if not where
                        else f"{where}: unexpected key '{key}'")
        elif e.validator == "type":
            wanted = e.validator_value if isinstance(e.validator_value, list) else [e.validator_value]
            words = " or ".join(_TYPE_WORDS.get(t, t) for t in wanted)
            add(f"{prefix}expected {words}, got {_describe_value(e.instance)}")
        elif e.validator == "enum":
            options = ", ".join(json.dumps(v, ensure_ascii=False) for v in e.validator_value)
            add(f"{prefix}must be one of {options}, got {_describe_value(e.instance)}")
        else:
            add(f"{prefix}{e.message}")
    return problems


def _coerce(schema: dict, value: Any) -> Any:
    """Turn whole-number floats into ints where the schema wants an integer (recursively)."""
    types_ = schema.get("type")
    types_ = types_ if isinstance(types_, list) else [types_]
    if "integer" in types_ and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict) and "properties" in schema:
        return {k: _coerce(schema["properties"].get(k, {}), v) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_coerce(schema["items"], v) for v in value]
    return value


def _to_text(result: Any) -> str:
    if result is None:
        return "Done."
    if isinstance(result, str):
        return result
    if isinstance(result, (dict, list, tuple)):
        return json.dumps(result, ensure_ascii=False, default=str)
    return str(result)
