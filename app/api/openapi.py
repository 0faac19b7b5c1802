"""The OpenAPI 3.1 document of the REST API, built by hand (no framework): `spec()`.

It is served at /openapi.json, rendered as the /docs page, validated in the tests, and used by
schemathesis to fuzz the API. Keep it in step with `app.web.api`.
"""
from __future__ import annotations

import copy
from functools import cache

from app.agent.commands import MAX_MESSAGE_CHARS

NULLABLE_STRING = {"type": ["string", "null"]}
RUN_STATUSES = ["RUNNING", "PAUSED", "COMPLETED", "CANCELLED", "ERROR"]
EVENT_NAMES = ["RunStarted", "ModelRequestStarted", "RunContent", "ModelRequestCompleted", "ToolCallStarted",
               "ToolCallCompleted", "RunContentCompleted", "RunPaused", "RunContinued", "RunCompleted", "RunError",
               "RunCancelled"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


def _form(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "properties": properties, **({"required": required} if required else {})}
    return {"required": bool(required), "content": {
        "multipart/form-data": {"schema": schema},
        "application/x-www-form-urlencoded": {"schema": schema}}}


def _param(name: str, where: str, description: str, schema: dict | None = None, required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required or where == "path", "description": description,
            "schema": schema or {"type": "string"}}


USER_ID = {"type": "string", "maxLength": 255,
           "description": "The user the request acts for; runs and sessions belong to it. Absent: `default`."}
SESSION_ID = {"type": "string", "maxLength": 200}
STREAM = {"type": "boolean", "default": True,
          "description": "true (the default): answer `text/event-stream` with the run's events; "
                         "false: answer the run as JSON once it pauses, completes or fails."}

AGENT_ID = _param("agent_id", "path", "The agent, e.g. `data_manager`.")
RUN_ID = _param("run_id", "path", "The run.")
SESSION_PATH = _param("session_id", "path", "The session: the `session_id` the client chose, or ours.")
USER_QUERY = _param("user_id", "query", "The user the request acts for (absent: `default`).", USER_ID)
SESSION_QUERY = _param("session_id", "query", "Only if the run is in this session (else 404).", SESSION_ID)
STATUS_QUERY = _param("status", "query", "Only runs in this state.", {"type": "string", "enum": RUN_STATUSES})

RUN_ANSWERS = {
    "200": {"description": "The run's events (`stream=true`), or the run once it paused, completed or was "
                           "cancelled (`stream=false`).",
            "content": {"application/json": {"schema": _ref("Run")},
                        "text/event-stream": {"schema": _ref("RunEvent")}}},
    "202": {"description": "`stream=false`: still running when the wait ran out; poll the run. Or the run was "
                           "started/decided but could not be read back (the database went away just then): "
                           "`run_id` and a `detail`; poll the run.",
            "content": {"application/json": {"schema": {"anyOf": [_ref("Run"), _ref("Accepted")]}}}},
    "401": _error("No valid key."),
    "404": _error("No such agent or run (for this user_id)."),
    "413": _error("The message or the request is too large."),
    "422": _error("A form field is missing or malformed."),
    "429": _error("A per-account limit was reached (messages or actions per minute, runs at once, open "
                  "streams); `Retry-After` says when to try again."),
    "502": _json(_ref("RunWithDetail"), "`stream=false`: the model failed; the run is `ERROR`. Sending the "
                                        "same continue again retries it."),
}

SCHEMAS = {
    "Error": {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
    "Accepted": {"type": "object", "required": ["run_id", "detail"],
                 "description": "The command was committed, but the run could not be read back just then.",
                 "properties": {"run_id": {"type": "string"}, "status": {"type": "string"},
                                "detail": {"type": "string"}}},
    "Tool": {
        "type": "object",
        "description": "A tool call, as the reference's ToolExecution. `requires_confirmation` is true while it "
                       "waits for a decision; `confirmed` is null until a person decides.",
        "required": ["tool_call_id", "tool_name", "tool_args", "requires_confirmation", "confirmed",
                     "confirmation_note", "requires_user_input", "user_input_schema",
                     "external_execution_required", "result", "tool_call_error", "created_at"],
        "properties": {
            "tool_call_id": {"type": "string"}, "tool_name": {"type": "string"},
            "tool_args": {"type": "object"}, "tool_call_error": {"type": ["boolean", "null"]},
            "result": NULLABLE_STRING, "created_at": {"type": "integer"},
            "requires_confirmation": {"type": ["boolean", "null"]}, "confirmed": {"type": ["boolean", "null"]},
            "confirmation_note": NULLABLE_STRING, "requires_user_input": {"type": ["boolean", "null"]},
            "user_input_schema": {"type": ["array", "null"]},
            "external_execution_required": {"type": ["boolean", "null"]},
            "preview": {**NULLABLE_STRING, "description": "What the call would do (ours; pending calls)."},
        },
    },
    "Message": {"type": "object", "required": ["id", "role", "created_at"], "properties": {
        "id": {"type": "string"}, "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
        "content": {"type": "string"}, "created_at": {"type": "integer"},
        "tool_calls": {"type": "array", "items": {"type": "object"}}, "tool_call_id": {"type": "string"}}},
    "Run": {
        "type": "object",
        "required": ["run_id", "agent_id", "agent_name", "session_id", "user_id", "content", "status",
                     "messages", "tools", "created_at", "metrics"],
        "properties": {
            "run_id": {"type": "string"}, "agent_id": {"type": "string"}, "agent_name": {"type": "string"},
            "session_id": {"type": "string"}, "user_id": NULLABLE_STRING, "content": {"type": "string"},
            "status": {"type": "string", "enum": RUN_STATUSES}, "created_at": {"type": "integer"},
            "model": NULLABLE_STRING, "metrics": {"type": "object"},
            "messages": {"type": "array", "items": _ref("Message")},
            "tools": {"type": "array", "items": _ref("Tool")},
            "requirements": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string"}, "created_at": {"type": "string"}, "tool_execution": _ref("Tool")}}},
            "events": {"type": "array", "items": {"type": "object"}},
        },
    },
    "RunEvent": {
        "type": "object",
        "description": "One server-sent event (`event: <name>`, `data: <json>`). The stream ends with RunPaused "
                       "(its `tools` are the calls waiting for a decision), RunCompleted, RunError or RunCancelled.",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": EVENT_NAMES},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {
                "type": "object", "required": ["event", "created_at", "agent_id", "run_id", "session_id"],
                "properties": {"event": {"type": "string"}, "content": {"type": "string"},
                               "tool": _ref("Tool"), "tools": {"type": "array", "items": _ref("Tool")}}}},
        },
    },
    "RunWithDetail": {"allOf": [_ref("Run"), {"type": "object", "required": ["detail"],
                                              "properties": {"detail": {"type": "string"}}}]},
    "Session": {"type": "object", "required": ["session_id", "session_name", "created_at", "updated_at"],
                "properties": {"session_id": {"type": "string"}, "session_name": {"type": "string"},
                               "session_type": {"type": "string"}, "user_id": NULLABLE_STRING,
                               "agent_id": {"type": "string"}, "created_at": {"type": "string"},
                               "updated_at": {"type": "string"}}},
    "SessionDetail": {"allOf": [_ref("Session"), {"type": "object", "properties": {
        "chat_history": {"type": "array", "items": {"type": "object"}}}}]},
    "SessionPage": {"type": "object", "required": ["data", "meta"], "properties": {
        "data": {"type": "array", "items": _ref("Session")},
        "meta": {"type": "object", "properties": {
            "page": {"type": "integer"}, "limit": {"type": "integer"}, "total_pages": {"type": "integer"},
            "total_count": {"type": "integer"}}}}},
    "Agent": {"type": "object", "required": ["id", "name"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
        "model": {"type": "object"},
        "tools": {"type": "object", "description": "`tools`: each tool's `name`, `description`, `parameters` (JSON "
                  "schema), `requires_confirmation`, `source` (`python` or `mcp`) and, for MCP tools, `destructive`."},
        "mcp_servers": {"type": "array", "description": "The agent's MCP servers: `name`, the `tools` listed, and "
                        "`error` (why the server cannot be reached, or null).", "items": {"type": "object"}}}},
}


