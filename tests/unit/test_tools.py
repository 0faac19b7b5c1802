"""app.agent.tools: schemas from hints and docstrings (pydantic + docstring-parser), validation
messages, running."""
from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Literal, Optional

import pytest
import sqlalchemy as sa
from pydantic import Field

from app.agent.tools import Tool, ToolArgumentError, ToolContext, ToolError, tool


class Opaque:
    """A type pydantic cannot describe."""


class Priority(Enum):
    LOW = "low"
    HIGH = "high"


@pytest.fixture
def ctx():
    engine = sa.create_engine("sqlite://")
    yield ToolContext(workspace=engine, owner_id=1, run_id="run-1")
    engine.dispose()


@tool(requires_confirmation=True)
def sample(ctx: ToolContext, table_name: str, count: int, ratio: float = 0.5, dry_run: bool = False,
           tags: list[str] | None = None, mode: Literal["fast", "safe"] = "safe",
           note: Optional[str] = None, extra: dict = None) -> dict:  # noqa: RUF013 - `= None` is part of the test
    """Do something with a table
    described over two lines.

    This second paragraph is for humans only.

    Args:
        table_name (str): Which table
            to use.
        count: How many rows.
        ratio (float, optional): A ratio.

    Returns:
        dict: what happened.
    """
    return {"table": table_name, "count": count, "owner": ctx.owner_id}


def test_description_is_the_first_paragraph_only():
    assert sample.name == "sample"
    assert sample.description == "Do something with a table described over two lines."
    assert sample.requires_confirmation is True


def test_schema_from_type_hints_and_args_section():
    params = sample.parameters
    assert params["type"] == "object"
    assert params["additionalProperties"] is False
    assert params["required"] == ["table_name", "count"]
    props = params["properties"]
    assert list(props) == ["table_name", "count", "ratio", "dry_run", "tags", "mode", "note", "extra"]
    assert props["table_name"] == {"description": "Which table to use.", "type": "string"}
    assert props["count"] == {"description": "How many rows.", "type": "integer"}
    assert props["ratio"] == {"description": "A ratio.", "type": "number", "default": 0.5}
    assert props["dry_run"] == {"type": "boolean", "default": False}
    assert props["tags"] == {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                             "default": None}
    assert props["mode"] == {"type": "string", "enum": ["fast", "safe"], "default": "safe"}
    assert props["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert props["extra"] == {"anyOf": [{"type": "object", "additionalProperties": True}, {"type": "null"}],
                              "default": None}  # `= None` allows null


def test_tool_context_parameter_is_not_in_the_schema():
    assert "ctx" not in sample.parameters["properties"]
    assert "ctx" not in sample.parameters["required"]

    @tool
    def later(limit: int, context: ToolContext | None = None) -> str:
        """Context may sit anywhere and have any name."""
        return f"{limit} {context.run_id}"

    assert list(later.parameters["properties"]) == ["limit"]


