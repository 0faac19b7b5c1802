"""The REST API's view of a run kept up to date in memory from this process's own events, so that an
answer given once the run settles (`POST …/runs` and `…/continue` without `stream`) reads nothing.

A command starts the view where it knows the run: a new run as its insert wrote it, a continued run as
this process last answered it (remembered with the event it was current at, and used only if the
run's row, read under its lock by the command, is still at that event). Each event the answer's wait
then reads from memory advances it: this process's writers hand over the rows they wrote with their
events (`Event.calls`, `Event.row`). An event without them (another process's, read from the
database), or one the view does not follow (a failure, a cancel), gives up, and the answer reads the
run (`serialize.load_run_by_id`). Only a paused or completed run is answered from memory: by then
every word of its replies is stored, so the view is the run as a later GET shows it.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace

from app.api import core
from app.api.serialize import RunView, api_session_id, utc
from app.models import Message, Run, RunStatus, ToolCall

REMEMBERED = 256  # runs per process (a continue comes soon after its pause)

_RUN_COLUMNS = tuple(Run.__table__.columns.keys())
_MESSAGE_COLUMNS = tuple(Message.__table__.columns.keys())
_CALL_COLUMNS = tuple(ToolCall.__table__.columns.keys())
_ANSWERED_FROM_MEMORY = (RunStatus.PAUSED, RunStatus.COMPLETED)


def _row(columns: tuple[str, ...], values: dict) -> SimpleNamespace:
    return SimpleNamespace(**{name: values.get(name) for name in columns})


def _copied(columns: tuple[str, ...], row) -> SimpleNamespace:
    return SimpleNamespace(**{name: getattr(row, name) for name in columns})


def _copy(view: RunView) -> RunView:
    """`view` as plain rows of its own (rows read by the ORM, or another view's, are not changed)."""
    return RunView(_copied(_RUN_COLUMNS, view.run), view.agent, view.user_id, view.session_id,
                   [_copied(_CALL_COLUMNS, call) for call in view.calls],
                   [_copied(_MESSAGE_COLUMNS, message) for message in view.messages])


class Remembered:
    """The views this process answered last, by run, with the event each was current at (one per app)."""

    def __init__(self, size: int = REMEMBERED):
        self.size = size
        self._views: OrderedDict[str, tuple[int, RunView]] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, view: RunView) -> None:
        """Remember `view` (read, or followed) as current at its run's `last_seq`."""
        view = _copy(view)
        with self._lock:
            self._views[view.run.id] = (view.run.last_seq, view)
            self._views.move_to_end(view.run.id)
            while len(self._views) > self.size:
                self._views.popitem(last=False)

    def at(self, run_id: str, seq: int) -> RunView | None:
        with self._lock:
            kept = self._views.get(run_id)
        return kept[1] if kept is not None and kept[0] == seq else None


@dataclass(frozen=True, slots=True)
class NewRunChat:
    """What a new run's view takes from its chat and owner, noted before the command commits (which
    expires the ORM's rows: reading them after would read them again)."""
    id: str
    owner_id: int
    agent_id: str
    session_name: str       # the chat as the API names it
    user_id: str | None     # the owner as the API names them

    @classmethod
    def of(cls, chat, account) -> "NewRunChat":
        return cls(chat.id, chat.owner_id, chat.agent_id, api_session_id(chat), account.api_user_id)


class Tracked:
    """One run's view, advanced event by event; `view` None once it cannot follow."""

    def __init__(self, view: RunView | None):
        self.view = view

    @classmethod
    def new_run(cls, chat: "NewRunChat", started) -> "Tracked":
        """A run `core.start_run` just inserted (`started`) in `chat`, before its first event."""
        run = _row(_RUN_COLUMNS, dict(
            id=started.run_id, session_id=chat.id, owner_id=chat.owner_id, agent_id=chat.agent_id,
            status=RunStatus.QUEUED, input=started.message_text, model=started.model, last_seq=0,
            created_at=started.message_at, updated_at=started.message_at))
        return cls(RunView(run, core.agents().get(chat.agent_id), chat.user_id, chat.session_name, [], []))

    @classmethod
    def continued(cls, remembered: Remembered, run: Run, calls: list[ToolCall] | None, account) -> "Tracked":
        """A run a command read under its row lock (with its `calls`, if it read them), as this process
        last answered it, if that answer is still current."""
        kept = remembered.at(run.id, run.last_seq)
        if kept is None:
            return cls(None)
        return cls(_copy(RunView(run, core.agents().get(run.agent_id), account.api_user_id, kept.session_id,
                                 kept.calls if calls is None else calls, kept.messages)))

    @staticmethod
    def remembered(remembered: Remembered, run: Run, owner) -> RunView | None:
        """`run`, just read for its `owner` (the acting account), with its messages and calls as this
        process last answered it, if that answer is still current."""
        kept = remembered.at(run.id, run.last_seq) if owner is not None and owner.id == run.owner_id else None
        if kept is None:
            return None
        return _copy(RunView(run, core.agents().get(run.agent_id), owner.api_user_id, kept.session_id, kept.calls,
                             kept.messages))

    def advance(self, batch) -> None:
        """Follow `batch` (`core.follow`'s render): events in order, after the view's last."""
        if self.view is None:
            return
        for event in batch:
            if not self._apply(event):
                self.view = None
                return
            if event.seq is not None:
                self.view.run.last_seq = event.seq

    def settled(self) -> RunView | None:
        """The view, if it followed every event to a pause or the end."""
        view = self.view
        return view if view is not None and view.run.status in _ANSWERED_FROM_MEMORY else None

    def _apply(self, event) -> bool:
        view, data = self.view, event.data
        if event.seq is not None and event.seq != view.run.last_seq + 1:
            return False
        match event.type:
            case "run_started" | "run_resumed" | "run_paused" | "run_completed":
                view.run.status = core.STATUS_AFTER[event.type]
            case "user_message" | "message_started":
                if event.row is None:
                    return False
                view.messages.append(_row(_MESSAGE_COLUMNS, event.row))
                view.messages.sort(key=lambda message: message.id)
            case "text":
                message = self._message(data.get("message_id"))
                if message is None or data.get("at") is None or data["at"] > len(message.content):
                    return False
                message.content = message.content[:data["at"]] + data.get("text", "")
            case "message_completed":
                message = self._message(data.get("message_id"))
                if message is None or event.row is None:
                    return False
                vars(message).update(event.row)
            case "tool_calls" | "tool_call_updated":
                ids = data.get("call_ids") if event.type == "tool_calls" else [data.get("call_id")]
                if event.calls is None or any(call_id not in event.calls for call_id in ids):
                    return False
                written = {call_id: _row(_CALL_COLUMNS, event.calls[call_id]) for call_id in ids}
                view.calls = [written.pop(call.id, call) for call in view.calls] + list(written.values())
                view.calls.sort(key=lambda call: (utc(call.created_at), call.position))
            case _:
                return False
        return True

    def _message(self, message_id):
        return next((m for m in self.view.messages if m.id == message_id), None)
