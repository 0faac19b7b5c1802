"""What the REST API accepts: one pydantic model per request body or query, the same models that
describe them in the OpenAPI document (`app.api.openapi`), and `parse`, which turns a refusal into
an `ApiError` with a readable `detail` (400 for text that is not JSON, 413 for a too long message,
422 for the rest).

Fields the reference sends that we do not use (`user_id` is read by `app.web.auth`; `stream_events`,
`session_state`, ...) are ignored, as the reference ignores what it does not know.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr, ValidationError,
                      WithJsonSchema, field_validator)
from pydantic_core import PydanticCustomError

from app.api.core import MAX_MESSAGE_CHARS, MAX_SESSION_ID, Decision
from app.api.errors import ApiError
from app.jsontext import BadJson, load_json
from app.web.auth import MAX_USER_ID

RUN_STATUSES = ("RUNNING", "PAUSED", "COMPLETED", "CANCELLED", "ERROR")
USER_ID_DOC = "The user the request acts for; runs and sessions belong to it. Absent: `default`."


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _json_text(field: str):
    """A form field holding JSON text (the reference's way): parsed by `load_json`, which also refuses
    NUL characters, lone surrogates and deep nesting."""
    def parse(value):
        if value is None or (isinstance(value, str) and not value.strip()):
            return []
        if not isinstance(value, str):
            return value
        try:
            return load_json(value, field)
        except BadJson as exc:
            raise PydanticCustomError("bad_json_400" if exc.status == 400 else "bad_json", str(exc)) from None
    return BeforeValidator(parse)


def _flag(value):
    """A form's true/false (`true`, `1`, `yes`, `on` and their opposites, any case); empty: the default."""
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise PydanticCustomError("flag", f"must be true or false, not {value!r}")


def _blank_is_none(value):
    return value.strip() or None if isinstance(value, str) else value


Stream = Annotated[bool, BeforeValidator(lambda v: True if isinstance(v, str) and not v.strip() else _flag(v)),
                   Field(description="true (the default): answer `text/event-stream` with the run's events; "
                                     "false: answer the run as JSON once it pauses, completes or fails.")]
SessionId = Annotated[Annotated[str, Field(max_length=MAX_SESSION_ID)] | None, BeforeValidator(_blank_is_none)]
UserId = Annotated[Annotated[str, Field(max_length=MAX_USER_ID)] | None, Field(description=USER_ID_DOC)]


# --- runs -------------------------------------------------------------------------------------------

class RunForm(Request):
    """POST /agents/{agent_id}/runs."""
    message: Annotated[str, Field(min_length=1, max_length=MAX_MESSAGE_CHARS, description="What the person says.")]
    stream: Stream = True
    session_id: SessionId = Field(None, description="The session to continue; absent: a new one. A name the "
                                                    "client chooses makes a session of that name.")
    user_id: UserId = None

    @field_validator("message", mode="before")
    @classmethod
    def _message(cls, value):
        text = value.strip() if isinstance(value, str) else value
        if isinstance(text, str) and len(text) > MAX_MESSAGE_CHARS:
            raise PydanticCustomError("too_large", f"is too long ({len(text):,} characters; the limit is "
                                                   f"{MAX_MESSAGE_CHARS:,})")
        return text


class ToolDecision(BaseModel):
    """One entry of the continue's `tools`: a tool object as the reference sends it. Only what a
    decision needs is read; a whole tool object echoed back from a paused run is fine (the rest is
    ignored)."""
    model_config = ConfigDict(extra="ignore")

    tool_call_id: StrictStr = Field(min_length=1, description="The id of the call, as the run lists it.")
    tool_name: StrictStr | None = Field(None, description="Must be the call's tool (the server's copy is the truth).")
    tool_args: dict[str, Any] | None = Field(None, description="Different arguments are an edit, which only "
                                                               "tools that allow editing accept.")
    confirmed: StrictBool | None = Field(None, description="true runs the call as stored, false rejects it, "
                                                            "null leaves it pending.")
    confirmation_note: StrictStr | None = Field(None, description="Why it was rejected (said to the model).")
    requires_user_input: Any = None
    user_input_schema: list[Any] | None = Field(None, description="With `requires_user_input`: fields with "
                                                                  "`name` and `value`.")
    external_execution_required: Any = None
    result: Any = Field(None, description="With `external_execution_required`: the call's result, as the "
                                          "person got it (text, or JSON sent as text); the model reads it.")

    def decision(self) -> Decision:
        user_input = None
        if self.requires_user_input is True:
            fields = self.user_input_schema or []
            if not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in fields):
                raise PydanticCustomError("user_input", "must list fields with a name and a value")
            user_input = {f["name"]: f.get("value") for f in fields}
        external = None
        if self.external_execution_required is True and self.result is not None:
            external = self.result if isinstance(self.result, str) else json.dumps(self.result)
        return Decision(call_id=self.tool_call_id, tool_name=self.tool_name, arguments=self.tool_args,
                        confirmed=self.confirmed, note=self.confirmation_note, user_input=user_input,
                        external_result=external)