def _paths() -> dict:
    run_ops = [AGENT_ID, RUN_ID]
    return {
        "/agents/{agent_id}/runs": {
            "post": {
                "operationId": "create_run", "tags": ["Runs"], "summary": "Start a run",
                "description": "Send a message; a new session is made unless `session_id` names one. A message "
                               "sent while the session's run is paused rejects its pending calls with the "
                               "message as the reason and resumes that run.",
                "parameters": [AGENT_ID],
                "requestBody": _form({
                    "message": {"type": "string", "minLength": 1, "maxLength": MAX_MESSAGE_CHARS},
                    "stream": STREAM, "session_id": SESSION_ID, "user_id": USER_ID,
                }, ["message"]),
                "responses": {**RUN_ANSWERS,
                              "409": _error("The session's run is still answering, or the session belongs "
                                            "to another agent."),
                              "413": _error("The message is too long.")},
            },
            "get": {
                "operationId": "list_runs", "tags": ["Runs"], "summary": "List the user's runs of an agent",
                "parameters": [AGENT_ID, SESSION_QUERY, STATUS_QUERY, USER_QUERY],
                "responses": {"200": _json({"type": "array", "items": _ref("Run")}, "Newest first, at most 100."),
                              "401": _error("No valid key."), "404": _error("No such agent."),
                              "422": _error("A malformed filter.")},
            },
        },
        "/agents/{agent_id}/runs/{run_id}": {
            "get": {
                "operationId": "get_run", "tags": ["Runs"], "summary": "Get a run",
                "parameters": [*run_ops, SESSION_QUERY, USER_QUERY],
                "responses": {"200": _json(_ref("Run"), "The run."), "401": _error("No valid key."),
                              "404": _error("No such run (for this user_id)."),
                              "422": _error("A malformed parameter.")},
            },
        },
        "/agents/{agent_id}/runs/{run_id}/continue": {
            "post": {
                "operationId": "continue_run", "tags": ["Runs"], "summary": "Decide a paused run's tool calls",
                "description": (
                    "`tools` is a JSON list of tool objects: `tool_call_id` (required), `tool_name`, `tool_args`, "
                    "`confirmed` (true runs the call as stored, false rejects it with `confirmation_note`, null "
                    "leaves it pending), `confirmation_note`. The server's copy is the truth: a different "
                    "`tool_name` is a 422, and different `tool_args` are an edit, which only tools that allow "
                    "editing accept. Calls left out stay pending: the run answers PAUSED again. A continue of a "
                    "run that is not paused is a 409 (two continues at once: one wins, the other gets 409); of a "
                    "failed run, it retries."),
                "parameters": run_ops,
                "requestBody": _form({
                    "tools": {"type": "string", "description": "A JSON list of tool objects."},
                    "session_id": SESSION_ID, "user_id": USER_ID, "stream": STREAM,
                }),
                "responses": {**RUN_ANSWERS,
                              "400": _error("`tools` is not valid JSON."),
                              "409": _json(_ref("RunWithDetail"), "The run is not paused, or another "
                                                                  "decision got there first; the current run.")},
            },
        },
        "/agents/{agent_id}/runs/{run_id}/cancel": {
            "post": {
                "operationId": "cancel_run", "tags": ["Runs"], "summary": "Cancel a run",
                "parameters": run_ops,
                "requestBody": _form({"session_id": SESSION_ID, "user_id": USER_ID}),
                "responses": {"200": _json(_ref("Run"), "The run, now CANCELLED."),
                              "202": _json(_ref("Accepted"), "Cancelled, but the run could not be read back."),
                              "401": _error("No valid key."),
                              "404": _error("No such run (for this user_id)."),
                              "409": _json(_ref("RunWithDetail"), "The run had already finished."),
                              "422": _error("A malformed field."),
                              "429": _error("Too many actions per minute for this user; see `Retry-After`.")},
            },
        },
        "/agents": {
            "get": {"operationId": "list_agents", "tags": ["Agents"], "summary": "List the agents",
                    "responses": {"200": _json({"type": "array", "items": _ref("Agent")}, "The agents."),
                                  "401": _error("No valid key.")}},
        },
        "/agents/{agent_id}": {
            "get": {"operationId": "get_agent", "tags": ["Agents"], "summary": "Get an agent",
                    "parameters": [AGENT_ID],
                    "responses": {"200": _json(_ref("Agent"), "The agent."), "401": _error("No valid key."),
                                  "404": _error("No such agent.")}},
        },
        "/sessions": {
            "get": {
                "operationId": "list_sessions", "tags": ["Sessions"], "summary": "List the user's sessions",
                "parameters": [
                    _param("page", "query", "1 for the first page.", {"type": "integer", "minimum": 1, "default": 1}),
                    _param("limit", "query", "Sessions per page.",
                           {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
                    _param("sort_by", "query", "", {"type": "string", "enum": ["created_at", "updated_at"]}),
                    _param("sort_order", "query", "", {"type": "string", "enum": ["asc", "desc"]}),
                    _param("type", "query", "Only `agent` sessions exist.",
                           {"type": "string", "enum": ["agent", "team", "workflow"]}),
                    USER_QUERY,
                ],
                "responses": {"200": _json(_ref("SessionPage"), "One page of sessions."),
                              "401": _error("No valid key."), "422": _error("A malformed parameter.")},
            },
        },
        "/sessions/{session_id}": {
            "get": {"operationId": "get_session", "tags": ["Sessions"], "summary": "Get a session",
                    "parameters": [SESSION_PATH, USER_QUERY],
                    "responses": {"200": _json(_ref("SessionDetail"), "The session and its messages."),
                                  "401": _error("No valid key."), "404": _error("No such session (for this user_id)."),
                                  "422": _error("A malformed parameter.")}},
            "delete": {"operationId": "delete_session", "tags": ["Sessions"],
                       "summary": "Delete a session with its runs",
                       "parameters": [SESSION_PATH, USER_QUERY],
                       "responses": {"204": {"description": "Deleted."}, "401": _error("No valid key."),
                                     "404": _error("No such session (for this user_id)."),
                                     "409": _error("A run is still answering in it."),
                                     "422": _error("A malformed parameter.")}},
        },
        "/sessions/{session_id}/runs": {
            "get": {"operationId": "list_session_runs", "tags": ["Sessions"],
                    "summary": "A session's runs (`status=PAUSED`: the pending approvals)",
                    "parameters": [SESSION_PATH, STATUS_QUERY, USER_QUERY],
                    "responses": {"200": _json({"type": "array", "items": _ref("Run")}, "Oldest first."),
                                  "401": _error("No valid key."), "404": _error("No such session (for this user_id)."),
                                  "422": _error("A malformed filter.")}},
        },
        "/sessions/{session_id}/rename": {
            "post": {"operationId": "rename_session", "tags": ["Sessions"], "summary": "Rename a session",
                     "parameters": [SESSION_PATH, USER_QUERY],
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": {"type": "object", "required": ["session_name"],
                                                         "properties": {"session_name": {"type": "string"}}}},
                         "application/x-www-form-urlencoded": {"schema": {
                             "type": "object", "required": ["session_name"],
                             "properties": {"session_name": {"type": "string"}, "user_id": USER_ID}}}}},
                     "responses": {"200": _json(_ref("Session"), "The renamed session."),
                                   "400": _error("The JSON body is not JSON, or is nested too deeply."),
                                   "401": _error("No valid key."), "404": _error("No such session (for this user_id)."),
                                   "422": _error("No session_name.")}},
        },
        "/health": {
            "get": {"operationId": "health", "tags": ["Server"], "summary": "Is the server up", "security": [],
                    "responses": {"200": _json({"type": "object", "required": ["status"], "properties": {
                        "status": {"type": "string"}, "instantiated_at": {"type": "string"}}}, "Up.")}},
        },
        "/ready": {
            "get": {"operationId": "ready", "tags": ["Server"], "summary": "Can the server serve requests",
                    "description": "503 while the database is unreachable or its migrations are pending.",
                    "security": [],
                    "responses": {"200": _json({"type": "object", "required": ["status"], "properties": {
                        "status": {"type": "string"}}}, "Ready."),
                                  "503": _error("The database is unreachable, or migrations are pending.")}},
        },
    }


@cache
def _spec() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Agent Chat API",
            "version": "1.0.0",
            "description": (
                "AgentOS-compatible REST API of Agent Chat: start runs, decide the tool calls a run paused on, "
                "follow runs as server-sent events. Authenticate with `Authorization: Bearer <OS_SECURITY_KEY>`. "
                "Runs and sessions belong to the `user_id` that made them; others get 404."),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "The server's OS_SECURITY_KEY."}},
            "schemas": SCHEMAS,
        },
    }


def spec() -> dict:
    """A copy of the document (callers may not change the cached one)."""
    return copy.deepcopy(_spec())
