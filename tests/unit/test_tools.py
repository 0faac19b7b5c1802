"""app.agent.tools: schemas from hints and docstrings, validation messages, running."""
from __future__ import annotations

import json
from typing import Literal, Optional

import pytest
import sqlalchemy as sa

from app.agent.tools import Tool, ToolArgumentError, ToolContext, ToolError, tool


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
    assert props["tags"] == {"type": ["array", "null"], "items": {"type": "string"}, "default": None}
    assert props["mode"] == {"type": "string", "enum": ["fast", "safe"], "default": "safe"}
    assert props["note"] == {"type": ["string", "null"], "default": None}
    assert props["extra"] == {"type": ["object", "null"], "default": None}  # `= None` allows null


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
    assert 'mode: must be one of "fast", "safe"' in message
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
    assert props["d"] == {"type": ["integer", "null"], "enum": [1, 2, None]}
    assert props["e"] == {"type": "array"}
    with pytest.raises(ToolArgumentError, match=r"a\[1\]: expected an integer"):
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
        def odd(x: set[int]) -> str:
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
    assert with_preview.describe_call(ctx, {"table_name": "users"}) == "Would use users for owner 1."
    assert with_preview.describe_call(ctx, {"wrong": 1}) is None  # invalid arguments: no preview, no error
    assert sample.preview is None and sample.describe_call(ctx, {"table_name": "u", "count": 1}) is None


def test_tools_are_hashable():
    assert len({sample, sample}) == 1