class ContinueForm(Request):
    """POST /agents/{agent_id}/runs/{run_id}/continue."""
    tools: Annotated[list[ToolDecision], _json_text("tools"), WithJsonSchema({
        "type": "string", "contentMediaType": "application/json",  # its contentSchema: app.api.openapi
        "description": "A JSON list of tool objects (ToolDecision); calls left out stay pending."})] = []
    stream: Stream = True
    session_id: SessionId = Field(None, description="Only if the run is in this session (else 404).")
    user_id: UserId = None

    def decisions(self) -> list[Decision]:
        decisions = []
        for index, tool in enumerate(self.tools):
            try:
                decisions.append(tool.decision())
            except PydanticCustomError as exc:
                raise ApiError(f"tools[{index}].user_input_schema {exc.message()}.") from None
        return decisions


class CancelForm(Request):
    """POST /agents/{agent_id}/runs/{run_id}/cancel."""
    session_id: SessionId = Field(None, description="Only if the run is in this session (else 404).")
    user_id: UserId = None


def _upper(value):
    return value.strip().upper() or None if isinstance(value, str) else value


class RunsQuery(Request):
    """GET /agents/{agent_id}/runs and /sessions/{session_id}/runs."""
    status: Annotated[Literal[RUN_STATUSES] | None, BeforeValidator(_upper)] = Field(
        None, description="Only runs in this state (any case).")
    session_id: SessionId = Field(None, description="Only the runs of this session.")
    user_id: UserId = None


class SessionsQuery(Request):
    """GET /sessions."""
    page: int = Field(1, ge=1, le=100_000, description="1 for the first page.")
    limit: int = Field(20, ge=1, le=100, description="Sessions per page.")
    sort_by: Literal["created_at", "updated_at"] = "created_at"
    sort_order: Annotated[Literal["asc", "desc"], BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)] \
        = "desc"
    type: Literal["agent", "team", "workflow"] = Field("agent", description="Only `agent` sessions exist.")
    user_id: UserId = None

    @field_validator("page", "limit", "sort_by", "sort_order", "type", mode="before")
    @classmethod
    def _blank_is_default(cls, value, info):
        return cls.model_fields[info.field_name].default if value == "" else value


class UserQuery(Request):
    """The query of GET/DELETE /sessions/{session_id} and GET /agents/{agent_id}/runs/{run_id}."""
    session_id: SessionId = Field(None, description="Only if the run is in this session (else 404).")
    user_id: UserId = None


class RenameBody(Request):
    """POST /sessions/{session_id}/rename, as JSON or a form."""
    session_name: StrictStr = Field(min_length=1, description="The new name (whitespace is collapsed).")
    user_id: UserId = None

    @field_validator("session_name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("missing", "Field required")
        return value


# --- parsing ----------------------------------------------------------------------------------------

STATUS_OF = {"too_large": 413, "bad_json_400": 400}


def parse(model: type[Request], values) -> Request:
    """`values` (a form or query as a dict, or a JSON body) as `model`, else ApiError."""
    if not isinstance(values, dict):
        raise ApiError(f"The body must be a JSON object, not {kind(values)}.")
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise ApiError(describe(error), STATUS_OF.get(error["type"], 422)) from None


def describe(error: dict) -> str:
    """One pydantic error as a sentence naming the field as the client wrote it (`tools[0].confirmed`)."""
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    value, kind_of = error.get("input"), error["type"]
    if kind_of == "missing":
        return f"{where} is required."
    if kind_of in ("bad_json", "bad_json_400"):
        return error["msg"]
    if kind_of in ("model_type", "model_attributes_type", "dict_type", "list_type", "string_type", "bool_type"):
        expected = {"model_type": "a tool object", "model_attributes_type": "a tool object", "dict_type": "an object",
                    "list_type": "a list", "string_type": "a string", "bool_type": "true, false or null"}[kind_of]
        if where == "tools":
            expected = "a JSON list of tool objects"
        return f"{where} must be {expected}, not {kind(value)}."
    if kind_of == "literal_error":
        return f"{where} must be one of {error['ctx']['expected']}, not {value!r}."
    if kind_of in ("int_parsing", "int_type", "int_from_float"):
        return f"{where} must be a whole number, not {value!r}."
    if kind_of == "greater_than_equal":
        return f"{where} must be at least {error['ctx']['ge']}."
    if kind_of == "less_than_equal":
        return f"{where} must be at most {error['ctx']['le']}."
    if kind_of == "string_too_short":
        return f"{where} is required." if not value else f"{where} is too short."
    if kind_of == "string_too_long":
        return f"{where} is too long (at most {error['ctx']['max_length']:,} characters)."
    return f"{where} {error['msg'][0].lower()}{error['msg'][1:]}."


def kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)
