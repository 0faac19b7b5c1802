"""Tools an agent can call: a JSON schema built from a plain Python function, validation, and running.

Write a tool as an ordinary (or `async`) function with type hints and a Google-style docstring::

    @tool(requires_confirmation=True)
    def delete_records(table_name: Literal["users", "orders"],
                       count: Annotated[int, Field(ge=1, le=10_000)]) -> str:
        \"\"\"Delete the oldest records from a table.

        Args:
            table_name: Table to delete from.
            count: How many records to delete.
        \"\"\"

pydantic builds the arguments' model (so `Annotated[..., Field(...)]`, `Literal`, enums and nested
models reach the schema and are enforced) and docstring-parser reads the description and the `Args:`.
A parameter called `run_context`, or annotated `RunContext` (alias `ToolContext`), is filled in by the
agent loop and never shown to the model. A tool reports a problem by raising; it returns text or any
JSON-serialisable value.

Tools from elsewhere (an MCP server) bring their own JSON schema: `Tool.from_json_schema` validates
against it with jsonschema.

This module knows nothing of Flask, HTTP or HTML.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import functools
import inspect
import json
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docstring_parser
import pydantic
import sqlalchemy

__all__ = ["DefinitionError", "RunContext", "Tool", "ToolArgumentError", "ToolContext", "ToolError", "tool"]


class DefinitionError(Exception):
    """An agent or tool definition the app cannot honour; `str(e)` is one line naming file and line."""


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
    """What the agent loop hands to a tool (as `run_context`); never part of a tool's schema."""

    workspace: sqlalchemy.Engine | None = None
    owner_id: int | None = None
    run_id: str | None = None
    session_id: str | None = None

    @property
    def account_id(self) -> int | None:
        return self.owner_id


RunContext = ToolContext  # the name agent authors see (app.sdk)

CONTEXT_PARAMETER = "run_context"


