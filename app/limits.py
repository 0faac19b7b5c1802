"""What one account may do at once, so that nobody can starve the others (README, "Limits").

- Rates (Flask-Limiter, counted in RATELIMIT_STORAGE_URI: per process in memory by default):
  `messages` — messages sent, in the chat or as API runs (RATELIMIT_MESSAGES, per account per
  minute, shared by the browser and the API); `commands` — decisions, continues, retries and stops
  (RATELIMIT_COMMANDS). Apply them as decorators on a view: `@limits.messages`; `@limits.first_messages`
  on New chat's create, which starts a run only when it carries a message.
- Active runs: an account may have MAX_ACTIVE_RUNS runs queued or running at once (checked by the
  core when a run starts or resumes; a run waiting for a decision does not count).
- Open event streams: an account may hold MAX_STREAMS_PER_ACCOUNT per process; a stream beyond that
  is refused with 429 (the streams already open are left alone: closing the oldest would make the
  tabs of one person kick each other out in turn as each reconnects).

Every refusal is a 429 with `Retry-After` and a message, through one error path
(`app.web.errors`, for Flask-Limiter's `RateLimitExceeded` and `LimitReached` alike): JSON `detail` in
the API, the flash in the chat. Sign-in and token limits reuse it: decorate their views with
`limiter.limit(rate_from("SETTING"), key_func=get_remote_address)` or `key_func=account_key`.
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from flask import Flask, current_app, request
from flask_limiter.util import get_remote_address
from flask_login import current_user
from werkzeug.exceptions import TooManyRequests

from app.extensions import end_reads, limiter


class LimitReached(TooManyRequests):
    """A 429 of our own (not a rate): `retry_after` seconds is a hint for the client."""

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


def raise_if_refused(error) -> None:
    """A TooMany refusal (a run beyond MAX_ACTIVE_RUNS) takes the one 429 path: LimitReached."""
    from app.agent.refusals import TooMany
    if isinstance(error, TooMany):
        raise LimitReached(str(error)) from None


def rate_from(setting: str) -> Callable[[], str]:
    """A Flask-Limiter rate read from the app's config when the request is checked."""
    return lambda: current_app.config[setting]


def account_key(create: bool = False) -> str:
    """Whose limits a request counts against: the signed-in account in the browser, the acting
    account in the API, else the client's address. `create`: an API user_id without an account gets
    it now (as the run it starts would), so its first message counts against it too; otherwise such
    a user_id (which owns nothing yet) counts as itself.

    Finding the account may open a transaction; it is ended here, before the limiter counts: under
    gevent the counting may switch greenlets (the memory storage starts its expiry thread, a Redis
    storage does network I/O), and SQLite's write lock held through a switch stalls the worker."""
    if request.blueprint == "api":
        from app.web import auth
        try:
            account = auth.acting_account(create=create)
        except auth.ApiAuthError:  # refused a moment later by the API's own check (401/403/422)
            return f"address:{get_remote_address()}"
        key = f"account:{account.id}" if account is not None else f"api-user:{auth.requested_user_id()}"
    elif current_user.is_authenticated:
        key = f"account:{current_user.id}"
    else:
        key = f"address:{get_remote_address()}"
    end_reads()  # what it read stays loaded (the account is used later, also by a stream)
    return key


def _too_fast(what: str, setting: str) -> Callable[[], str]:
    return lambda: (f"Too many {what}: the limit is {current_app.config[setting]}. "
                    "Wait a moment and try again.")


messages = limiter.shared_limit(rate_from("RATELIMIT_MESSAGES"), scope="messages",
                                key_func=lambda: account_key(create=True),
                                error_message=_too_fast("messages", "RATELIMIT_MESSAGES"))
# New chat's first message (POST /chats with `message`) counts as a message, in the same count; creating
# an empty chat to send into (scripts, tests) does not.
first_messages = limiter.shared_limit(rate_from("RATELIMIT_MESSAGES"), scope="messages",
                                      key_func=lambda: account_key(create=True),
                                      error_message=_too_fast("messages", "RATELIMIT_MESSAGES"),
                                      exempt_when=lambda: "message" not in request.form)
commands = limiter.shared_limit(rate_from("RATELIMIT_COMMANDS"), scope="commands", key_func=account_key,
                                error_message=_too_fast("actions", "RATELIMIT_COMMANDS"))


class StreamSlots:
    """Open event streams per account in this process. A stream takes a slot when its request is
    accepted and gives it back when the server closes the response (the client left, or the run ended)."""

    def __init__(self):
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, key: str, cap: int) -> Callable[[], None]:
        with self._lock:
            if self._open[key] >= cap:
                raise LimitReached(f"Too many open event streams ({cap}): close some tabs of this app, "
                                   "or wait for their runs to finish.", retry_after=15)
            self._open[key] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._open[key] -= 1
                if self._open[key] <= 0:
                    del self._open[key]
        return release

    def count(self, key: str) -> int:
        with self._lock:
            return self._open[key]


def init_app(app: Flask) -> None:
    app.extensions["stream_slots"] = StreamSlots()


def take_stream_slot() -> Callable[[], None]:
    """Count one more open stream for this request's account, or raise LimitReached (429). Returns
    the function that gives the slot back: pass it to `response.call_on_close`."""
    return current_app.extensions["stream_slots"].take(account_key(), current_app.config["MAX_STREAMS_PER_ACCOUNT"])
