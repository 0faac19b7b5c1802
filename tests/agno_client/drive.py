"""Drives our server with the reference's own client (run in .venv-agno, not the app's venv):
    python drive.py BASE_URL KEY
Each step is an assertion; the exit status is 0 only if every call worked as the client expects."""
from __future__ import annotations

import asyncio
import sys

from agno.agent import RemoteAgent
from agno.client import AgentOSClient
from agno.run.agent import (RunCompletedEvent, RunContentEvent, RunContinuedEvent, RunOutput, RunPausedEvent,
                            RunStartedEvent)
from agno.run.base import RunStatus
from agno.os.schema import AgentSessionDetailSchema

BASE_URL, KEY = sys.argv[1], sys.argv[2]
HEADERS = {"Authorization": f"Bearer {KEY}"}
USER, SESSION = "agno-user", "agno-session"
DELETE = "Delete 50 old records from the users table"


def step(name: str) -> None:
    print(f"ok: {name}", flush=True)


async def main() -> None:
    client = AgentOSClient(BASE_URL, timeout=30)
    agents = await client.list_agents(headers=HEADERS)
    assert "data_manager" in [a.id for a in agents], agents
    detail = await client.aget_agent("data_manager", headers=HEADERS)
    assert (detail.id, detail.name) == ("data_manager", "Data Manager"), detail
    step("list and read agents")

    agent = RemoteAgent(BASE_URL, "data_manager", timeout=30)
    paused = await agent.arun(DELETE, user_id=USER, session_id=SESSION, auth_token=KEY)
    assert isinstance(paused, RunOutput) and paused.status == RunStatus.paused and paused.is_paused, paused
    [requirement] = paused.active_requirements
    assert requirement.needs_confirmation and requirement.tool_execution.tool_name == "delete_records"
    step("arun pauses on the tool call")

    requirement.confirm()
    done = await agent.acontinue_run(run_id=paused.run_id, requirements=paused.requirements, user_id=USER,
                                     session_id=SESSION, auth_token=KEY)
    assert done.status == RunStatus.completed and done.content == "Deleted them.", (done.status, done.content)
    step("acontinue_run with the confirmed requirement completes")

    streamed = [event async for event in agent.arun(DELETE, stream=True, stream_events=True, user_id=USER,
                                                          session_id=SESSION, auth_token=KEY)]
    assert isinstance(streamed[0], RunStartedEvent) and isinstance(streamed[-1], RunPausedEvent), streamed
    [requirement] = streamed[-1].active_requirements
    requirement.confirm()
    resumed = [event async for event in agent.acontinue_run(
        run_id=streamed[-1].run_id, requirements=streamed[-1].requirements, stream=True, user_id=USER,
        session_id=SESSION, auth_token=KEY)]
    assert isinstance(resumed[0], RunContinuedEvent) and isinstance(resumed[-1], RunCompletedEvent), resumed
    text = "".join(e.content for e in resumed if isinstance(e, RunContentEvent))
    assert text == resumed[-1].content == "Deleted them again.", (text, resumed[-1].content)
    step("streamed events parse into the client's classes")

    page = await client.get_sessions(user_id=USER, headers=HEADERS)
    assert [s.session_id for s in page.data] == [SESSION] and page.meta.total_count == 1, page
    session = await client.get_session(SESSION, user_id=USER, headers=HEADERS)
    assert isinstance(session, AgentSessionDetailSchema) and session.agent_session_id == SESSION, session
    assert len(session.chat_history) >= 4, session.chat_history
    renamed = await client.rename_session(SESSION, "Cleanup of users", user_id=USER, headers=HEADERS)
    assert isinstance(renamed, AgentSessionDetailSchema) and renamed.session_name == "Cleanup of users", renamed
    await client.delete_session(SESSION, user_id=USER, headers=HEADERS)
    assert (await client.get_sessions(user_id=USER, headers=HEADERS)).data == []
    step("sessions list, read, rename, delete")


asyncio.run(main())
print("all calls worked")
