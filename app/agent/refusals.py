"""What the core refuses, by kind. The web layer maps each kind to an HTTP status
(`app.web.errors.status_of`); nothing in the core knows of HTTP."""
from __future__ import annotations

from app.models import Run, ToolCall


class Refusal(Exception):
    """A request the core refuses, with a message a person can read. A conflict may carry the run or
    the call as they are now, so the loser of a race sees what won."""

    def __init__(self, message: str, run: Run | None = None, call: ToolCall | None = None):
        super().__init__(message)
        self.run, self.call = run, call


class NotFound(Refusal):
    """No such run or call for this account (another account's looks the same)."""


class Conflict(Refusal):
    """The run or call is not in a state that allows this (already decided, still answering, ...)."""


class Invalid(Refusal):
    """The request itself is wrong (an empty message, an unknown call, arguments that do not validate)."""


class TooLarge(Refusal):
    """A message longer than the limit."""


class TooMany(Refusal):
    """The account already has MAX_ACTIVE_RUNS runs queued or running."""


class Forbidden(Refusal):
    """Allowed for someone else, not for this person (a call only an admin may decide)."""


class Expired(Conflict):
    """The call's approval expired before this decision (a conflict: the call is settled)."""
