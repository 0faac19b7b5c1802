"""Reading and creating chats for the UI; every lookup is scoped by its owner (others get None)."""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from app.agents import get_agent
from app.extensions import db
from app.models import Account, CallStatus, ChatSession, Message, Run, RunStatus, ToolCall, utcnow

DEFAULT_AGENT = "data_manager"


@dataclass
class Conversation:
    chat: ChatSession
    messages: list[Message]
    run: Run | None          # the newest run, which decides the composer's and the stream's state
    cursor: int              # the newest event the messages already include


def list_chats(owner_id: int, limit: int = 50) -> list[ChatSession]:
    """The owner's chats that have something in them, newest first (an empty chat is no conversation)."""
    said = sa.select(Message.id).where(Message.session_id == ChatSession.id).exists()
    return list(db.session.scalars(sa.select(ChatSession).where(ChatSession.owner_id == owner_id, said)
                                   .order_by(ChatSession.updated_at.desc()).limit(limit)))


def blank_conversation() -> Conversation:
    """What a new chat looks like before its first message: nothing stored yet."""
    return Conversation(ChatSession(title="New chat"), [], None, 0)


def get_chat(owner_id: int, chat_id: str) -> ChatSession | None:
    return db.session.scalar(sa.select(ChatSession).where(ChatSession.id == chat_id,
                                                          ChatSession.owner_id == owner_id))


def create_chat(owner_id: int, agent_id: str = DEFAULT_AGENT) -> ChatSession:
    if get_agent(agent_id) is None:
        raise LookupError(agent_id)
    chat = ChatSession(owner_id=owner_id, agent_id=agent_id)
    db.session.add(chat)
    db.session.commit()
    return chat


def get_run(owner_id: int, run_id: str) -> Run | None:
    return db.session.scalar(sa.select(Run).where(Run.id == run_id, Run.owner_id == owner_id))


def get_call(owner_id: int, run_id: str, call_id: str) -> ToolCall | None:
    return db.session.scalar(sa.select(ToolCall).join(Run).where(
        ToolCall.id == call_id, ToolCall.run_id == run_id, Run.owner_id == owner_id))


def pending_calls(limit: int = 200) -> list[tuple[ToolCall, ChatSession, Account]]:
    """Every call waiting for a decision, oldest first, with its chat and the chat's owner (admins)."""
    rows = db.session.execute(
        sa.select(ToolCall, ChatSession, Account).join(Run, Run.id == ToolCall.run_id)
        .join(ChatSession, ChatSession.id == Run.session_id).join(Account, Account.id == Run.owner_id)
        .where(ToolCall.status == CallStatus.PENDING).order_by(ToolCall.created_at, ToolCall.position)
        .limit(limit))
    return [tuple(row) for row in rows]


def conversation(chat: ChatSession) -> Conversation:
    """The whole chat as stored, plus the event cursor it corresponds to.

    Read in one snapshot, so text streamed while the page renders is either in the page or after the
    cursor, never both and never neither (REPEATABLE READ on PostgreSQL; SQLite reads are snapshots)."""
    db.session.commit()
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    run = db.session.scalars(sa.select(Run).where(Run.session_id == chat.id)
                             .order_by(Run.created_at.desc(), Run.id.desc()).limit(1)).first()
    messages = list(db.session.scalars(sa.select(Message).where(Message.session_id == chat.id)
                                       .order_by(Message.id)))
    # The transaction stays open while the page renders, so lazy loads read the same snapshot.
    return Conversation(chat, messages, run, run.last_seq if run else 0)


def failure_headline(run) -> str | None:
    """A failed run's headline: "The model could not be reached" when a model call failed before the
    run said anything at all (no words, no tool calls), else None (the error says enough)."""
    if run is None or "model" not in (run.error or "").lower():
        return None
    said = db.session.scalar(sa.select(sa.func.count()).select_from(Message).where(
        Message.run_id == run.id, Message.role == "assistant", Message.content != ""))
    called = db.session.scalar(sa.select(sa.func.count()).select_from(ToolCall).where(ToolCall.run_id == run.id))
    return None if said or called else "The model could not be reached."


def active(run: Run | None) -> bool:
    return run is not None and run.status in RunStatus.ACTIVE


# --- The REST API names chats by the session_id a client chose (per owner), or by our id -------------

MAX_SESSION_ID = 200
MAX_TITLE = 200


def find_api_chat(owner_id: int, session_id: str) -> ChatSession | None:
    """The owner's chat with this id, else the one the client named so."""
    return get_chat(owner_id, session_id) or db.session.scalar(sa.select(ChatSession).where(
        ChatSession.owner_id == owner_id, ChatSession.external_id == session_id))


def api_chat(owner_id: int, agent_id: str, session_id: str | None) -> ChatSession:
    """The chat a run goes into: the named one, or a new one (named `session_id`, if given)."""
    if session_id:
        chat = find_api_chat(owner_id, session_id)
        if chat is not None:
            return chat
    try:
        chat = ChatSession(owner_id=owner_id, agent_id=agent_id, external_id=session_id or None)
        db.session.add(chat)
        db.session.commit()
    except sa.exc.IntegrityError:  # a concurrent request created the same name first
        db.session.rollback()
        chat = find_api_chat(owner_id, session_id)
    return chat


def chats_page(owner_id: int, page: int, limit: int, sort_by: str = "created_at",
               descending: bool = True) -> tuple[list[ChatSession], int]:
    column = getattr(ChatSession, sort_by)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(ChatSession)
                              .where(ChatSession.owner_id == owner_id))
    rows = db.session.scalars(sa.select(ChatSession).where(ChatSession.owner_id == owner_id)
                              .order_by(column.desc() if descending else column.asc(), ChatSession.id)
                              .offset((page - 1) * limit).limit(limit))
    return list(rows), total


def rename_chat(chat: ChatSession, title: str) -> ChatSession:
    chat.title = " ".join(title.split())[:MAX_TITLE] or chat.title
    chat.updated_at = utcnow()
    db.session.commit()
    return chat


def delete_chat(owner_id: int, chat_id: str) -> bool:
    """Delete a chat with its runs, messages and calls, unless a run is answering in it right now (a
    worker would be writing into rows that vanish): one statement, so no run can start in between."""
    busy = sa.select(Run.id).where(Run.session_id == chat_id, Run.status.in_(RunStatus.ACTIVE)).exists()
    deleted = db.session.execute(sa.delete(ChatSession).where(
        ChatSession.id == chat_id, ChatSession.owner_id == owner_id, ~busy)).rowcount
    db.session.commit()
    return deleted == 1
