"""Every name the REST API takes from the core (commands, the chat store, the run follower), in one
place: the API's other modules import them from here, so a change in the core changes this file only."""
from __future__ import annotations

from app.agent.definition import Agent
from app.agent.llm import DemoModel
from app.agent.commands import MAX_MESSAGE_CHARS, Decision, check_active_runs, continue_run, start_run
from app.agent.commands import cancel as cancel_run
from app.agent.context import tool_output
from app.agent.events import Watch
from app.agent.follow import STATUS_AFTER, follow
from app.agent.refusals import NotFound, Refusal, TooMany
from app.chats import (MAX_SESSION_ID, agents, api_chat, chats_page, delete_chat, find_api_chat, find_api_run,
                       find_api_run_to_decide, rename_chat)
from app.web.stream import follow_run

__all__ = ["MAX_MESSAGE_CHARS", "MAX_SESSION_ID", "STATUS_AFTER", "Agent", "Decision", "DemoModel", "NotFound",
           "Refusal", "TooMany", "Watch", "agents", "api_chat", "cancel_run", "chats_page", "check_active_runs",
           "continue_run", "delete_chat", "find_api_chat", "find_api_run", "find_api_run_to_decide", "follow",
           "follow_run", "rename_chat", "start_run", "tool_output"]
