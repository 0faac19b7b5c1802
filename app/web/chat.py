"""The chat UI: pages, htmx fragments, decisions, and the run's event stream (SSE)."""
from __future__ import annotations

import time

from flask import (Blueprint, Response, abort, current_app, redirect, render_template, request,
                   stream_with_context, url_for)
from flask_login import current_user, login_user
from sqlalchemy.exc import DBAPIError

from app import chats
from app.agent import events, runner
from app.agent.runner import RunError
from app.extensions import db, login_manager
from app.models import Account, Run, RunStatus
from app.web.stream import render_event, sse

bp = Blueprint("chat", __name__)

PING_SECONDS = 15.0
# How often a stream re-reads the database when no wake-up came: the safety net for runs executed by
# another process (SQLite), or while the PostgreSQL listener reconnects.
POLL_SECONDS = 1.0
POLL_SECONDS_LISTENING = 5.0


@login_manager.user_loader
def load_account(account_id: str):
    try:
        return db.session.get(Account, int(account_id))
    except DBAPIError:  # the database is down: treat as signed out so the 503 page can render
        return None


@bp.before_app_request
def ensure_account():
    """Each browser gets its own guest account (and sees only its own chats) until sign-in lands."""
    if request.endpoint in (None, "static") or current_user.is_authenticated:
        return
    account = Account()
    db.session.add(account)
    db.session.commit()
    login_user(account, remember=True)


def _owned_chat_or_404(chat_id: str):
    return chats.get_chat(current_user.id, chat_id) or abort(404, "No such chat.")


def _owned_run_or_404(run_id: str) -> Run:
    return chats.get_run(current_user.id, run_id) or abort(404, "No such run.")


def _wants_fragment() -> bool:
    return bool(request.htmx)


@bp.get("/")
def index():
    recent = chats.list_chats(current_user.id, limit=1)
    if recent:
        return redirect(url_for("chat.show", chat_id=recent[0].id))
    return render_template("chat/index.html", chats=[], model=current_app.extensions["model"])


@bp.post("/chats")
def create():
    chat = chats.create_chat(current_user.id)
    return redirect(url_for("chat.show", chat_id=chat.id), 303)


@bp.get("/chats/<chat_id>")
def show(chat_id):
    conv = chats.conversation(_owned_chat_or_404(chat_id))
    return render_template("chat/page.html", conv=conv, chats=chats.list_chats(current_user.id),
                           model=current_app.extensions["model"])


@bp.post("/chats/<chat_id>/messages")
def send(chat_id):
    chat = _owned_chat_or_404(chat_id)
    text = request.form.get("message", "")
    first_message = chat.title == "New chat"
    try:
        run, cursor = runner.start_run(chat, text)
    except RunError as exc:
        if not _wants_fragment():
            abort(exc.status, str(exc))
        return render_template("chat/_send_error.html", message=str(exc), text=text), exc.status
    if not _wants_fragment():
        return redirect(url_for("chat.show", chat_id=chat.id), 303)
    return render_template("chat/_run_started.html", chat=chat, run=run, cursor=cursor,
                           first_message=first_message, chats=chats.list_chats(current_user.id))


@bp.post("/runs/<run_id>/calls/<call_id>/<any(approve, reject):decision>")
def decide(run_id, call_id, decision):
    try:
        call, cursor = runner.decide(current_user.id, run_id, call_id, approve=decision == "approve",
                                     reason=request.form.get("reason"))
    except RunError as exc:
        if exc.status == 404:
            abort(404, str(exc))
        if not _wants_fragment():
            abort(exc.status, str(exc))
        return render_template("chat/_call.html", call=exc.call, notice=str(exc)), exc.status
    if not _wants_fragment():
        return redirect(url_for("chat.show", chat_id=call.message.session_id), 303)
    run = db.session.get(Run, run_id)
    return render_template("chat/_decided.html", call=call, run=run, cursor=cursor)


@bp.post("/runs/<run_id>/retry")
def retry(run_id):
    return _run_command(lambda: runner.retry(current_user.id, run_id))


@bp.post("/runs/<run_id>/cancel")
def cancel(run_id):
    return _run_command(lambda: (runner.cancel(current_user.id, run_id), None))


def _run_command(command):
    try:
        run, cursor = command()
    except RunError as exc:
        if exc.status == 404:
            abort(404, str(exc))
        return render_template("errors/_error.html", message=str(exc), status=exc.status), exc.status
    if not _wants_fragment():
        return redirect(url_for("chat.show", chat_id=run.session_id), 303)
    return render_template("chat/_run_state.html", run=run, cursor=cursor)


@bp.get("/runs/<run_id>/events")
def run_events(run_id):
    """Replay the run's events after the client's cursor, then tail new ones until the run stops
    (pauses, completes, fails). A reconnect sends Last-Event-ID and continues without gap or repeat."""
    _owned_run_or_404(run_id)
    try:
        cursor = int(request.headers.get("Last-Event-ID") or request.args.get("after") or 0)
    except ValueError:
        abort(400, "The cursor must be a number.")
    db.session.remove()  # hold no connection while the stream is open
    listener = current_app.extensions.get("run_events_listener")

    def stream():
        nonlocal cursor
        yield "retry: 1000\n\n"  # headers go out at once; reconnect quickly after a restart
        last_sent = time.monotonic()
        while True:
            seen = events.generation(run_id)
            # Status first, then events: every event up to a final status is then already visible.
            status = db.session.scalar(db.select(Run.status).where(Run.id == run_id))
            batch = events.read_after(run_id, cursor)
            chunks = [sse(render_event(event), id=event.seq) for event in batch]
            db.session.remove()
            if batch:
                cursor = batch[-1].seq
                yield "".join(chunks)
                last_sent = time.monotonic()
                continue
            if status not in RunStatus.ACTIVE:
                yield sse("", event="done")
                return
            if time.monotonic() - last_sent >= PING_SECONDS:
                yield ": ping\n\n"
                last_sent = time.monotonic()
            listening = listener is not None and listener.listening.is_set()
            events.wait(run_id, seen, POLL_SECONDS_LISTENING if listening else POLL_SECONDS)

    return Response(stream_with_context(stream()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
