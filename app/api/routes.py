"""The AgentOS-compatible REST API's routes: the reference's endpoints, form fields, JSON shapes and
event names, without its flaws (see README, "API").

Thin views: parse the request into its model (`app.api.request_models`), call the core (through
`app.api.core`), answer with `app.api.serialize`'s dicts. Authenticated in `app.web.auth` (bearer key),
so CSRF-exempt; every error is JSON `{"detail": "..."}` (`app.api.errors`).
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, render_template, request
from werkzeug.exceptions import NotFound

from app import limits, readiness
from app.api import core, errors, serialize
from app.api import request_models as rq
from app.api.errors import ApiError, detail, jsonify
from app.api.openapi import spec
from app.api.run_views import NewRunChat, Remembered, Tracked
from app.extensions import begin_reads, csrf, db
from app.jsontext import BadJson, load_json
from app.models import Message, Run, RunStatus, new_id, utcnow
from app.web import auth
from app.web.errors import DATABASE_UNAVAILABLE, answer_after_commit

bp = Blueprint("api", __name__)
csrf.exempt(bp)
bp.record_once(lambda state: state.app.extensions.setdefault("api_run_views", Remembered()))

PUBLIC = ("api.health", "api.ready", "api.openapi", "api.docs")
STARTED_AT = utcnow()


@bp.before_request
def authenticate():
    # (NUL characters in any field were refused before this: app.web.inputs.)
    if request.endpoint not in PUBLIC:
        auth.authenticate()


def _run(run: Run) -> dict:
    """The run's JSON: as this process last answered it if `run` (just read) is still at that event
    (`run_views`), else read."""
    view = Tracked.remembered(current_app.extensions["api_run_views"], run, auth.acting_account()) \
        or serialize.load_run(run)
    return serialize.run_json(view)


errors.register(bp, _run)


# --- request helpers ------------------------------------------------------------------------------------

def _form(model):
    return rq.parse(model, request.form.to_dict())


def _query(model):
    return rq.parse(model, request.args.to_dict())


def _agent(agent_id: str):
    return core.agents().get(agent_id) or _not_found(f"Agent {agent_id} not found")


def _not_found(message: str):
    raise NotFound(message)


def _owned_run(agent_id: str, run_id: str, session_id: str | None) -> tuple[Run, int]:
    """The acting account's run of this agent (and of `session_id`, if sent), and that account's id;
    else a 404 that says nothing about other people's runs."""
    account = _run_owner(agent_id, run_id)
    return _of_agent(core.find_api_run(account.id, run_id, session_id), agent_id, run_id), account.id


def _owned_run_to_decide(agent_id: str, run_id: str, session_id: str | None) -> tuple[Run, list | None, int]:
    """`_owned_run` for a command: read under the run's row lock, with its calls when the same statement
    could read them (else None: `core.find_api_run_to_decide`)."""
    account = _run_owner(agent_id, run_id)
    run, calls = core.find_api_run_to_decide(account.id, run_id, session_id) or (None, None)
    return _of_agent(run, agent_id, run_id), calls, account.id


def _run_owner(agent_id: str, run_id: str):
    """The acting account, for a run of an agent that exists (404s: no such agent; a user_id nobody
    has used owns no run)."""
    _agent(agent_id)
    return auth.acting_account() or _not_found(f"No runs found for run ID {run_id}")


def _of_agent(run: Run | None, agent_id: str, run_id: str) -> Run:
    if run is None or run.agent_id != agent_id:
        _not_found(f"No runs found for run ID {run_id}")
    return run


def _owned_chat(session_id: str):
    account = auth.acting_account()
    chat = core.find_api_chat(account.id, session_id) if account else None
    return chat or _not_found(f"Session {session_id} not found"), account


# --- answering a run: as a stream of events, or as JSON once it settles ----------------------------------

@dataclass(frozen=True)
class _Watched:
    """The run as the command that wrote to it watched it: the watch opened before it wrote, the run's
    status and (if this process knows it: `run_views`) its view at the answer's cursor, and `keep_for`,
    which keeps the watch open for a streamed answer (`_watching`)."""
    watch: core.Watch
    status: str
    tracked: Tracked
    keep_for: Callable[[Response], Response]


def _answer(run_id: str, cursor: int, release_slot, watched: _Watched | None = None):
    """`release_slot`: the stream slot the view took (limits.take_stream_slot) before it started
    anything, so a refused stream starts no run; None answers with JSON once the run settles."""
    if release_slot is not None:
        response = _event_stream(run_id, cursor, watched)
        response.call_on_close(release_slot)
        return watched.keep_for(response) if watched else response
    view = _settled(run_id, cursor, current_app.config["API_WAIT_SECONDS"], watched)
    if view is None:  # its session was deleted meanwhile
        _not_found(f"No runs found for run ID {run_id}")
    current_app.extensions["api_run_views"].keep(view)
    run, body = view.run, serialize.run_json(view)
    if run.status == RunStatus.FAILED:
        return jsonify({**body, "detail": run.error or "The run failed."}, 502)
    return jsonify(body, 202 if run.status in RunStatus.ACTIVE else 200)


