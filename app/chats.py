"""Reading and creating chats for the UI; every lookup is scoped by its owner (others get None)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta, timezone

import sqlalchemy as sa
from flask import current_app

from app.extensions import db
from app.models import Account, CallStatus, ChatSession, Message, Run, RunStatus, ToolCall, utcnow


def agents():
    """The app's agent registry (app.agent.registry.AgentRegistry)."""
    return current_app.extensions["agents"]


@dataclass
class Conversation:
    chat: ChatSession
    messages: list[Message]
    run: Run | None          # the newest run, which decides the composer's and the stream's state
    cursor: int              # the newest event the messages already include
    has_older: bool = False  # a long chat shows its latest PAGE_MESSAGES; older ones load on scroll


PAGE_MESSAGES = 40


LIVE = ChatSession.deleted_at.is_(None)  # not in the trash


def list_chats(owner_id: int, limit: int = 50, query: str | None = None) -> list[ChatSession]:
    """The owner's chats that have something in them, newest first (an empty chat is no conversation);
    with `query`, those whose title or any message contains it (case-insensitive)."""
    said = sa.select(Message.id).where(Message.session_id == ChatSession.id).exists()
    select = sa.select(ChatSession).where(ChatSession.owner_id == owner_id, LIVE, said)
    query = " ".join((query or "").split())[:200]
    if query:
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        mentions = sa.select(Message.id).where(Message.session_id == ChatSession.id,
                                               Message.content.ilike(pattern, escape="\\")).exists()
        select = select.where(sa.or_(ChatSession.title.ilike(pattern, escape="\\"), mentions))
    return list(db.session.scalars(select.order_by(ChatSession.updated_at.desc()).limit(limit)))


DATE_GROUPS = (("Today", 0), ("Yesterday", 1), ("Previous 7 days", 7), ("Previous 30 days", 30))


def group_by_date(items: list[ChatSession], today: date) -> list[tuple[str, list[ChatSession]]]:
    """Chats under "Today", "Yesterday", "Previous 7 days", "Previous 30 days", then by month."""
    groups: dict[str, list[ChatSession]] = {}
    for chat in items:
        age = (today - chat.updated_at.date()).days
        label = next((name for name, days in DATE_GROUPS if age <= days), None) or chat.updated_at.strftime("%B %Y")
        groups.setdefault(label, []).append(chat)
    return list(groups.items())


def blank_conversation(agent) -> Conversation:
    """What a new chat with `agent` looks like before its first message: nothing stored yet."""
    return Conversation(ChatSession(title="New chat", agent_id=agent.id), [], None, 0)


def get_chat(owner_id: int, chat_id: str) -> ChatSession | None:
    return db.session.scalar(sa.select(ChatSession).where(ChatSession.id == chat_id,
                                                          ChatSession.owner_id == owner_id, LIVE))


def get_chat_heading_list(owner_id: int, chat_id: str, lock_owner: bool = False) -> tuple[ChatSession, bool] | None:
    """The owner's chat, and whether it already heads their chat list (no other listed chat is as new),
    in one statement: a message sent to it then leaves the list as it is. `lock_owner`: the statement
    also takes the owner's account row lock, which starting a run takes first (the caller then says so:
    `commands.start_run(owner_locked=True)`)."""
    statement = _HEADING_LIST_LOCKING_OWNER if lock_owner else _HEADING_LIST
    row = db.session.execute(statement, {"owner_id": owner_id, "chat_id": chat_id}).one_or_none()
    return (row[0], bool(row[1])) if row is not None else None


def _heading_list_statement() -> sa.Select:
    """Built once (an aliased class's statement costs as much to build as to run)."""
    other = sa.orm.aliased(ChatSession)
    owner_id, chat_id = sa.bindparam("owner_id"), sa.bindparam("chat_id")
    said = sa.select(Message.id).where(Message.session_id == other.id).exists()
    newer = sa.select(other.id).where(other.owner_id == owner_id, other.deleted_at.is_(None), other.id != chat_id,
                                      other.updated_at >= ChatSession.updated_at, said).exists()
    return sa.select(ChatSession, ~newer).where(ChatSession.id == chat_id, ChatSession.owner_id == owner_id, LIVE)


