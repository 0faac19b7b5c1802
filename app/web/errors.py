"""Errors people can read: a small page (or fragment, for htmx) and never a stack trace."""
import time
from collections.abc import Callable

from flask import Flask, current_app, g, jsonify as app_json, make_response, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, TooManyRequests

from app.agent import refusals
from app.extensions import begin_reads, db

# The database is down, unreachable or locked for too long (DBAPIError), or every connection of this
# worker's pool stayed busy for DATABASE_POOL_TIMEOUT (PoolTimeout): a 503 either way, never a 500.
DATABASE_UNAVAILABLE = (DBAPIError, PoolTimeout)


# The one mapping from the core's refusals to HTTP (the HTML views and the REST API both use it).
REFUSAL_STATUS = {refusals.NotFound: 404, refusals.Forbidden: 403, refusals.Conflict: 409, refusals.Invalid: 422,
                  refusals.TooLarge: 413, refusals.TooMany: 429}


def status_of(refusal: refusals.Refusal) -> int:
    return next(status for kind, status in REFUSAL_STATUS.items() if isinstance(refusal, kind))


def register(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error):
        return _render("Your session expired. Reload the page and try again.", 400)

    @app.errorhandler(HTTPException)
    def http_error(error):
        return _render(error.description, error.code)

    # Found before any blueprint's HTTPException handler (Flask looks handlers up by status code first).
    app.register_error_handler(TooManyRequests, too_many_requests)

    @app.errorhandler(DBAPIError)
    @app.errorhandler(PoolTimeout)
    def database_unavailable(error):
        """The database is down, unreachable, locked for too long, or has no free connection for us:
        nothing was half-written (the transaction rolled back), and the same request can simply be
        sent again."""
        busy = isinstance(error, PoolTimeout)  # the database is fine; this worker has too much to do
        app.logger.warning("%s: %s", "no free database connection" if busy else "database unavailable",
                           getattr(error, "orig", None) or error)
        g.database_unavailable = True
        _discard_session()
        response = _render("The server is busy right now. Please try again in a moment." if busy else
                           "The database is not available right now. Please try again in a moment.", 503)
        response[0].headers["Retry-After"] = "5"  # type: ignore[index]
        return response

    @app.errorhandler(Exception)
    def unexpected(error):
        app.logger.exception("unhandled error")
        _discard_session()
        return _render("Something went wrong on the server.", 500)


def answer_after_commit(render: Callable[[], ResponseReturnValue], done: str, call_id: str | None = None,
                        api_body: dict | None = None) -> ResponseReturnValue:
    """Render the answer to a command whose change is already committed. If the database is lost by
    then (PostgreSQL backends terminated mid-burst), a 503 would say "nothing happened, try again"
    while it did: answer with what was done instead (`done`, for the person; in the API a 202 with
    `api_body` and `done` as its detail), from values known without the database.

    The answer only reads: on PostgreSQL outside a transaction (`begin_reads`), as psycopg forgets its
    prepared statements at every ROLLBACK, and the one that ended the answer's reads at the request's
    end had every hot statement planned anew."""
    try:
        begin_reads()
        return render()
    except DATABASE_UNAVAILABLE as exc:
        current_app.logger.warning("committed, then the database was lost before the answer: %s",
                                   getattr(exc, "orig", None) or exc)
        g.database_unavailable = True
        _discard_session()
        from app.api.errors import is_api_request
        if is_api_request():
            return app_json({**(api_body or {}), "detail": done}), 202
        if request.headers.get("HX-Request"):
            return render_template("chat/_recorded.html", message=done, call_id=call_id), 200
        return render_template("errors/page.html", message=done, status="Done"), 200


def too_many_requests(error: TooManyRequests):
    """Every 429 (Flask-Limiter's RateLimitExceeded, app.limits.LimitReached): the message, and
    Retry-After in seconds; JSON `detail` for the API, the page's flash in the chat."""
    response, status = _render(error.description, 429)
    response.headers["Retry-After"] = str(_retry_after(error))
    return response, status


def _retry_after(error) -> int:
    if getattr(error, "retry_after", None):
        return int(error.retry_after)
    from app.extensions import limiter
    breached = limiter.current_limit  # the rate this request broke, and when its window resets
    return max(1, int(breached.reset_at - time.time()) + 1) if breached else 5


def _discard_session() -> None:
    try:
        db.session.rollback()
    except Exception:  # the connection is gone with the database; the pool drops it
        pass


def _render(message: str, status: int):
    from app.api.errors import is_api_request
    if request.accept_mimetypes.best == "application/json" or is_api_request():
        return app_json({"detail": message}), status
    template = "errors/_error.html" if request.headers.get("HX-Request") else "errors/page.html"
    return make_response(render_template(template, message=message, status=status)), status
