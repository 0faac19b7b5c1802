"""The AgentOS-compatible REST API: the reference's endpoints, form fields, JSON shapes and event
names, without its flaws (see README, "API").

Thin views: parse the request, call the core (`app.agent.commands`, `app.chats`), serialise with
`app.api.serialize`. Authenticated in `app.web.auth` (bearer key), so CSRF-exempt; every error is
JSON `{"detail": "..."}`, and errors about a run also carry the run.
"""
from __future__ import annotations

import json
from contextlib import contextmanager

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, render_template, request
from werkzeug.exceptions import HTTPException, NotFound

from app import chats, limits, readiness
from app.limits import LimitReached
from app.agent import commands
from app.agent.follow import follow
from app.agent.refusals import NotFound as Missing, Refusal, TooMany
from app.api import serialize
from app.api.openapi import spec
from app.api.serialize import ShapeError
from app.extensions import csrf, db
from app.jsontext import BadJson, load_json
from app.models import Message, Run, RunStatus, utcnow
from app.web import auth, errors
from app.web.errors import DATABASE_UNAVAILABLE
from app.web.auth import ApiAuthError
from app.web.stream import follow_run

bp = Blueprint("api", __name__)
csrf.exempt(bp)

PUBLIC = ("api.health", "api.ready", "api.openapi", "api.docs")
API_PREFIXES = ("/agents", "/sessions", "/health", "/ready", "/openapi.json", "/docs")
STARTED_AT = utcnow()


def is_api_request() -> bool:
    """Errors on these paths are JSON (also for URLs that match no route)."""
    return request.blueprint == "api" or request.path.startswith(API_PREFIXES)


@bp.before_request
def authenticate():
    # (NUL characters in any field were refused before this: app.web.inputs.)
    if request.endpoint not in PUBLIC:
        auth.authenticate()


def jsonify(body, status: int = 200) -> Response:
    """JSON in the order the fields were written (the reference's order), not sorted."""
    return Response(json.dumps(body), status, mimetype="application/json")


# --- errors -------------------------------------------------------------------------------------------

def _detail(message: str, status: int, **extra):
    return jsonify({"detail": message, **extra}, status)


@bp.errorhandler(ApiAuthError)
def auth_error(exc: ApiAuthError):
    response = _detail(str(exc), exc.status)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


@bp.errorhandler(ShapeError)
def shape_error(exc: ShapeError):
    return _detail(str(exc), exc.status)


@bp.errorhandler(Refusal)
def refused(exc: Refusal):
    """404s name nothing; a conflict carries the run's current state, so the loser sees what won."""
    if isinstance(exc, TooMany):  # too many active runs: the one 429 path
        db.session.rollback()
        return errors.too_many_requests(LimitReached(str(exc)))
    status = errors.status_of(exc)
    run_id = sa.inspect(exc.run).identity[0] if exc.run is not None and not isinstance(exc, Missing) else None
    db.session.rollback()
    run = db.session.get(Run, run_id) if run_id else None
    if run is None:
        return _detail(str(exc), status)
    return jsonify({**serialize.run_json(serialize.load_run(run)), "detail": str(exc)}, status)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    return _detail(exc.description, exc.code)


# --- request helpers ------------------------------------------------------------------------------------

def _flag(name: str, default: bool) -> bool:
    value = (request.values.get(name) or "").strip().lower()
    if not value:
        return default
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ShapeError(f"{name} must be true or false, not {request.values.get(name)!r}.")


def _session_id() -> str | None:
    session_id = (request.values.get("session_id") or "").strip()
    if len(session_id) > chats.MAX_SESSION_ID:
        raise ShapeError(f"session_id is too long (at most {chats.MAX_SESSION_ID} characters).")
    return session_id or None


def _agent(agent_id: str):
    return chats.agents().get(agent_id) or _not_found(f"Agent {agent_id} not found")


def _not_found(message: str):
    raise NotFound(message)