def _settled(run_id: str, cursor: int, timeout: float, watched: _Watched | None) -> serialize.RunView | None:
    """Follow the run (holding no database connection between reads) until it pauses, completes,
    fails or is cancelled; after `timeout` answer it as it is (still RUNNING: 202). Read unless its
    view followed it all the way from memory."""
    tracked = watched.tracked if watched else Tracked(None)
    for _ in core.follow(run_id, cursor, render=tracked.advance, finish=lambda status: None, timeout=timeout,
                         wait_out_errors=False, watch=watched and watched.watch, status=watched and watched.status,
                         relays=False):
        pass
    if (view := tracked.settled()) is not None:
        return view
    begin_reads()  # following it ended the answer's reads: read as it did
    return serialize.load_run_by_id(run_id)


@contextmanager
def _watching(run_id: str):
    """The run's watch, opened before the command writes, so that following it reads nothing from the
    database (`Hub.watch(before_write=True)`) but, unless `run_views` followed it from memory, the run
    itself. A streamed answer is followed after the view returns: `keep_for(response)` leaves the watch
    open until that response is closed."""
    with ExitStack() as stack:
        watch = stack.enter_context(current_app.extensions["run_events"].watch(run_id, before_write=True))

        def keep_for(response: Response) -> Response:
            response.call_on_close(stack.pop_all().close)
            return response

        yield watch, keep_for