def test_tool_decorator_forms():
    @tool
    def plain() -> str:
        """Plain."""
        return "ok"

    @tool()
    def called() -> str:
        """Called."""
        return "ok"

    @tool(requires_confirmation=True, name="renamed")
    def original(x: int) -> str:
        """Renamed."""
        return str(x)

    assert isinstance(plain, Tool) and isinstance(called, Tool)
    assert plain.requires_confirmation is False and called.requires_confirmation is False
    assert plain.parameters == {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    assert original.name == "renamed" and original.requires_confirmation is True
    assert original(3) == "3"  # a Tool can still be called like the function


def test_openai_function_shape_and_copy():
    spec = sample.openai_function()
    assert set(spec) == {"name", "description", "parameters"}
    assert spec["name"] == "sample"
    spec["parameters"]["properties"].clear()
    assert sample.parameters["properties"]  # the tool's own schema is untouched
    json.dumps(sample.openai_function())  # plain JSON


def test_validate_accepts_a_json_string_and_returns_a_copy():
    args = {"table_name": "users", "count": 3}
    assert sample.validate(json.dumps(args)) == args
    validated = sample.validate(args)
    assert validated == args and validated is not args


def test_validate_lists_every_problem_in_plain_words():
    with pytest.raises(ToolArgumentError) as info:
        sample.validate({"count": "five", "colour": "red", "mode": "reckless"})
    message = str(info.value)
    assert message.startswith("Invalid arguments for sample: ")
    assert "missing required argument 'table_name'" in message
    assert "unexpected argument 'colour'" in message
    assert 'count: expected an integer, got "five" (a string)' in message
    assert "mode: input should be 'fast' or 'safe', got \"reckless\" (a string)" in message
    assert len(info.value.problems) == 4
    assert "$" not in message and "Failed validating" not in message  # no jsonschema internals


def test_booleans_are_not_integers():
    with pytest.raises(ToolArgumentError, match=r"count: expected an integer, got true \(a boolean\)"):
        sample.validate({"table_name": "users", "count": True})


def test_fractional_numbers_are_not_integers_but_whole_floats_become_ints():
    with pytest.raises(ToolArgumentError, match="count: expected an integer, got 2.5"):
        sample.validate({"table_name": "users", "count": 2.5})
    validated = sample.validate({"table_name": "users", "count": 2.0})
    assert validated["count"] == 2 and type(validated["count"]) is int


def test_null_only_where_optional():
    assert sample.validate({"table_name": "u", "count": 1, "note": None, "tags": None})["note"] is None
    with pytest.raises(ToolArgumentError, match="table_name: expected a string, got null"):
        sample.validate({"table_name": None, "count": 1})


def test_bad_json_and_non_objects_are_argument_errors():
    with pytest.raises(ToolArgumentError, match="not valid JSON"):
        sample.validate('{"table_name": "users", count: 3}')
    with pytest.raises(ToolArgumentError, match="expected a JSON object"):
        sample.validate("[1, 2]")
    with pytest.raises(ToolArgumentError, match="expected a JSON object"):
        sample.validate(42)  # type: ignore[arg-type]


def test_empty_arguments_mean_no_arguments():
    @tool
    def nothing() -> str:
        """Takes nothing."""
        return "ok"

    assert nothing.validate("") == {} and nothing.validate(None) == {}
    with pytest.raises(ToolArgumentError, match="missing required argument 'table_name'"):
        sample.validate("")
    with pytest.raises(ToolArgumentError, match="this tool takes no arguments"):
        nothing.validate({"x": 1})


def test_run_injects_context_and_stringifies(ctx):
    assert json.loads(sample.run(ctx, '{"table_name": "users", "count": 2}')) == {
        "table": "users", "count": 2, "owner": 1}

    @tool
    def text(context: ToolContext) -> str:
        """Returns text."""
        return f"run {context.run_id}"

    @tool
    def number() -> int:
        """Returns a number."""
        return 7

    @tool
    def nothing() -> None:
        """Returns nothing."""

    assert text.run(ctx, {}) == "run run-1"
    assert number.run(ctx, {}) == "7"
    assert nothing.run(ctx, {}) == "Done."


def test_run_validates_first(ctx):
    calls = []

    @tool
    def spy(n: int) -> str:
        """Spy."""
        calls.append(n)
        return "ok"

    with pytest.raises(ToolArgumentError):
        spy.run(ctx, {"n": "1"})
    assert calls == []


def test_tool_errors_propagate(ctx):
    @tool
    def refuses(n: int) -> str:
        """Refuses."""
        raise ToolError("n is too big")

    with pytest.raises(ToolError, match="n is too big"):
        refuses.run(ctx, {"n": 1})


def test_more_hints():
    @tool
    def hints(a: list[int], b: dict[str, int], c: int | str, d: Literal[1, 2, None], e: list) -> str:
        """Hints."""
        return ""

    props = hints.parameters["properties"]
    assert props["a"] == {"type": "array", "items": {"type": "integer"}}
    assert props["b"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert props["c"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert props["d"] == {"enum": [1, 2, None]}
    assert props["e"] == {"type": "array", "items": {}}
    with pytest.raises(ToolArgumentError, match=r"a.1: expected an integer"):
        hints.validate({"a": [1, "x"], "b": {}, "c": 1, "d": None, "e": []})


def test_unsupported_signatures_fail_at_definition_time():
    with pytest.raises(TypeError, match="needs a type hint"):
        @tool
        def no_hint(x) -> str:  # noqa: ANN001
            """No hint."""
            return ""

    with pytest.raises(TypeError, match="not supported"):
        @tool
        def star(*args: int) -> str:
            """Star."""
            return ""

    with pytest.raises(TypeError, match="unsupported type hint"):
        @tool
        def odd(x: Opaque) -> str:
            """Odd."""
            return ""


def test_preview_hook(ctx):
    def preview(context: ToolContext, arguments: dict) -> str | None:
        return f"Would use {arguments['table_name']} for owner {context.owner_id}."

    @tool(requires_confirmation=True, preview=preview)
    def with_preview(table_name: str) -> str:
        """Has a preview."""
        return "ok"

    assert with_preview.preview is preview
    assert with_preview.preview(ctx, with_preview.validate({"table_name": "users"})) == "Would use users for owner 1."
    assert sample.preview is None


def test_constraints_enums_and_literals_reach_the_schema_and_are_enforced():
    seen = []

    @tool(requires_confirmation=True)
    def remove(table_name: Literal["users", "orders"], count: Annotated[int, Field(ge=1, le=10_000)],
               priority: Priority = Priority.LOW) -> str:
        """Remove rows.

        Args:
            table_name: Name of the table
            count: Number of records to delete
            priority: How urgent.
        """
        seen.append((table_name, count, priority))
        return "ok"

    props = remove.parameters["properties"]
    assert props["table_name"] == {"description": "Name of the table", "type": "string", "enum": ["users", "orders"]}
    assert (props["count"]["minimum"], props["count"]["maximum"]) == (1, 10_000)
    assert props["priority"]["enum"] == ["low", "high"]
    with pytest.raises(ToolArgumentError, match="count: input should be less than or equal to 10000"):
        remove.validate({"table_name": "users", "count": 10**12})
    with pytest.raises(ToolArgumentError, match="table_name: input should be 'users' or 'orders'"):
        remove.validate({"table_name": "users; DROP TABLE users;--", "count": 1})
    assert remove.validate({"table_name": "users", "count": 2, "priority": "high"}) == \
        {"table_name": "users", "count": 2, "priority": "high"}, "stored as JSON"
    remove.run(ToolContext(), {"table_name": "users", "count": 2, "priority": "high"})
    assert seen == [("users", 2, Priority.HIGH)], "the function gets Python values"


def test_run_context_is_injected_by_name_and_hidden(ctx):
    @tool
    def whoami(run_context, greeting: str = "hi") -> dict:
        """Who runs me."""
        return {"greeting": greeting, "account": run_context.account_id, "run": run_context.run_id}

    assert list(whoami.parameters["properties"]) == ["greeting"]
    assert json.loads(whoami.run(ctx, {})) == {"greeting": "hi", "account": 1, "run": "run-1"}


def test_async_tools_run(ctx):
    @tool
    async def later(n: int) -> list[int]:
        """Async."""
        return [n, n]

    assert later.run(ctx, {"n": 3}) == "[3, 3]"


def test_an_unknown_option_is_a_definition_error_naming_the_line():
    from app.agent.tools import DefinitionError

    with pytest.raises(DefinitionError, match=r"test_tools.py:\d+: @tool\(stop_after_tool_call=...\) is not supported"):
        tool(stop_after_tool_call=True)
    with pytest.raises(DefinitionError, match=r"test_tools.py:\d+: @tool\(user_input_fields=...\) needs "):
        tool(user_input_fields=["count"])


def test_user_input_fields_are_left_out_of_the_models_schema_and_checked_when_merged():
    from app.agent.tools import DefinitionError

    @tool(requires_user_input=True, user_input_fields=["count"])
    def trim(table: str, count: int) -> str:
        """Trim a table."""
        return f"{table}:{count}"

    assert trim.kind == "input" and trim.pauses and trim.input_fields == ("count",)
    assert set(trim.openai_function()["parameters"]["properties"]) == {"table"}
    assert trim.validate_proposal({"table": "users", "count": 3}) == {"table": "users"}
    with pytest.raises(ToolArgumentError, match="missing required argument 'table'"):
        trim.validate_proposal({})
    with pytest.raises(ToolArgumentError, match="missing required argument 'count'"):
        trim.validate({"table": "users"})
    with pytest.raises(DefinitionError, match="names 'nope', which the function does not take"):
        @tool(requires_user_input=True, user_input_fields=["nope"])
        def typo(table: str) -> str:
            return table


def test_tools_are_hashable():
    assert len({sample, sample}) == 1


def test_approval_options_the_app_cannot_honour_are_a_definition_error_naming_the_line():
    from app.agent.tools import DefinitionError

    for options, said in (({"approvers": "root"}, 'approvers=...\\) must be "admin"'),
                          ({"approval_timeout": 0}, r"approval_timeout=...\) must be a positive"),
                          ({"approval_timeout": True}, r"approval_timeout=...\) must be a positive"),
                          ({"requires_confirmation": "yes"}, r"requires_confirmation=...\) must be True")):
        with pytest.raises(DefinitionError, match=rf"test_tools.py:\d+: @tool\({said}"):
            tool(**options)


def test_a_confirmation_rule_asks_when_it_says_so_or_raises():
    from app.agent.rules import needs_confirmation

    @tool(requires_confirmation=lambda arguments, run_context: arguments["n"] > 1)
    def ruled(n: int) -> str:
        """Ruled."""
        return "ran"

    @tool(requires_confirmation=lambda arguments, run_context: 1 / 0)
    def broken(n: int) -> str:
        """Broken."""
        return "ran"

    assert ruled.requires_confirmation and (ruled.approvers, ruled.allow_always) == (None, True)
    assert [needs_confirmation(ruled, {"n": n}, ToolContext()) for n in (1, 2)] == [False, True]
    assert needs_confirmation(broken, {"n": 1}, ToolContext()) is True
    assert needs_confirmation(sample, {}, ToolContext()) is sample.requires_confirmation
