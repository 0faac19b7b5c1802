"""How the REST API refuses: always JSON `{"detail": "..."}` (the reference's shape), with the run
for refusals about a run, so the loser of a race sees what won."""
from __future__ import annotations

import json

import sqlalchemy as sa
from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from app.api.core import NotFound, Refusal, TooMany
from app.extensions import db
from app.limits import LimitReached
from app.models import Run
from app.web import errors as web_errors
from app.web.auth import ApiAuthError

API_PREFIXES = ("/agents", "/sessions", "/health", "/ready", "/openapi.json", "/docs")


class ApiError(ValueError):
    """A request the API refuses: `status` (400 malformed JSON, 404, 409, 413, 422) and the detail."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def is_api_request() -> bool:
    """Errors on these paths are JSON (also for URLs that match no route)."""
    return request.blueprint == "api" or request.path.startswith(API_PREFIXES)


def jsonify(body, status: int = 200) -> Response:
    """JSON in the order the fields were written (the reference's order), not sorted."""
    return Response(json.dumps(body), status, mimetype="application/json")


def detail(message: str, status: int, **extra) -> Response:
    return jsonify({"detail": message, **extra}, status)


def register(bp: Blueprint, run_json) -> None:
    """The blueprint's error handlers; `run_json(run)` is the run's JSON, for refusals about a run."""

    @bp.errorhandler(ApiAuthError)
    def auth_error(exc: ApiAuthError):
        response = detail(str(exc), exc.status)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
        return response

    @bp.errorhandler(ApiError)
    def refused(exc: ApiError):
        return detail(str(exc), exc.status)

    @bp.errorhandler(Refusal)
    def run_refused(exc: Refusal):
        """404s name nothing; a conflict carries the run's current state."""
        if isinstance(exc, TooMany):  # too many active runs: the one 429 path
            db.session.rollback()
            return web_errors.too_many_requests(LimitReached(str(exc)))
        status = web_errors.status_of(exc)
        run_id = sa.inspect(exc.run).identity[0] if exc.run is not None and not isinstance(exc, NotFound) else None
        db.session.rollback()
        run = db.session.get(Run, run_id) if run_id else None
        if run is None:
            return detail(str(exc), status)
        return jsonify({**run_json(run), "detail": str(exc)}, status)

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return detail(exc.description, exc.code)