@dataclass(frozen=True, eq=False)  # eq=False: a Tool hashes by identity (its `parameters` dict is unhashable)
class Tool:
    """A function the model may call, with its JSON schema.

    `preview`, when set, is `preview(ctx, arguments) -> str | None`: a one-line, human-readable
    account of what a call would do, for the confirmation card (made by the agent loop;
    a preview that raises shows no preview).

    `editable` says whether the person deciding a gated call may change its arguments first; edited
    arguments are validated again, previewed again and approved as edited (on unless a tool says no).

    `requires_user_input` pauses every call for the person to fill in `user_input_fields` (all of the
    arguments when none are named; the model never sees those), then runs with the merged arguments.
    `external_execution` pauses every call for the person to run it themselves and hand back the
    result, which is what the model reads; the function is never called.

    `source` says where the tool comes from ("python", or "mcp" for a server's tool) and
    `destructive` what an MCP server's annotations say (None: not said).

    Approval options (app.agent.rules): `confirmation_rule`, when set, is `(arguments, run_context)
    -> bool` deciding per call whether it needs confirmation (`requires_confirmation` is then True:
    the tool may ask); `approvers="admin"` lets only admins decide its calls; `allow_always` whether a
    person may grant "Always allow"; `approval_timeout` seconds a call waits before it expires (None:
    APPROVAL_TIMEOUT).
    """

    name: str
    description: str
    parameters: dict
    requires_confirmation: bool
    func: Callable
    preview: Callable[[ToolContext, dict], str | None] | None = None
    editable: bool = True
    arguments_model: type[pydantic.BaseModel] | None = None  # Python tools
    context_parameter: str | None = None
    source: str = "python"
    destructive: bool | None = None
    requires_user_input: bool = False
    user_input_fields: tuple[str, ...] = ()
    external_execution: bool = False

    @property
    def kind(self) -> str:
        """What a call of this tool asks of the person (app.models.CallKind's values)."""
        return "external" if self.external_execution else "input" if self.requires_user_input else "confirm"

    @property
    def pauses(self) -> bool:
        """Whether a call of this tool waits for the person before anything runs."""
        return self.requires_confirmation or self.requires_user_input or self.external_execution

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The arguments the person fills in (for `requires_user_input`)."""
        if not self.requires_user_input:
            return ()
        return self.user_input_fields or tuple(self.parameters.get("properties", {}))

    @property
    def model_parameters(self) -> dict:
        """The schema the model is given: without the fields the person fills in."""
        if not self.input_fields:
            return self.parameters
        schema = copy.deepcopy(self.parameters)
        for field in self.input_fields:
            schema.get("properties", {}).pop(field, None)
        schema["required"] = [r for r in schema.get("required", []) if r not in self.input_fields]
        return schema

    def validate_proposal(self, arguments: dict | str | None) -> dict:
        """The model's arguments of a call: `validate`, except that the fields the person fills in are
        neither expected nor kept (they are checked, merged, when the person submits them)."""
        if not self.input_fields:
            return self.validate(arguments)
        from jsonschema import Draft202012Validator

        arguments = _as_object(self.name, arguments)
        arguments = {k: v for k, v in arguments.items() if k not in self.input_fields}
        problems = _json_schema_problems(Draft202012Validator(self.model_parameters), arguments)
        if problems:
            raise ToolArgumentError(f"Invalid arguments for {self.name}: {'; '.join(problems)}.", problems)
        return copy.deepcopy(arguments)
    confirmation_rule: Callable[[dict, ToolContext], bool] | None = None
    approvers: str | None = None
    allow_always: bool = True
    approval_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.arguments_model is None:  # a schema from elsewhere: validate with jsonschema
            from jsonschema import Draft202012Validator

            Draft202012Validator.check_schema(self.parameters)
            object.__setattr__(self, "_validator", Draft202012Validator(self.parameters))

    @classmethod
    def from_json_schema(cls, name: str, description: str, parameters: dict, func: Callable, **options) -> Tool:
        """A tool whose arguments are described by a JSON schema (an MCP server's input schema)."""
        parameters = dict(parameters or {"type": "object"})
        parameters.setdefault("type", "object")
        parameters.setdefault("properties", {})
        return cls(name=name, description=description, parameters=parameters, func=func, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (handy in tests and in other code)."""
        return self.func(*args, **kwargs)

    # -- arguments -----------------------------------------------------------------------------------

    def validate(self, arguments: dict | str | None) -> dict:
        """Check the model's arguments (a dict, or the raw JSON string) and return them as a new,
        JSON-serialisable dict (what the ledger stores and the card shows).

        Raises ToolArgumentError naming every problem in plain words."""
        arguments = _as_object(self.name, arguments)
        if self.arguments_model is not None:
            try:
                # Strict JSON rules: "5" is not an integer, nor is true; enums and Literals take their values.
                validated = self.arguments_model.model_validate_json(
                    json.dumps(_whole_floats(self.parameters, arguments)), strict=True)
            except pydantic.ValidationError as exc:
                allowed = list(self.arguments_model.model_fields)
                problems = list(dict.fromkeys(_pydantic_problem(e, allowed) for e in exc.errors(include_url=False)))
                raise ToolArgumentError(f"Invalid arguments for {self.name}: {'; '.join(problems)}.",
                                        problems) from None
            return validated.model_dump(mode="json", exclude_unset=True)
        problems = _json_schema_problems(self._validator, arguments)  # type: ignore[attr-defined]
        if problems:
            raise ToolArgumentError(f"Invalid arguments for {self.name}: {'; '.join(problems)}.", problems)
        return copy.deepcopy(arguments)

    # -- running ---------------------------------------------------------------------------------------

    def run(self, ctx: ToolContext, arguments: dict | str | None) -> str:
        """Validate `arguments`, call the function (injecting the run context) and return its result
        as a string. ToolArgumentError and ToolError (and whatever the tool raises) propagate."""
        kwargs = self.validate(arguments)
        if self.arguments_model is not None:  # hand the function Python values (enums, models)
            model = self.arguments_model.model_validate_json(json.dumps(kwargs), strict=True)
            kwargs = {name: getattr(model, name) for name in type(model).model_fields}
        if self.context_parameter:
            kwargs[self.context_parameter] = ctx
        result = self.func(**kwargs)
        if inspect.iscoroutine(result):
            result = _run_coroutine(result)
        return _to_text(result)

    def openai_function(self) -> dict:
        """`{"name", "description", "parameters"}`, for a provider to wrap in its own tool format. Made
        once per tool and handed to every model request (a deep copy per turn was a tenth of a model
        turn's CPU): providers and serializers read it and never change it."""
        return self._function_spec

    @functools.cached_property
    def _function_spec(self) -> dict:
        return {"name": self.name, "description": self.description, "parameters": copy.deepcopy(self.model_parameters)}


APPROVERS = (None, "admin")


def tool(
    func: Callable | None = None,
    *,
    requires_confirmation: bool | Callable[[dict, ToolContext], bool] = False,
    name: str | None = None,
    description: str | None = None,
    preview: Callable[[ToolContext, dict], str | None] | None = None,
    editable: bool = True,
    requires_user_input: bool = False,
    user_input_fields: list[str] | tuple[str, ...] | None = None,
    external_execution: bool = False,
    approvers: str | None = None,
    allow_always: bool = True,
    approval_timeout: float | None = None,
    **unsupported: Any,
) -> Any:
    """Turn a function into a `Tool`; usable as `@tool` and as `@tool(requires_confirmation=True, ...)`.

    `requires_confirmation` is a bool, or a rule `(arguments, run_context) -> bool` asked for each call
    (a call it lets through is recorded as approved by the rule; a rule that raises asks). See `Tool`
    for `approvers`, `allow_always` and `approval_timeout`.

    An option of the reference that is not supported here raises DefinitionError naming the file and
    line of the decorator."""
    if unsupported:
        option = next(iter(unsupported))
        raise DefinitionError(f"{caller_location()}: @tool({option}=...) is not supported.")
    location = where = caller_location()
    if user_input_fields and not requires_user_input:
        raise DefinitionError(f"{where}: @tool(user_input_fields=...) needs requires_user_input=True.")
    if requires_user_input and external_execution:
        raise DefinitionError(f"{where}: @tool takes requires_user_input or external_execution, not both.")
    check_approval_options(f"{where}: @tool", approvers, approval_timeout)
    if not isinstance(requires_confirmation, bool) and not callable(requires_confirmation):
        raise DefinitionError(f"{where}: @tool(requires_confirmation=...) must be True, False or a function "
                              f"(arguments, run_context) -> bool, got {requires_confirmation!r}.")
    rule = None if isinstance(requires_confirmation, bool) else requires_confirmation

    def wrap(f: Callable) -> Tool:
        doc = docstring_parser.parse(inspect.getdoc(f) or "")
        model, context_parameter = arguments_model(f, {p.arg_name: p.description or "" for p in doc.params})
        schema = json_schema(model)
        return Tool(
            name=name or f.__name__,
            description=description if description is not None else _doc_description(doc),
            parameters=schema,
            requires_confirmation=rule is not None or requires_confirmation,
            func=f,
            preview=preview,
            editable=editable,
            arguments_model=model,
            context_parameter=context_parameter,
            requires_user_input=requires_user_input,
            user_input_fields=_input_fields(location, schema, user_input_fields),
            external_execution=external_execution,
            confirmation_rule=rule,
            approvers=approvers,
            allow_always=allow_always,
            approval_timeout=approval_timeout,
        )

    if func is not None:
        if not callable(func):
            raise TypeError("tool() takes the function as its only positional argument")
        return wrap(func)
    return wrap


def _input_fields(location: str, schema: dict, fields) -> tuple[str, ...]:
    if isinstance(fields, str):
        fields = [fields]
    unknown = [f for f in fields or () if f not in schema.get("properties", {})]
    if unknown:
        raise DefinitionError(f"{location}: @tool(user_input_fields=...) names {', '.join(map(repr, unknown))}, "
                              f"which the function does not take.")
    return tuple(fields or ())
def check_approval_options(what: str, approvers: str | None, approval_timeout: float | None) -> None:
    """DefinitionError for approval options the app cannot honour (`what` names where they were given)."""
    if approvers not in APPROVERS:
        raise DefinitionError(f'{what}(approvers=...) must be "admin" or None, got {approvers!r}.')
    if approval_timeout is not None and (isinstance(approval_timeout, bool) or not isinstance(
            approval_timeout, (int, float)) or approval_timeout <= 0):
        raise DefinitionError(f"{what}(approval_timeout=...) must be a positive number of seconds, "
                              f"got {approval_timeout!r}.")


def caller_location(depth: int = 2) -> str:
    """`file:line` of the code that called the function calling this one (for definition errors)."""
    frame = sys._getframe(depth)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _doc_description(doc: docstring_parser.Docstring) -> str:
    """The first paragraph of the docstring, on one line (a summary may run over several lines)."""
    text = doc.short_description or ""
    if doc.long_description and not doc.blank_after_short_description:
        text += " " + doc.long_description.split("\n\n", 1)[0]
    return " ".join(text.split())


# -- the arguments' model and its schema ------------------------------------------------------------------

def _is_context(name: str, hint: Any) -> bool:
    if name == CONTEXT_PARAMETER or hint is ToolContext:
        return True
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and args == [ToolContext]


def arguments_model(func: Callable, arg_docs: dict[str, str]) -> tuple[type[pydantic.BaseModel], str | None]:
    """A pydantic model of `func`'s parameters (no extra keys allowed), and the name of the parameter
    that receives the run context, if any."""
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as e:  # noqa: BLE001 - unresolved forward references and the like
        raise TypeError(f"cannot read the type hints of {func.__qualname__}: {e}") from e
    fields: dict[str, Any] = {}
    context_parameter = None
    for pname, param in inspect.signature(func).parameters.items():
        hint = hints.get(pname, inspect.Parameter.empty)
        if _is_context(pname, hint):
            context_parameter = pname
            continue
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"tool {func.__name__}: *{pname} / **{pname} parameters are not supported")
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"tool {func.__name__}: positional-only parameter {pname!r} is not supported")
        if hint is inspect.Parameter.empty:
            raise TypeError(f"tool {func.__name__}: parameter {pname!r} needs a type hint")
        if param.default is None and not _allows_none(hint):
            hint = typing.Optional[hint]  # `x: str = None` means the model may send null too
        doc = " ".join(arg_docs.get(pname, "").split())
        if doc:
            hint = typing.Annotated[hint, pydantic.Field(description=doc)]
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (hint, default)
    try:
        model = pydantic.create_model(f"{func.__name__}_arguments",
                                      __config__=pydantic.ConfigDict(extra="forbid"), **fields)
        model.model_json_schema()
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as e:
        raise TypeError(f"tool {func.__name__}: unsupported type hint: {e}") from None
    return model, context_parameter


def _allows_none(hint: Any) -> bool:
    if hint is Any or hint is None or hint is type(None):
        return True
    if typing.get_origin(hint) is typing.Annotated:
        return _allows_none(typing.get_args(hint)[0])
    return type(None) in typing.get_args(hint)


def json_schema(model: type[pydantic.BaseModel]) -> dict:
    """The model's JSON schema as a model API wants a function's parameters: references inlined,
    titles dropped, no extra properties."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = clean(definitions[node["$ref"].rsplit("/", 1)[-1]])
                return {**target, **{k: clean(v) for k, v in node.items() if k != "$ref"}}
            return {k: clean(v) for k, v in node.items() if k != "title" or not isinstance(v, str)}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    schema = clean(schema)
    schema.setdefault("properties", {})
    schema["required"] = schema.get("required", [])
    schema["additionalProperties"] = False
    return schema


# -- validation messages --------------------------------------------------------------------------------

def _as_object(name: str, arguments: Any) -> dict:
    """The arguments as a dict: JSON text is parsed, nothing means no arguments."""
    if arguments is None:
        return {}
    if isinstance(arguments, (str, bytes, bytearray)):
        text = arguments.decode() if isinstance(arguments, (bytes, bytearray)) else arguments
        if not text.strip():
            return {}
        try:
            arguments = json.loads(text)
        except json.JSONDecodeError as e:
            raise ToolArgumentError(
                f"Invalid arguments for {name}: not valid JSON ({e.msg} at line {e.lineno} "
                f"column {e.colno}). Send the arguments as one JSON object."
            ) from None
    if not isinstance(arguments, dict):
        raise ToolArgumentError(f"Invalid arguments for {name}: expected a JSON object of named arguments, "
                                f"got {_describe_value(arguments)}.")
    return arguments


_PYDANTIC_WORDS = {
    "string_type": "expected a string", "int_type": "expected an integer", "int_parsing": "expected an integer",
    "int_from_float": "expected an integer", "float_type": "expected a number", "float_parsing": "expected a number",
    "bool_type": "expected true or false", "bool_parsing": "expected true or false",
    "list_type": "expected a list", "dict_type": "expected an object", "model_type": "expected an object",
}


def _pydantic_problem(error: dict, allowed: list[str]) -> str:
    where = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "missing":
        return f"missing required argument '{where}'"
    if kind == "extra_forbidden" and len(error["loc"]) == 1:
        hint = f" (allowed: {', '.join(allowed)})" if allowed else " (this tool takes no arguments)"
        return f"unexpected argument '{where}'{hint}"
    message = _PYDANTIC_WORDS.get(kind) or error["msg"][0].lower() + error["msg"][1:]
    return f"{where}: {message}, got {_describe_value(error.get('input'))}"


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


def _json_schema_problems(validator, arguments: dict) -> list[str]:
    """jsonschema's errors in the same plain words as pydantic's (for tools with a foreign schema)."""
    problems: list[str] = []
    for e in sorted(validator.iter_errors(arguments), key=lambda e: (list(map(str, e.path)), e.validator)):
        where = ".".join(str(p) for p in e.absolute_path)
        prefix = f"{where}: " if where else ""
        if e.validator == "required":
            missing = [p for p in e.validator_value if isinstance(e.instance, dict) and p not in e.instance]
            text = "; ".join(f"missing required argument '{p}'" for p in missing)
        elif e.validator == "additionalProperties" and isinstance(e.instance, dict):
            allowed = set(e.schema.get("properties", {}))
            text = "; ".join(f"{prefix}unexpected argument '{k}'" for k in e.instance if k not in allowed)
        elif e.validator == "type":
            wanted = e.validator_value if isinstance(e.validator_value, list) else [e.validator_value]
            text = f"{prefix}expected {' or '.join(_TYPE_WORDS.get(t, t) for t in wanted)}, " \
                   f"got {_describe_value(e.instance)}"
        elif e.validator == "enum":
            options = ", ".join(json.dumps(v, ensure_ascii=False) for v in e.validator_value)
            text = f"{prefix}must be one of {options}, got {_describe_value(e.instance)}"
        else:
            text = f"{prefix}{e.message}"
        if text and text not in problems:
            problems.append(text)
    return problems


def _whole_floats(schema: dict, value: Any) -> Any:
    """Models sometimes send `5.0` for an integer: turn whole-number floats into ints where the
    schema wants an integer (recursively), before strict validation."""
    kinds = {schema.get("type")} if isinstance(schema.get("type"), str) else set(schema.get("type") or ())
    kinds |= {option.get("type") for option in schema.get("anyOf", ()) if isinstance(option, dict)}
    if "integer" in kinds and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict) and "properties" in schema:
        return {k: _whole_floats(schema["properties"].get(k, {}), v) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_whole_floats(schema["items"], v) for v in value]
    return value


def _run_coroutine(coroutine) -> Any:
    """An async tool's result: on a fresh event loop in this greenlet/thread, closed afterwards; beside
    one when the caller already runs a loop here (an async host, Playwright's sync API in tests), where
    asyncio.run refuses."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _to_text(result: Any) -> str:
    if result is None:
        return "Done."
    if isinstance(result, str):
        return result
    if isinstance(result, pydantic.BaseModel):
        return result.model_dump_json()
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(result)
