"""Runs, tool calls, sessions, agents and run events in the shapes of Agno AgentOS (the reference),
as plain dicts (their schemas, for the OpenAPI document, are `app.api.response_models`).

Field names, status names and event names follow the captures in the research notes
(`agno-anchor-captures/`). Where the reference reports something we do not track (token metrics,
session state) the field is there and empty, never made up. Knows no requests: it reads rows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from app.api.core import Agent, DemoModel, tool_output
from app.extensions import db
from app.models import Account, CallKind, CallStatus, ChatSession, Message, Run, RunEvent, RunStatus, ToolCall

# Our run states in the reference's names (it has no "queued": a queued run is about to run).
STATUS = {
    RunStatus.QUEUED: "RUNNING",
    RunStatus.RUNNING: "RUNNING",
    RunStatus.PAUSED: "PAUSED",
    RunStatus.COMPLETED: "COMPLETED",
    RunStatus.FAILED: "ERROR",
    RunStatus.CANCELLED: "CANCELLED",
}
STATUS_FILTER = {name: [ours for ours, theirs in STATUS.items() if theirs == name] for name in set(STATUS.values())}

PAUSED_CONTENT = "I have tools to execute, but I need confirmation."  # the reference's fixed text
SETTLED = (CallStatus.DONE, CallStatus.FAILED, CallStatus.REJECTED, CallStatus.OUTCOME_UNKNOWN, CallStatus.EXPIRED)
FINAL_EVENTS = ("RunPaused", "RunCompleted", "RunError", "RunCancelled")


# --- time -------------------------------------------------------------------------------------------

def utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were stored in UTC.
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def unix(moment: datetime | None) -> int | None:
    return int(utc(moment).timestamp()) if moment else None


def iso(moment: datetime | None) -> str | None:
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


# --- runs -------------------------------------------------------------------------------------------

@dataclass
class RunView:
    """A run with everything its JSON shows, read in one go."""
    run: Run
    agent: Agent | None
    user_id: str | None      # the owner's API user id
    session_id: str          # the session's id as the API knows it
    calls: list[ToolCall]
    messages: list[Message]

    @property
    def agent_name(self) -> str:
        return self.agent.name if self.agent else self.run.agent_id

    @property
    def model_provider(self) -> str:
        return "Demo" if self.run.model == DemoModel.label else "OpenAI"


def api_session_id(chat: ChatSession) -> str:
    """The id an API client knows a chat by: the name it chose, or our id for chats it did not name."""
    return chat.external_id or chat.id


def load_run(run: Run) -> RunView:
    return load_run_by_id(run.id)


def load_run_by_id(run_id: str) -> RunView | None:
    """The run as the API shows it, in one statement: the run with its chat's and owner's names, joined
    with its messages and theirs with their calls (a call hangs off the reply of its own run that made
    it), a row per message and call (None: no such run)."""
    rows = db.session.execute(_RUN_VIEW, {"run_id": run_id}).all()
    if not rows:
        return None
    row = rows[0]
    run = row.Run
    messages = list({r.Message.id: r.Message for r in rows if r.Message is not None}.values())
    calls = sorted({r.ToolCall.id: r.ToolCall for r in rows if r.ToolCall is not None}.values(),
                   key=lambda call: (call.created_at, call.position))
    owner_name = row.owner_external_id or row.owner_email  # Account.api_user_id
    return RunView(run, _agents().get(run.agent_id), owner_name, row.chat_external_id or row.chat_id,
                   calls, messages)


_RUN_VIEW = sa.select(Run, ChatSession.id.label("chat_id"), ChatSession.external_id.label("chat_external_id"),
                      Account.external_id.label("owner_external_id"), Account.email.label("owner_email"),
                      Message, ToolCall) \
    .join(ChatSession, ChatSession.id == Run.session_id).outerjoin(Account, Account.id == Run.owner_id) \
    .outerjoin(Message, Message.run_id == Run.id) \
    .outerjoin(ToolCall, sa.and_(ToolCall.message_id == Message.id, ToolCall.run_id == Run.id)) \
    .where(Run.id == sa.bindparam("run_id")).order_by(Message.id, ToolCall.position) \
    .options(sa.orm.lazyload(Message.tool_calls))  # a message's calls: from `calls`


def run_json(view: RunView) -> dict:
    run = view.run
    return {
        "run_id": run.id,
        "agent_id": run.agent_id,
        "agent_name": view.agent_name,
        "session_id": view.session_id,
        "user_id": view.user_id,
        "content": content(view),
        "content_type": "str",
        "model": run.model,
        "model_provider": view.model_provider,
        "session_state": {},
        "created_at": unix(run.created_at),
        "status": STATUS[run.status],
        "metrics": {},  # we do not count tokens
        "events": [_frame(view, "RunError", run.updated_at, content=run.error)]
        if run.status == RunStatus.FAILED else [],
        "messages": messages_json(view),
        "tools": [tool_json(call, agent=view.agent) for call in view.calls],
        "requirements": requirements_json(view),
        "input": {"input_content": run.input},
    }


def content(view: RunView) -> str:
    """What the run said: the reference's fixed text while paused, else the newest reply's text."""
    if view.run.status == RunStatus.PAUSED:
        return PAUSED_CONTENT
    replies = [m for m in view.messages if m.role == "assistant"]
    return replies[-1].content if replies else ""


def tool_json(call: ToolCall, status: str | None = None, agent: Agent | None = None) -> dict:
    """A tool call as the reference's `ToolExecution`; `status` replays a state the call was in.

    `requires_confirmation` is true while a confirmation waits for a decision (as in the reference, which
    clears it once decided); `confirmed` is null until a person decides, and stays null for calls that
    needed no confirmation. A call that asks for input has `requires_user_input` and the fields in
    `user_input_schema` (`answered` once filled in); one the person runs has `external_execution_required`.
    `preview` (what the call would do), `expires_at`, `approvers` and `decided_by` are ours."""
    status = status or call.status
    kind = getattr(call, "kind", None) or CallKind.CONFIRM
    settled = status in SETTLED
    if status == CallStatus.PENDING:
        confirmed = None
    elif status == CallStatus.REJECTED:
        confirmed = False
    else:
        confirmed = True if call.decided_by == "user" else None
    return {
        "tool_call_id": call.call_id,
        "tool_name": call.name,
        "tool_args": tool_args(call),
        "tool_call_error": (status != CallStatus.DONE) if settled else None,
        "result": call.result if status == CallStatus.DONE
        else tool_output(call) if status in (CallStatus.FAILED, CallStatus.OUTCOME_UNKNOWN, CallStatus.EXPIRED)
        else None,
        "metrics": None,
        "child_run_id": None,
        "stop_after_tool_call": False,
        "created_at": unix(call.created_at),
        "requires_confirmation": status == CallStatus.PENDING and kind == CallKind.CONFIRM,
        "confirmed": confirmed,
        "confirmation_note": call.reason if status == CallStatus.REJECTED else None,
        "requires_user_input": True if kind == CallKind.INPUT else None,
        "user_input_schema": user_input_schema(call, status, agent) if kind == CallKind.INPUT else None,
        "user_feedback_schema": None,
        "answered": (status != CallStatus.PENDING) if kind != CallKind.CONFIRM else None,
        "external_execution_required": True if kind == CallKind.EXTERNAL else None,
        "external_execution_silent": None,
        "approval_type": None,
        "approval_id": None,
        "parent_tool_call_id": None,
        "preview": call.preview if status == CallStatus.PENDING else None,
        "expires_at": unix(call.expires_at) if call.expires_at else None,
        "approvers": call.approvers,
        "decided_by": None if status == CallStatus.PENDING else call.decided_by,
    }


_FIELD_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "array": "list",
                "object": "dict"}


def user_input_schema(call: ToolCall, status: str, agent: Agent | None) -> list[dict]:
    """The fields a call asks the person for, as the reference's UserInputField (`value` once answered)."""
    tool = agent.tool(call.name) if agent else None
    if tool is None:
        return []
    properties = tool.parameters.get("properties", {})
    answered = status != CallStatus.PENDING and call.arguments is not None
    return [{"name": name, "field_type": _field_type(properties.get(name, {})),
             "description": properties.get(name, {}).get("description"),
             "value": call.arguments.get(name) if answered else None} for name in tool.input_fields]