def _event_stream(run_id: str, cursor: int, watched: _Watched | None) -> Response:
    """The run's events after `cursor` as the reference's named events; the stream ends when the run
    pauses, completes, fails or is cancelled, always with the event that says which."""
    ended = False
    view = None
    tracked = watched.tracked if watched else Tracked(None)

    def render(batch):
        nonlocal ended, view
        tracked.advance(batch)
        if tracked.view is not None:
            view = tracked.view
        # Text frames name only the run's fixed fields: a batch of words needs no read.
        elif view is None or any(event.type != "text" for event in batch):
            view = serialize.load_run_by_id(run_id)
        frames = [frame for event in batch for frame in serialize.event_frames(view, event)]
        if frames:
            ended = frames[-1]["event"] in serialize.FINAL_EVENTS
            if ended and tracked.settled() is not None:
                current_app.extensions["api_run_views"].keep(view)
        return "".join(serialize.sse(frame) for frame in frames)

    def finish(status):
        if ended or status not in serialize.FINAL_KIND:
            return ""
        view = tracked.settled() or serialize.load_run_by_id(run_id)
        return "".join(serialize.sse(frame) for frame in serialize.final_frames(view, serialize.FINAL_KIND[status]))

    return Response(core.follow_run(run_id, cursor, render, finish, watch=watched and watched.watch,
                                    status=watched and watched.status),
                    mimetype="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@contextmanager
def _stream_slot(stream: bool):
    """Take a stream slot (429 beyond MAX_STREAMS_PER_ACCOUNT) before the command reads or changes
    anything; give it back if the command fails. Taking it ends the request's read transaction
    (`limits.account_key`), so it comes before any row lock the command takes."""
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
    form = _form(rq.RunForm)
    account = auth.acting_account(create=True)
    new_run_id = new_id("run")
    with _watching(new_run_id) as (watch, keep_for):
        with _stream_slot(form.stream) as release_slot:
            # The account's row lock, which starting a run takes first, comes with the chat's read, or
            # with the limits' check (before a new session: none is made for a run that cannot start).
            chat = core.find_api_chat(account.id, form.session_id, lock_owner=True) if form.session_id else None
            if chat is None:
                core.check_active_runs(account.id)
                chat = core.api_chat(account.id, agent.id, form.session_id)
            if chat.agent_id != agent.id:
                raise ApiError(f"Session {form.session_id} belongs to agent {chat.agent_id}.", 409)
            seen = NewRunChat.of(chat, account)
            started = core.start_run(chat, form.message, owner_locked=True, new_run_id=new_run_id)
        run_id = started.run_id
        # (A message that answers a paused run's cards resumes that run: it was not watched.)
        watched = _Watched(watch, RunStatus.QUEUED, Tracked.new_run(seen, started), keep_for) \
            if run_id == new_run_id else None
        return answer_after_commit(
            lambda: _answer(run_id, started.cursor, release_slot, watched),
            "The run was started, but it could not be read just now: "
            f"GET /agents/{agent_id}/runs/{run_id} for its state.", api_body={"run_id": run_id, "status": "RUNNING"})


@bp.post("/agents/<agent_id>/runs/<run_id>/continue")
@limits.commands
def continue_run(agent_id, run_id):
    form = _form(rq.ContinueForm)
    with _watching(run_id) as (watch, keep_for):
        with _stream_slot(form.stream) as release_slot:
            run, calls, owner_id = _owned_run_to_decide(agent_id, run_id, form.session_id)
            status = run.status  # at the cursor: the run as the command reads it, under its lock
            tracked = Tracked.continued(current_app.extensions["api_run_views"], run, calls, auth.acting_account())
            decisions = form.decisions()
            run, cursor = core.continue_run(owner_id, run_id, decisions, decider_id=owner_id,
                                            decider_is_admin=auth.acting_account().is_admin, locked=run,
                                            locked_calls=calls)
        return answer_after_commit(
            lambda: _answer(run_id, cursor, release_slot, _Watched(watch, status, tracked, keep_for)),
            "The decisions were recorded, but the run could not be read just now: "
            f"GET /agents/{agent_id}/runs/{run_id} for its state.", api_body={"run_id": run_id})


@bp.post("/agents/<agent_id>/runs/<run_id>/cancel")
@limits.commands
def cancel_run(agent_id, run_id):
    run, owner_id = _owned_run(agent_id, run_id, _form(rq.CancelForm).session_id)
    cancelled = core.cancel_run(owner_id, run_id)
    return answer_after_commit(lambda: jsonify(_run(cancelled)), "The run was cancelled.",
                               api_body={"run_id": run_id, "status": "CANCELLED"})


@bp.get("/agents/<agent_id>/runs/<run_id>")
def get_run(agent_id, run_id):
    return jsonify(_run(_owned_run(agent_id, run_id, _query(rq.UserQuery).session_id)[0]))


@bp.get("/agents/<agent_id>/runs")
def list_runs(agent_id):
    _agent(agent_id)
    query = _query(rq.RunsQuery)
    account = auth.acting_account()
    chat = core.find_api_chat(account.id, query.session_id) if account and query.session_id else None
    if account is None or (query.session_id and chat is None):
        return jsonify([])
    runs = db.select(Run).where(Run.owner_id == account.id, Run.agent_id == agent_id)
    if chat is not None:
        runs = runs.where(Run.session_id == chat.id)
    if query.status:
        runs = runs.where(Run.status.in_(serialize.STATUS_FILTER[query.status]))
    found = db.session.scalars(runs.order_by(Run.created_at.desc(), Run.id.desc()).limit(100))
    return jsonify([_run(run) for run in found])


# --- agents ----------------------------------------------------------------------------------------------

@bp.get("/agents")
def list_agents():
    models = current_app.extensions["models"]
    db.session.remove()  # listing MCP tools may start their servers: hold no transaction meanwhile
    return jsonify([serialize.agent_json(agent, models.for_agent(agent).label, agent.load_tools())
                    for agent in core.agents().all()])


@bp.get("/agents/<agent_id>")
def get_agent_details(agent_id):
    agent = _agent(agent_id)
    db.session.remove()  # as above
    return jsonify(serialize.agent_json(agent, current_app.extensions["models"].for_agent(agent).label,
                                        agent.load_tools()))


# --- sessions ------------------------------------------------------------------------------------------------

@bp.get("/sessions")
def list_sessions():
    query = _query(rq.SessionsQuery)
    account = auth.acting_account()
    rows, total = core.chats_page(account.id, query.page, query.limit, query.sort_by, query.sort_order == "desc") \
        if account and query.type == "agent" else ([], 0)
    return jsonify({
        "data": [serialize.session_json(chat, account.api_user_id) for chat in rows],
        "meta": {"page": query.page, "limit": query.limit, "total_pages": -(-total // query.limit),
                 "total_count": total},
    })


@bp.get("/sessions/<session_id>")
def get_session(session_id):
    chat, account = _owned_chat(session_id)
    return jsonify(_session_detail(chat, account))


def _session_detail(chat, account) -> dict:
    messages = db.session.scalars(db.select(Message).where(Message.session_id == chat.id).order_by(Message.id))
    return serialize.session_detail_json(chat, account.api_user_id, list(messages))


@bp.get("/sessions/<session_id>/runs")
def list_session_runs(session_id):
    status = _query(rq.RunsQuery).status
    chat, _ = _owned_chat(session_id)
    runs = db.select(Run).where(Run.session_id == chat.id)
    if status:
        runs = runs.where(Run.status.in_(serialize.STATUS_FILTER[status]))
    return jsonify([_run(run) for run in db.session.scalars(runs.order_by(Run.created_at, Run.id))])


@bp.post("/sessions/<session_id>/rename")
def rename_session(session_id):
    if request.is_json:
        try:
            body = load_json(request.get_data(), "body")
        except BadJson as exc:
            raise ApiError(str(exc), exc.status) from None
    else:
        body = request.form.to_dict()
    name = rq.parse(rq.RenameBody, body).session_name
    chat, account = _owned_chat(session_id)
    return jsonify(_session_detail(core.rename_chat(chat, name), account))  # the detail, as the reference


@bp.delete("/sessions/<session_id>")
def delete_session(session_id):
    chat, account = _owned_chat(session_id)
    if not core.delete_chat(account.id, chat.id):
        raise ApiError("The agent is still answering in this session: cancel its run first.", 409)
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
        response = detail(problem, 503)
        response.headers["Retry-After"] = "5"
        return response
    return jsonify({"status": "ready"})


@bp.get("/openapi.json")
def openapi():
    return jsonify(spec())


@bp.get("/docs")
def docs():
    return render_template("api/docs.html", spec=spec())