def _locking_owner(query: sa.Select) -> sa.Select:
    """`query` (of a chat) also taking its owner's account row lock: the lock starting a run takes first."""
    return query.join(Account, Account.id == ChatSession.owner_id).with_for_update(of=Account)


_HEADING_LIST = _heading_list_statement()
_HEADING_LIST_LOCKING_OWNER = _locking_owner(_HEADING_LIST)


def create_chat(owner_id: int, agent_id: str | None = None) -> ChatSession:
    """A new chat with this agent (the first agent if None); LookupError for an unknown agent."""
    agent_id = agent_id or agents().default().id
    if agents().get(agent_id) is None:
        raise LookupError(agent_id)
    chat = ChatSession(owner_id=owner_id, agent_id=agent_id)
    db.session.add(chat)
    db.session.commit()
    return chat


def conversation(chat: ChatSession) -> Conversation:
    """The whole chat as stored, plus the event cursor it corresponds to.

    Read in one snapshot, so text streamed while the page renders is either in the page or after the
    cursor, never both and never neither (REPEATABLE READ on PostgreSQL; SQLite reads are snapshots)."""
    db.session.commit()
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    run = Run.latest_in(chat.id)
    latest = list(db.session.scalars(sa.select(Message).where(Message.session_id == chat.id)
                                     .order_by(Message.id.desc()).limit(PAGE_MESSAGES + 1)))
    # The transaction stays open while the page renders, so lazy loads read the same snapshot.
    return Conversation(chat, latest[:PAGE_MESSAGES][::-1], run, run.last_seq if run else 0,
                        has_older=len(latest) > PAGE_MESSAGES)


def messages_before(chat: ChatSession, before: int) -> tuple[list[Message], bool]:
    """Up to PAGE_MESSAGES messages older than message `before`, oldest first; and whether there are more."""
    rows = list(db.session.scalars(sa.select(Message).where(Message.session_id == chat.id, Message.id < before)
                                   .order_by(Message.id.desc()).limit(PAGE_MESSAGES + 1)))
    return rows[:PAGE_MESSAGES][::-1], len(rows) > PAGE_MESSAGES


def failure_headline(run) -> str | None:
    """A failed run's headline: "The model could not be reached" when a model call failed before the
    run said anything at all (no words, no tool calls), else None (the error says enough)."""
    if run is None or "model" not in (run.error or "").lower():
        return None
    said = db.session.scalar(sa.select(sa.func.count()).select_from(Message).where(
        Message.run_id == run.id, Message.role == "assistant", Message.content != ""))
    called = db.session.scalar(sa.select(sa.func.count()).select_from(ToolCall).where(ToolCall.run_id == run.id))
    return None if said or called else "The model could not be reached."


# --- The REST API names chats by the session_id a client chose (per owner), or by our id -------------

MAX_SESSION_ID = 200
MAX_TITLE = 200


def find_api_chat(owner_id: int, session_id: str, lock_owner: bool = False) -> ChatSession | None:
    """The owner's chat with this id, else the one the client named so (one statement). `lock_owner`:
    when found, also take the owner's account row lock (as `get_chat_heading_list`)."""
    return db.session.scalar(_API_CHAT[lock_owner], {"owner_id": owner_id, "session_id": session_id})


def find_api_run(owner_id: int, run_id: str, session_id: str | None) -> Run | None:
    """The owner's run, if it is in the chat `find_api_chat` finds for `session_id` (in any of theirs
    for None), in one statement."""
    return db.session.scalar(_API_RUN[session_id is not None],
                             {"owner_id": owner_id, "run_id": run_id, "session_id": session_id})


def find_api_run_to_decide(owner_id: int, run_id: str, session_id: str | None
                           ) -> tuple[Run, list[ToolCall] | None] | None:
    """`find_api_run`, read afresh under the run's row lock (as `Run.owned_by`), with its calls when
    the same statement could read them (`Run.read_locked_with_calls`)."""
    return Run.read_locked_with_calls(_API_RUN_TO_DECIDE[session_id is not None],
                                      {"owner_id": owner_id, "run_id": run_id, "session_id": session_id})