def _owned_run(agent_id: str, run_id: str) -> tuple[Run, int]:
    """The acting account's run of this agent (and of `session_id`, if sent), else a 404 that says
    nothing about other people's runs."""
    _agent(agent_id)
    account = auth.acting_account()
    run = Run.owned_by(account.id, run_id) if account else None
    session_id = _session_id()
    if run is not None and session_id is not None:
        chat = chats.find_api_chat(account.id, session_id)
        if chat is None or chat.id != run.session_id:
            run = None
    if run is None or run.agent_id != agent_id:
        _not_found(f"No runs found for run ID {run_id}")
    return run, account.id


def _owned_chat(session_id: str):
    account = auth.acting_account()
    chat = chats.find_api_chat(account.id, session_id) if account else None
    return chat or _not_found(f"Session {session_id} not found"), account


def _run(run: Run) -> dict:
    return serialize.run_json(serialize.load_run(run))


def _status_filter() -> list[str] | None:
    status = (request.args.get("status") or "").strip().upper()
    if not status:
        return None
    if status not in serialize.STATUS_FILTER:
        raise ShapeError(f"status must be one of {', '.join(sorted(serialize.STATUS_FILTER))}, not {status!r}.")
    return serialize.STATUS_FILTER[status]


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    value = request.args.get(name)
    try:
        number = default if value in (None, "") else int(value)
    except ValueError:
        raise ShapeError(f"{name} must be a whole number, not {value!r}.") from None
    if not low <= number <= high:
        raise ShapeError(f"{name} must be between {low} and {high}.")
    return number


# --- answering a run: as a stream of events, or as JSON once it settles ----------------------------------

def _answer(run_id: str, cursor: int, release_slot):
    """`release_slot`: the stream slot the view took (limits.take_stream_slot) before it started
    anything, so a refused stream starts no run; None answers with JSON once the run settles."""
    if release_slot is not None:
        response = _event_stream(run_id, cursor)
        response.call_on_close(release_slot)
        return response
    run = _settled(run_id, cursor, current_app.config.get("API_WAIT_SECONDS", 120.0))
    if run is None:  # its session was deleted meanwhile
        _not_found(f"No runs found for run ID {run_id}")
    body = _run(run)
    if run.status == RunStatus.FAILED:
        return jsonify({**body, "detail": run.error or "The run failed."}, 502)
    return jsonify(body, 202 if run.status in RunStatus.ACTIVE else 200)


def _settled(run_id: str, cursor: int, timeout: float) -> Run:
    """Follow the run (holding no database connection between reads) until it pauses, completes,
    fails or is cancelled; after `timeout` answer it as it is (still RUNNING: 202)."""
    for _ in follow(run_id, cursor, render=lambda batch: None, finish=lambda status: None, timeout=timeout,
                    wait_out_errors=False):
        pass
    return db.session.get(Run, run_id)


