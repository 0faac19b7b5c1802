"""The OpenAPI 3.1 document of the REST API: `spec()`. Its schemas, request bodies and query
parameters are generated from the pydantic models in `app.api.request_models` and
`app.api.response_models`; what is written here is only what a model cannot say (which operation
answers which status, and why).

It is served at /openapi.json, rendered as the /docs page, validated in the tests, and used by
schemathesis to fuzz the API (every answer must match it).
"""
from __future__ import annotations

import copy
from functools import cache

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api import request_models as rq
from app.api import response_models as rs

REF = "#/components/schemas/{model}"
COMPONENTS = [(model, "serialization") for model in (
    rs.Error, rs.Accepted, rs.Tool, rs.Message, rs.Requirement, rs.Run, rs.RunWithDetail, rs.EventData, rs.RunEvent,
    rs.Session, rs.SessionDetail, rs.SessionPage, rs.Agent, rs.Health, rs.Ready)] + [(rq.ToolDecision, "validation")]


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict | type[BaseModel], description: str) -> dict:
    schema = _ref(schema) if isinstance(schema, type) else schema
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _list(model: type[BaseModel]) -> dict:
    return {"type": "array", "items": _ref(model)}


def _error(description: str) -> dict:
    return _json(rs.Error, description)


def _fields(model: type[rq.Request]) -> dict:
    """A request model's JSON schema as a form or query sees it: an optional field is one that may be
    absent (a form has no null)."""
    schema = model.model_json_schema(ref_template=REF, mode="validation")
    for field in schema["properties"].values():
        field.pop("title", None)
        options = field.pop("anyOf", None)
        if options:
            field.update(next(option for option in options if option.get("type") != "null"))
        if field.get("default", 0) in (None, []):  # "absent" is the default here
            del field["default"]
    return schema


def _form(model: type[rq.Request], contentSchema: dict | None = None) -> dict:
    """`contentSchema`: the schema of the JSON text in a field, by field name."""
    schema = _fields(model)
    for name, content in (contentSchema or {}).items():
        schema["properties"][name]["contentSchema"] = content
    body = {"type": "object", "properties": schema["properties"],
            **({"required": schema["required"]} if schema.get("required") else {})}
    return {"required": bool(schema.get("required")), "content": {
        "multipart/form-data": {"schema": body}, "application/x-www-form-urlencoded": {"schema": body}}}


def _query(model: type[rq.Request], *only: str) -> list[dict]:
    schema = _fields(model)
    return [{"name": name, "in": "query", "required": name in schema.get("required", []),
             "description": field.pop("description", ""), "schema": field}
            for name, field in schema["properties"].items() if not only or name in only]