def _field_type(schema: dict) -> str:
    kinds = [schema.get("type")] + [o.get("type") for o in schema.get("anyOf", ()) if isinstance(o, dict)]
    kinds = [k for k in kinds if k and k != "null"]
    if not kinds and "enum" in schema:
        return "str"
    return _FIELD_TYPES.get(kinds[0], "str") if kinds else "str"


def tool_args(call: ToolCall) -> dict:
    if call.arguments is not None:
        return call.arguments
    try:  # arguments that failed validation: show what the model sent, if it is an object at all
        loose = json.loads(call.raw_arguments or "{}")
    except ValueError:
        return {}
    return loose if isinstance(loose, dict) else {}


def requirements_json(view: RunView) -> list[dict]:
    return [{"id": call.id, "created_at": iso(call.created_at), "tool_execution": tool_json(call, agent=view.agent)}
            for call in view.calls if call.status == CallStatus.PENDING]


def messages_json(view: RunView) -> list[dict]:
    run = view.run
    out = []
    if view.agent:
        out.append(_message(f"{run.id}-system", "system", view.agent.instructions, run.created_at))
    for message in view.messages:
        item = _message(str(message.id), message.role, message.content, message.created_at)
        calls = [c for c in view.calls if c.message_id == message.id]
        if calls:
            item["tool_calls"] = [{"id": c.call_id, "call_id": c.call_id, "type": "function",
                                   "function": {"name": c.name, "arguments": c.raw_arguments}} for c in calls]
        if message.response_id:
            item["provider_data"] = {"response_id": message.response_id}
        out.append(item)
        for call in calls:
            if call.status in SETTLED:
                out.append({**_message(call.id, "tool", tool_output(call), call.updated_at),
                            "tool_call_id": call.call_id, "tool_name": call.name, "tool_args": tool_args(call),
                            "tool_call_error": call.status != CallStatus.DONE})
    return out