# The API's lookups are built once, run with the parameters owner_id, session_id and run_id (building
# one cost about as much as running it).

def _api_chat() -> sa.Select:
    session_id = sa.bindparam("session_id")
    by_id = ChatSession.id == session_id
    return sa.select(ChatSession).where(
        ChatSession.owner_id == sa.bindparam("owner_id"), LIVE,
        sa.or_(by_id, ChatSession.external_id == session_id)).order_by(by_id.desc()).limit(1)


def _api_run(in_session: bool) -> sa.Select:
    query = sa.select(Run).where(Run.id == sa.bindparam("run_id"), Run.owner_id == sa.bindparam("owner_id"))
    if in_session:
        query = query.where(Run.session_id == _api_chat().with_only_columns(ChatSession.id).scalar_subquery())
    return query


_API_CHAT = {False: _api_chat(), True: _locking_owner(_api_chat())}
_API_RUN = {in_session: _api_run(in_session) for in_session in (False, True)}
_API_RUN_TO_DECIDE = {
    in_session: Run.locked_with_calls(_api_run(in_session).with_for_update(of=Run)
                                      .execution_options(populate_existing=True))
    for in_session in (False, True)}


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
                              .where(ChatSession.owner_id == owner_id, LIVE))
    rows = db.session.scalars(sa.select(ChatSession).where(ChatSession.owner_id == owner_id, LIVE)
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


# --- Deleting with undo (the browser) -----------------------------------------------------------------

PURGE_AFTER = timedelta(hours=1)  # how long a deleted chat can still be brought back


def trash_chat(owner_id: int, chat_id: str) -> str:
    """Delete a chat so that it can be restored for a while: "trashed"; "deleted" for good when it has a
    name an API client chose (a new session of that name must be possible at once); "busy" while a run
    answers in it; "missing". Chats trashed long ago are purged now."""
    chat = get_chat(owner_id, chat_id)
    if chat is None:
        return "missing"
    for old in db.session.scalars(sa.select(ChatSession.id).where(
            ChatSession.owner_id == owner_id, ChatSession.deleted_at < utcnow() - PURGE_AFTER)).all():
        _purge(owner_id, old)
    if chat.external_id:
        return "deleted" if delete_chat(owner_id, chat_id) else "busy"
    busy = sa.select(Run.id).where(Run.session_id == chat_id, Run.status.in_(RunStatus.ACTIVE)).exists()
    trashed = db.session.execute(sa.update(ChatSession).where(
        ChatSession.id == chat_id, ChatSession.owner_id == owner_id, LIVE, ~busy).values(deleted_at=utcnow())).rowcount
    db.session.commit()
    return "trashed" if trashed == 1 else "busy"


def restore_chat(owner_id: int, chat_id: str) -> ChatSession | None:
    restored = db.session.execute(sa.update(ChatSession).where(
        ChatSession.id == chat_id, ChatSession.owner_id == owner_id, ChatSession.deleted_at.is_not(None))
        .values(deleted_at=None)).rowcount
    db.session.commit()
    return get_chat(owner_id, chat_id) if restored else None


def trashed_chat(owner_id: int, chat_id: str) -> ChatSession | None:
    return db.session.scalar(sa.select(ChatSession).where(
        ChatSession.id == chat_id, ChatSession.owner_id == owner_id, ChatSession.deleted_at.is_not(None)))


def _purge(owner_id: int, chat_id: str) -> None:
    db.session.execute(sa.delete(ChatSession).where(ChatSession.id == chat_id, ChatSession.owner_id == owner_id))
    db.session.commit()


# --- Export ------------------------------------------------------------------------------------------

def export_data(chat: ChatSession) -> dict:
    """The whole chat as plain data: messages with their tool calls and decisions (JSON export)."""
    messages = db.session.scalars(sa.select(Message).where(Message.session_id == chat.id).order_by(Message.id))
    return {
        "id": chat.id, "title": chat.title, "agent_id": chat.agent_id,
        "created_at": _iso(chat.created_at), "updated_at": _iso(chat.updated_at),
        "messages": [{
            "role": m.role, "content": m.content, "state": m.state, "created_at": _iso(m.created_at),
            "tool_calls": [{
                "name": c.name, "arguments": c.arguments if c.arguments is not None else c.raw_arguments,
                "status": c.status, "decided_by": c.decided_by, "decided_at": _iso(c.decided_at),
                "decider": c.decider.display_name if c.decider else None,
                "reason": c.reason, "result": c.result, "error": c.error,
            } for c in m.tool_calls],
        } for m in messages],
    }


def export_markdown(chat: ChatSession, agent_name: str) -> str:
    data = export_data(chat)
    lines = [f"# {data['title']}", "", f"Exported from Agent Chat. Started {data['created_at']}.", ""]
    for m in data["messages"]:
        if m["role"] == "assistant" and not m["content"] and not m["tool_calls"]:
            continue  # a model call that failed before its first word
        lines += [f"## {'You' if m['role'] == 'user' else agent_name} · {m['created_at']}", ""]
        if m["content"]:
            lines += [m["content"], ""]
        for call in m["tool_calls"]:
            lines += [f"> **Tool call** `{call['name']}` — {call['status']}"
                      + (f" ({call['decider'] or call['decided_by']}, {call['decided_at']})" if call["decided_at"] else ""),
                      ">",
                      "> ```json", *[f"> {line}" for line in json.dumps(call["arguments"], indent=2,
                                                                      ensure_ascii=False).splitlines()], "> ```"]
            for label, key in (("Reason", "reason"), ("Result", "result"), ("Error", "error")):
                if call[key]:
                    lines += [">", f"> {label}: " + call[key].replace("\n", "\n> ")]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _iso(moment) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat()


# --- Regenerate, edit and resend ----------------------------------------------------------------------

def resend(chat: ChatSession, text: str | None):
    """Answer the person's last message again (`text` None: regenerate) or an edited version of it
    (`text`): that message and everything after it stay in the chat, marked superseded (shown as an
    earlier version, left out of the model's context), and a new run starts with the message.

    Refused (Conflict) while the agent works or waits for a decision, and when a confirmed tool
    already ran in the exchange: the model would no longer know that data changed."""
    from app.agent import commands
    from app.agent.refusals import Conflict, Refusal
    from app.agent.context import SUPERSEDED

    last_user = db.session.scalar(sa.select(Message).where(
        Message.session_id == chat.id, Message.role == "user", Message.state != SUPERSEDED)
        .order_by(Message.id.desc()).limit(1))
    if last_user is None:
        raise Conflict("There is no message to answer again yet.")
    latest = Run.latest_in(chat.id)
    if latest is not None and (latest.is_active or latest.status == RunStatus.PAUSED):
        raise Conflict("The agent is still on it: decide its cards or press Stop first.", run=latest)
    exchange = sa.select(Message.id).where(Message.session_id == chat.id, Message.id >= last_user.id,
                                           Message.state != SUPERSEDED)
    ran = db.session.scalar(sa.select(ToolCall.name).where(
        ToolCall.message_id.in_(exchange), ToolCall.requires_confirmation,
        ToolCall.status.in_([CallStatus.APPROVED, CallStatus.EXECUTING, CallStatus.DONE,
                             CallStatus.OUTCOME_UNKNOWN])).limit(1))
    if ran:
        raise Conflict(f"This exchange ran {ran}, which may have changed data, so it cannot be answered "
                       "again: send a new message instead.")
    text = last_user.content if text is None else text
    db.session.execute(sa.update(Message).where(Message.id.in_(exchange)).values(state=SUPERSEDED)
                       .execution_options(synchronize_session=False))
    try:
        return commands.start_run(chat, text)  # commits the superseding with the new message, or not at all
    except Refusal:
        db.session.rollback()
        raise
