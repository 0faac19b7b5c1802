"""What the REST API answers, as pydantic models: the OpenAPI document's response schemas are made
from them (`app.api.openapi`), and the tests check every answer against that document.

The answers themselves are built as plain dicts by `app.api.serialize` (the hot path: a model per
answer would cost CPU for nothing); `extra="forbid"` makes the document list every field, so an
answer with a field these models do not know fails the contract tests. Field order is the
reference's (captures in ../shared/research/agno-anchor-captures/).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RUN_STATUS = Literal["RUNNING", "PAUSED", "COMPLETED", "CANCELLED", "ERROR"]
EVENT_NAMES = ("RunStarted", "ModelRequestStarted", "RunContent", "ModelRequestCompleted", "ToolCallStarted",
               "ToolCallCompleted", "RunContentCompleted", "RunPaused", "RunContinued", "RunCompleted", "RunError",
               "RunCancelled")


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(Answer):
    detail: str = Field(description="What went wrong, for a person to read.")


class Accepted(Answer):
    """The command was committed, but the run could not be read back just then: poll the run."""
    run_id: str
    status: str | None = None
    detail: str


class UserInputField(Answer):
    """A field a call asks the person for (the reference's UserInputField); `value` once answered."""
    name: str
    field_type: str = Field(description="The Python type's name: str, int, float, bool, list or dict.")
    description: str | None
    value: Any


class Tool(Answer):
    """A tool call, as the reference's ToolExecution. `requires_confirmation` is true while a confirmation
    waits for a decision; `confirmed` is null until a person decides. A call asking for input has
    `requires_user_input` and its `user_input_schema`; one the person runs themselves has
    `external_execution_required` (send its `result` back). `preview` (what the call would do) is ours."""
    tool_call_id: str
    tool_name: str
    tool_args: dict[str, Any]
    tool_call_error: bool | None
    result: str | None
    metrics: dict[str, Any] | None
    child_run_id: str | None
    stop_after_tool_call: bool
    created_at: int
    requires_confirmation: bool | None
    confirmed: bool | None
    confirmation_note: str | None
    requires_user_input: bool | None
    user_input_schema: list[UserInputField] | None
    user_feedback_schema: list[Any] | None
    answered: bool | None
    external_execution_required: bool | None
    external_execution_silent: bool | None
    approval_type: str | None
    approval_id: str | None
    parent_tool_call_id: str | None
    preview: str | None = Field(description="What the call would do (pending calls only).")
    expires_at: int | None = Field(description="When a pending call's approval expires (Unix seconds); an "
                                   "expired call is never executed.")
    approvers: str | None = Field(description='"admin": only an admin may decide this call; null: its owner too.')
    decided_by: str | None = Field(description="How it was decided: user, auto (needs no confirmation), rule "
                                   "(the tool's rule let it through), grant (an \"Always allow\"), expired.")


class FunctionCall(Answer):
    name: str
    arguments: str | None


class ToolCallRef(Answer):
    id: str
    call_id: str
    type: Literal["function"]
    function: FunctionCall


class Message(Answer):
    """A message of the run: the system prompt, the person's, the model's (with the calls it proposed)
    and each settled call's output (`role` tool)."""
    id: str
    content: str | None
    from_history: bool
    stop_after_tool_call: bool
    role: Literal["system", "user", "assistant", "tool"]
    created_at: int | None
    tool_calls: list[ToolCallRef] | None = None
    provider_data: dict[str, Any] | None = None
    tool_call_id: str | None = None
    tool_name: str | None = None
    tool_args: dict[str, Any] | None = None
    tool_call_error: bool | None = None


class Requirement(Answer):
    """A call the paused run waits on (the reference's RunRequirement)."""
    id: str
    created_at: str | None
    tool_execution: Tool


class RunInput(Answer):
    input_content: str


class Run(Answer):
    run_id: str
    agent_id: str
    agent_name: str
    session_id: str
    user_id: str | None
    content: str | None
    content_type: Literal["str"]
    model: str | None
    model_provider: str
    session_state: dict[str, Any]
    created_at: int
    status: RUN_STATUS
    metrics: dict[str, Any] = Field(description="Empty: tokens are not counted.")
    events: list[dict[str, Any]] = Field(description="The RunError event of a failed run; else empty.")
    messages: list[Message]
    tools: list[Tool]
    requirements: list[Requirement]
    input: RunInput


class RunWithDetail(Run):
    """The run as it is now, and why the request was refused (or why the run failed)."""
    detail: str


class EventData(BaseModel):
    """The JSON of one stream event; which fields beyond the first seven it has depends on `event`."""
    created_at: int
    event: str
    agent_id: str
    agent_name: str
    run_id: str
    session_id: str
    nested_depth: int
    content: str | None = None
    tool: Tool | None = None
    tools: list[Tool] | None = None
    requirements: list[Requirement] | None = None


class RunEvent(BaseModel):
    """One server-sent event (`event: <name>`, `data: <json>`). The stream ends with RunPaused (its
    `requirements` are the calls waiting for a decision), RunCompleted, RunError or RunCancelled."""
    event: Literal[EVENT_NAMES]
    data: str = Field(json_schema_extra={"contentMediaType": "application/json",
                                         "contentSchema": {"$ref": "#/components/schemas/EventData"}})


class Session(Answer):
    session_id: str = Field(description="The `session_id` the client chose, or ours.")
    session_name: str
    session_state: dict[str, Any]
    created_at: str | None
    updated_at: str | None
    session_type: Literal["agent"]
    user_id: str | None
    agent_id: str
    metrics: dict[str, Any]


class AgentRef(Answer):
    agent_id: str
    name: str


class ChatEntry(Answer):
    role: str
    content: str | None
    created_at: int | None


class SessionDetail(Session):
    agent_session_id: str
    session_summary: dict[str, Any] | None
    agent_data: AgentRef
    chat_history: list[ChatEntry]


class PageMeta(Answer):
    page: int
    limit: int
    total_pages: int
    total_count: int


class SessionPage(Answer):
    data: list[Session]
    meta: PageMeta


class AgentModel(Answer):
    name: str
    model: str
    provider: str


class AgentTool(Answer):
    """A tool as the model sees it, whether it needs confirmation, and where it comes from."""
    name: str
    description: str | None
    parameters: dict[str, Any] = Field(description="The arguments' JSON schema.")
    requires_confirmation: bool
    source: Literal["python", "mcp"]
    destructive: bool | None = Field(None, description="MCP tools: whether the server calls it destructive.")


class AgentTools(Answer):
    tools: list[AgentTool]


class McpServer(Answer):
    name: str
    tools: list[str] = Field(description="The tools it listed.")
    error: str | None = Field(description="Why the server cannot be reached, or null.")


class Agent(Answer):
    id: str
    agent_id: str
    name: str
    description: str | None
    instructions: str | None
    model: AgentModel
    tools: AgentTools
    mcp_servers: list[McpServer]


class Health(Answer):
    status: Literal["ok"]
    instantiated_at: str


class Ready(Answer):
    status: Literal["ready"]