def _path(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


AGENT_ID = _path("agent_id", "The agent, e.g. `data_manager`.")
RUN_ID = _path("run_id", "The run.")
SESSION_PATH = _path("session_id", "The session: the `session_id` the client chose, or ours.")

RUN_ANSWERS = {
    "200": {"description": "The run's events (`stream=true`), or the run once it paused, completed or was "
                           "cancelled (`stream=false`).",
            "content": {"application/json": {"schema": _ref(rs.Run)},
                        "text/event-stream": {"schema": _ref(rs.RunEvent)}}},
    "202": {"description": "`stream=false`: still running when the wait ran out; poll the run. Or the run was "
                           "started/decided but could not be read back (the database went away just then): "
                           "`run_id` and a `detail`; poll the run.",
            "content": {"application/json": {"schema": {"anyOf": [_ref(rs.Run), _ref(rs.Accepted)]}}}},
    "401": _error("No valid key."),
    "404": _error("No such agent or run (for this user_id)."),
    "413": _error("The message or the request is too large."),
    "422": _error("A form field is missing or malformed."),
    "429": _error("A per-account limit was reached (messages or actions per minute, runs at once, open "
                  "streams); `Retry-After` says when to try again."),
    "502": _json(rs.RunWithDetail, "`stream=false`: the model failed; the run is `ERROR`. Sending the "
                                   "same continue again retries it."),
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
                "requestBody": _form(rq.RunForm),
                "responses": {**RUN_ANSWERS,
                              "409": _error("The session's run is still answering, or the session belongs "
                                            "to another agent."),
                              "413": _error("The message is too long.")},
            },
            "get": {
                "operationId": "list_runs", "tags": ["Runs"], "summary": "List the user's runs of an agent",
                "parameters": [AGENT_ID, *_query(rq.RunsQuery)],
                "responses": {"200": _json(_list(rs.Run), "Newest first, at most 100."),
                              "401": _error("No valid key."), "404": _error("No such agent."),
                              "422": _error("A malformed filter.")},
            },
        },
        "/agents/{agent_id}/runs/{run_id}": {
            "get": {
                "operationId": "get_run", "tags": ["Runs"], "summary": "Get a run",
                "parameters": [*run_ops, *_query(rq.UserQuery)],
                "responses": {"200": _json(rs.Run, "The run."), "401": _error("No valid key."),
                              "404": _error("No such run (for this user_id)."),
                              "422": _error("A malformed parameter.")},
            },
        },
        "/agents/{agent_id}/runs/{run_id}/continue": {
            "post": {
                "operationId": "continue_run", "tags": ["Runs"], "summary": "Decide a paused run's tool calls",
                "description": (
                    "`tools` is a JSON list of tool objects (ToolDecision): `tool_call_id` (required), `tool_name`, "
                    "`tool_args`, `confirmed` (true runs the call as stored, false rejects it with "
                    "`confirmation_note`, null leaves it pending), `confirmation_note`. The server's copy is the "
                    "truth: a different `tool_name` is a 422, and different `tool_args` are an edit, which only "
                    "tools that allow editing accept. A call with `requires_user_input` is answered with its "
                    "`user_input_schema` fields' `value`s (it runs with them merged in); one with "
                    "`external_execution_required` with the `result` the person got (never run on the server). "
                    "An approval whose preview changed since it was shown is a 409 with the new preview; "
                    "nothing runs. Calls left out stay pending: the run answers PAUSED again. "
                    "A continue of a run that is not paused is a 409 (two continues at once: one wins, the other "
                    "gets 409); of a failed run, it retries."),
                "parameters": run_ops,
                "requestBody": _form(rq.ContinueForm, contentSchema={"tools": _list(rq.ToolDecision)}),
                "responses": {**RUN_ANSWERS,
                              "400": _error("`tools` is not valid JSON."),
                              "409": _json(rs.RunWithDetail, "The run is not paused, or another decision got "
                                                             "there first; the current run.")},
            },
        },
        "/agents/{agent_id}/runs/{run_id}/cancel": {
            "post": {
                "operationId": "cancel_run", "tags": ["Runs"], "summary": "Cancel a run",
                "parameters": run_ops,
                "requestBody": _form(rq.CancelForm),
                "responses": {"200": _json(rs.Run, "The run, now CANCELLED."),
                              "202": _json(rs.Accepted, "Cancelled, but the run could not be read back."),
                              "401": _error("No valid key."),
                              "404": _error("No such run (for this user_id)."),
                              "409": _json(rs.RunWithDetail, "The run had already finished."),
                              "422": _error("A malformed field."),
                              "429": _error("Too many actions per minute for this user; see `Retry-After`.")},
            },
        },
        "/agents": {
            "get": {"operationId": "list_agents", "tags": ["Agents"], "summary": "List the agents",
                    "responses": {"200": _json(_list(rs.Agent), "The agents."), "401": _error("No valid key.")}},
        },
        "/agents/{agent_id}": {
            "get": {"operationId": "get_agent", "tags": ["Agents"], "summary": "Get an agent",
                    "parameters": [AGENT_ID],
                    "responses": {"200": _json(rs.Agent, "The agent."), "401": _error("No valid key."),
                                  "404": _error("No such agent.")}},
        },
        "/sessions": {
            "get": {
                "operationId": "list_sessions", "tags": ["Sessions"], "summary": "List the user's sessions",
                "parameters": _query(rq.SessionsQuery),
                "responses": {"200": _json(rs.SessionPage, "One page of sessions."),
                              "401": _error("No valid key."), "422": _error("A malformed parameter.")},
            },
        },
        "/sessions/{session_id}": {
            "get": {"operationId": "get_session", "tags": ["Sessions"], "summary": "Get a session",
                    "parameters": [SESSION_PATH, *_query(rq.UserQuery, "user_id")],
                    "responses": {"200": _json(rs.SessionDetail, "The session and its messages."),
                                  "401": _error("No valid key."), "404": _error("No such session (for this user_id)."),
                                  "422": _error("A malformed parameter.")}},
            "delete": {"operationId": "delete_session", "tags": ["Sessions"],
                       "summary": "Delete a session with its runs",
                       "parameters": [SESSION_PATH, *_query(rq.UserQuery, "user_id")],
                       "responses": {"204": {"description": "Deleted."}, "401": _error("No valid key."),
                                     "404": _error("No such session (for this user_id)."),
                                     "409": _error("A run is still answering in it."),
                                     "422": _error("A malformed parameter.")}},
        },
        "/sessions/{session_id}/runs": {
            "get": {"operationId": "list_session_runs", "tags": ["Sessions"],
                    "summary": "A session's runs (`status=PAUSED`: the pending approvals)",
                    "parameters": [SESSION_PATH, *_query(rq.RunsQuery, "status", "user_id")],
                    "responses": {"200": _json(_list(rs.Run), "Oldest first."),
                                  "401": _error("No valid key."), "404": _error("No such session (for this user_id)."),
                                  "422": _error("A malformed filter.")}},
        },
        "/sessions/{session_id}/rename": {
            "post": {"operationId": "rename_session", "tags": ["Sessions"], "summary": "Rename a session",
                     "parameters": [SESSION_PATH, *_query(rq.UserQuery, "user_id")],
                     "requestBody": _rename_body(),
                     "responses": {"200": _json(rs.SessionDetail, "The renamed session, as GET answers it."),
                                   "400": _error("The JSON body is not JSON, or is nested too deeply."),
                                   "401": _error("No valid key."), "404": _error("No such session (for this user_id)."),
                                   "422": _error("No session_name.")}},
        },
        "/health": {
            "get": {"operationId": "health", "tags": ["Server"], "summary": "Is the server up", "security": [],
                    "responses": {"200": _json(rs.Health, "Up.")}},
        },
        "/ready": {
            "get": {"operationId": "ready", "tags": ["Server"], "summary": "Can the server serve requests",
                    "description": "503 while the database is unreachable or its migrations are pending.",
                    "security": [],
                    "responses": {"200": _json(rs.Ready, "Ready."),
                                  "503": _error("The database is unreachable, or migrations are pending.")}},
        },
    }


def _rename_body() -> dict:
    form = _form(rq.RenameBody)
    as_json = copy.deepcopy(form["content"]["application/x-www-form-urlencoded"])
    as_json["schema"]["properties"].pop("user_id")
    return {"required": True, "content": {"application/json": as_json,
                                          "application/x-www-form-urlencoded": form["content"][
                                              "application/x-www-form-urlencoded"]}}


def _schemas() -> dict:
    _, generated = models_json_schema(COMPONENTS, ref_template=REF)
    return generated["$defs"]


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
            "schemas": _schemas(),
        },
    }


def spec() -> dict:
    """A copy of the document (callers may not change the cached one)."""
    return copy.deepcopy(_spec())