def _message(id: str, role: str, text: str, created_at) -> dict:
    return {"id": id, "content": text, "from_history": False, "stop_after_tool_call": False, "role": role,
            "created_at": unix(created_at)}


# --- the event stream ---------------------------------------------------------------------------------

def _frame(view: RunView, name: str, created_at, **fields) -> dict:
    run = view.run
    return {"created_at": unix(created_at), "event": name, "agent_id": run.agent_id, "agent_name": view.agent_name,
            "run_id": run.id, "session_id": view.session_id, "nested_depth": 0, **fields}


def event_frames(view: RunView, event: RunEvent) -> list[dict]:
    """One stored run event as the reference's stream events (none for what the reference does not
    announce: the user's message, the model's proposals, decisions)."""
    data, at = event.data or {}, event.created_at
    model = {"model": view.run.model, "model_provider": view.model_provider}
    match event.type:
        case "run_started":
            return [_frame(view, "RunStarted", at, **model)]
        case "message_started":
            return [_frame(view, "ModelRequestStarted", at, **model)]
        case "text":
            if not data.get("text"):  # words a stream already relayed (app.agent.events.Watch)
                return []
            return [_frame(view, "RunContent", at, content=data.get("text", ""), workflow_agent=False,
                           content_type="str", reasoning_content="")]
        case "message_completed":
            return [_frame(view, "ModelRequestCompleted", at, **model)]
        case "tool_call_updated":
            call = next((c for c in view.calls if c.id == data.get("call_id")), None)
            status = data.get("status") or (call.status if call else None)
            if call is None or status not in (CallStatus.EXECUTING, *SETTLED) or status in (CallStatus.REJECTED,
                                                                                              CallStatus.EXPIRED):
                return []
            if status == CallStatus.EXECUTING:
                return [_frame(view, "ToolCallStarted", at, tool=tool_json(call, status, view.agent))]
            args = ", ".join(f"{k}={v}" for k, v in tool_args(call).items())
            outcome = "completed" if status == CallStatus.DONE else "failed"
            return [_frame(view, "ToolCallCompleted", at, content=f"{call.name}({args}) {outcome}.",
                           tool=tool_json(call, status, view.agent))]
        case "run_resumed":
            return [_frame(view, "RunContinued", at)]
        case "run_paused" | "run_completed" | "run_failed" | "run_cancelled":
            return final_frames(view, event.type, at)
    return []