def _event_stream(run_id: str, cursor: int) -> Response:
    """The run's events after `cursor` as the reference's named events; the stream ends when the run
    pauses, completes, fails or is cancelled, always with the event that says which."""
    ended = False

    def render(batch):
        nonlocal ended
        view = serialize.load_run(db.session.get(Run, run_id))
        frames = [frame for event in batch for frame in serialize.event_frames(view, event)]
        if frames:
            ended = frames[-1]["event"] in serialize.FINAL_EVENTS
        return "".join(serialize.sse(frame) for frame in frames)

    def finish(status):
        if ended or status not in serialize.FINAL_KIND:
            return ""
        view = serialize.load_run(db.session.get(Run, run_id))
        return "".join(serialize.sse(frame) for frame in serialize.final_frames(view, serialize.FINAL_KIND[status]))

    return Response(follow_run(run_id, cursor, render, finish), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@contextmanager
def _stream_slot(stream: bool):
    """Take a stream slot (429 beyond MAX_STREAMS_PER_ACCOUNT) before the command changes anything;
    give it back if the command fails."""
    release = limits.take_stream_slot() if stream else None
    try:
        yield release
    except BaseException:
        if release is not None:
            release()
        raise


# --- runs ---------------------------------------------------------------------------------------------------

@bp.post("/agents/<agent_id>/runs")
@limits.messages
def create_run(agent_id):
    agent = _agent(agent_id)
    message = (request.form.get("message") or "").strip()
    if not message:
        raise ShapeError("message is required.")
    if len(message) > commands.MAX_MESSAGE_CHARS:
        raise ShapeError(f"message is too long ({len(message):,} characters; the limit is "
                         f"{commands.MAX_MESSAGE_CHARS:,}).", 413)
    stream, session_id = _flag("stream", True), _session_id()
    account = auth.acting_account(create=True)
    commands.check_active_runs(account.id)  # the limits first: no new session for a run that cannot start
    with _stream_slot(stream) as release_slot:
        chat = chats.api_chat(account.id, agent.id, session_id)
        if chat.agent_id != agent.id:
            raise ShapeError(f"Session {session_id} belongs to agent {chat.agent_id}.", 409)
        run, cursor = commands.start_run(chat, message)
        run_id = sa.inspect(run).identity[0]  # without a query: the database may be lost by now
    return errors.answer_after_commit(
        lambda: _answer(run_id, cursor, release_slot),
        "The run was started, but it could not be read just now: "
        f"GET /agents/{agent_id}/runs/{run_id} for its state.", api_body={"run_id": run_id, "status": "RUNNING"})


@bp.post("/agents/<agent_id>/runs/<run_id>/continue")
@limits.commands
def continue_run(agent_id, run_id):
    run, owner_id = _owned_run(agent_id, run_id)
    decisions = serialize.parse_tools(request.form.get("tools"))
    with _stream_slot(_flag("stream", True)) as release_slot:
        run, cursor = commands.continue_run(owner_id, run_id, decisions, decider_id=owner_id)
    return errors.answer_after_commit(
        lambda: _answer(run_id, cursor, release_slot),
        "The decisions were recorded, but the run could not be read just now: "
        f"GET /agents/{agent_id}/runs/{run_id} for its state.", api_body={"run_id": run_id})


@bp.post("/agents/<agent_id>/runs/<run_id>/cancel")
@limits.commands
def cancel_run(agent_id, run_id):
    run, owner_id = _owned_run(agent_id, run_id)
    cancelled = commands.cancel(owner_id, run_id)
    return errors.answer_after_commit(lambda: jsonify(_run(cancelled)), "The run was cancelled.",
                                      api_body={"run_id": run_id, "status": "CANCELLED"})


@bp.get("/agents/<agent_id>/runs/<run_id>")
def get_run(agent_id, run_id):
    return jsonify(_run(_owned_run(agent_id, run_id)[0]))


@bp.get("/agents/<agent_id>/runs")
def list_runs(agent_id):
    _agent(agent_id)
    statuses, session_id = _status_filter(), _session_id()
    account = auth.acting_account()
    chat = chats.find_api_chat(account.id, session_id) if account and session_id else None
    if account is None or (session_id and chat is None):
        return jsonify([])
    query = db.select(Run).where(Run.owner_id == account.id, Run.agent_id == agent_id)
    if chat is not None:
        query = query.where(Run.session_id == chat.id)
    if statuses:
        query = query.where(Run.status.in_(statuses))
    runs = db.session.scalars(query.order_by(Run.created_at.desc(), Run.id.desc()).limit(100))
    return jsonify([_run(run) for run in runs])


# --- agents ----------------------------------------------------------------------------------------------

@bp.get("/agents")
def list_agents():
    models = current_app.extensions["models"]
    db.session.remove()  # listing MCP tools may start their servers: hold no transaction meanwhile
    return jsonify([serialize.agent_json(agent, models.for_agent(agent).label, agent.load_tools())
                    for agent in chats.agents().all()])


@bp.get("/agents/<agent_id>")
def get_agent_details(agent_id):
    agent = _agent(agent_id)
    db.session.remove()  # as above
    return jsonify(serialize.agent_json(agent, current_app.extensions["models"].for_agent(agent).label,
                                        agent.load_tools()))


# --- sessions ------------------------------------------------------------------------------------------------

@bp.get("/sessions")
def list_sessions():
    page, limit = _int_arg("page", 1, 1, 100_000), _int_arg("limit", 20, 1, 100)
    sort_by = request.args.get("sort_by") or "created_at"
    if sort_by not in ("created_at", "updated_at"):
        raise ShapeError("sort_by must be created_at or updated_at.")
    sort_order = (request.args.get("sort_order") or "desc").lower()
    if sort_order not in ("asc", "desc"):
        raise ShapeError("sort_order must be asc or desc.")
    session_type = request.args.get("type") or "agent"
    if session_type not in ("agent", "team", "workflow"):
        raise ShapeError("type must be agent, team or workflow.")
    account = auth.acting_account()
    rows, total = chats.chats_page(account.id, page, limit, sort_by, sort_order == "desc") \
        if account and session_type == "agent" else ([], 0)
    return jsonify({
        "data": [serialize.session_json(chat, account.api_user_id) for chat in rows],
        "meta": {"page": page, "limit": limit, "total_pages": -(-total // limit), "total_count": total},
    })


@bp.get("/sessions/<session_id>")
def get_session(session_id):
    chat, account = _owned_chat(session_id)
    messages = db.session.scalars(db.select(Message).where(Message.session_id == chat.id).order_by(Message.id))
    return jsonify(serialize.session_detail_json(chat, account.api_user_id, list(messages)))


@bp.get("/sessions/<session_id>/runs")
def list_session_runs(session_id):
    statuses = _status_filter()
    chat, _ = _owned_chat(session_id)
    query = db.select(Run).where(Run.session_id == chat.id)
    if statuses:
        query = query.where(Run.status.in_(statuses))
    return jsonify([_run(run) for run in db.session.scalars(query.order_by(Run.created_at, Run.id))])


@bp.post("/sessions/<session_id>/rename")
def rename_session(session_id):
    if request.is_json:
        try:
            body = load_json(request.get_data(), "body")
        except BadJson as exc:
            raise ShapeError(str(exc), exc.status) from None
        name = body.get("session_name") if isinstance(body, dict) else None
    else:
        name = request.form.get("session_name")
    if not isinstance(name, str) or not name.strip():
        raise ShapeError("session_name is required.")
    chat, account = _owned_chat(session_id)
    return jsonify(serialize.session_json(chats.rename_chat(chat, name), account.api_user_id))


@bp.delete("/sessions/<session_id>")
def delete_session(session_id):
    chat, account = _owned_chat(session_id)
    if not chats.delete_chat(account.id, chat.id):
        raise ShapeError("The agent is still answering in this session: cancel its run first.", 409)
    return "", 204


# --- the rest ------------------------------------------------------------------------------------------------

@bp.get("/health")
def health():
    return jsonify({"status": "ok", "instantiated_at": serialize.iso(STARTED_AT)})


@bp.get("/ready")
def ready():
    """Readiness, for a load balancer or orchestrator: 503 while the database is unreachable or its
    migrations are pending (`/health` stays liveness: the process answers)."""
    try:
        with db.engine.connect() as connection:
            problem = readiness.problem(connection)
    except DATABASE_UNAVAILABLE as exc:
        current_app.logger.warning("not ready: database unavailable: %s", getattr(exc, "orig", None) or exc)
        problem = "The database is not available."
    if problem:
        response = _detail(problem, 503)
        response.headers["Retry-After"] = "5"
        return response
    return jsonify({"status": "ready"})


@bp.get("/openapi.json")
def openapi():
    return jsonify(spec())


@bp.get("/docs")
def docs():
    return render_template("api/docs.html", spec=spec())