def final_frames(view: RunView, kind: str, at=None) -> list[dict]:
    """The events that end a stream: how the run paused, completed, failed or was cancelled."""
    at = at or view.run.updated_at
    match kind:
        case "run_paused":
            return [_frame(view, "RunContentCompleted", at),
                    _frame(view, "RunPaused", at, content=PAUSED_CONTENT,
                           tools=[tool_json(c, agent=view.agent) for c in view.calls], requirements=requirements_json(view))]
        case "run_completed":
            return [_frame(view, "RunContentCompleted", at),
                    _frame(view, "RunCompleted", at, content=content(view), content_type="str", session_state={},
                           metrics={})]
        case "run_failed":
            return [_frame(view, "RunError", at, content=view.run.error or "The run failed.")]
        case "run_cancelled":
            return [_frame(view, "RunCancelled", at, reason="The run was cancelled.")]
    return []


FINAL_KIND = {RunStatus.PAUSED: "run_paused", RunStatus.COMPLETED: "run_completed", RunStatus.FAILED: "run_failed",
              RunStatus.CANCELLED: "run_cancelled"}


def sse(frame: dict) -> str:
    return f"event: {frame['event']}\ndata: {json.dumps(frame, separators=(',', ':'))}\n\n"


# --- sessions and agents --------------------------------------------------------------------------------

def session_json(chat: ChatSession, user_id: str | None) -> dict:
    return {
        "session_id": api_session_id(chat),
        "session_name": chat.title,
        "session_state": {},
        "created_at": iso(chat.created_at),
        "updated_at": iso(chat.updated_at),
        "session_type": "agent",
        "user_id": user_id,
        "agent_id": chat.agent_id,
        "metrics": {},
    }


def session_detail_json(chat: ChatSession, user_id: str | None, messages: list[Message]) -> dict:
    agent = _agents().get(chat.agent_id)
    return {
        **session_json(chat, user_id),
        "agent_session_id": api_session_id(chat),
        "session_summary": None,
        "agent_data": {"agent_id": chat.agent_id, "name": agent.name if agent else chat.agent_id},
        "chat_history": [{"role": m.role, "content": m.content, "created_at": unix(m.created_at)} for m in messages],
    }


def agent_json(agent: Agent, model_label: str, tools=None) -> dict:
    return {
        "id": agent.id,
        "agent_id": agent.id,
        "name": agent.name,
        "description": agent.description,
        "instructions": agent.instructions,
        "model": {"name": model_label, "model": model_label,
                  "provider": "Demo" if model_label == DemoModel.label else "OpenAI"},
        "tools": {"tools": [agent_tool_json(t) for t in (agent.tools if tools is None else tools)]},
        "mcp_servers": [{"name": server.name, "tools": [t.name for t in server.listed()], "error": server.last_error}
                        for server in agent.mcp],
    }


def agent_tool_json(tool) -> dict:
    """A tool as GET /agents lists it: the model's view of it, whether it needs confirmation, and
    where it comes from (an MCP server's tools also say whether the server calls them destructive)."""
    out = {**tool.openai_function(), "requires_confirmation": tool.requires_confirmation, "source": tool.source}
    if tool.source == "mcp":
        out["destructive"] = tool.destructive
    return out


def _agents():
    from flask import current_app
    return current_app.extensions["agents"]
