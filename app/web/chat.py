"""The chat UI: pages, htmx fragments, decisions, and the run's event stream (SSE)."""
from __future__ import annotations

import json

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.utils import secure_filename

from app import chats
from app.agent import runner
from app.agent.runner import RunError
from app.extensions import db
from app.models import Run, utcnow
from app.web import cards
from app.web.stream import follow_run, render_batch, sse

bp = Blueprint("chat", __name__)
cards.register(bp)
bp.add_app_template_global(chats.failure_headline, "failure_headline")
bp.add_app_template_global(lambda items: chats.group_by_date(items, utcnow().date()), "chat_dates")


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
    return new()


@bp.get("/chats/new")
def new():
    """A blank chat to type into; the chat itself is created with its first message (no empty rows).
    After a delete (`deleted=<id>`) it offers to undo it."""
    agent_id = request.args.get("agent_id") or chats.DEFAULT_AGENT
    deleted = request.args.get("deleted")
    return render_template("chat/page.html", conv=chats.blank_conversation(), agent_id=agent_id,
                           deleted=deleted and chats.trashed_chat(current_user.id, deleted),
                           chats=chats.list_chats(current_user.id), model=current_app.extensions["model"])


@bp.get("/chats/search")
def search():
    """Chats whose title or messages contain `q`: the sidebar's list (htmx), or a page with it."""
    query = request.args.get("q", "")
    found = chats.list_chats(current_user.id, query=query)
    if _wants_fragment():
        return render_template("chat/_chat_list.html", chats=found, query=query)
    return render_template("chat/page.html", conv=chats.blank_conversation(), chats=found, query=query,
                           model=current_app.extensions["model"])


@bp.post("/chats/<chat_id>/title")
def rename(chat_id):
    chat = _owned_chat_or_404(chat_id)
    title = " ".join(request.form.get("title", "").split())
    if not title:
        message = "A chat needs a title."
        if not _wants_fragment():
            abort(422, message)
        return render_template("chat/_chat_menu.html", chat=chat, error=message, oob=True), 422
    chats.rename_chat(chat, title)
    if not _wants_fragment():
        return redirect(url_for("chat.show", chat_id=chat.id), 303)
    return render_template("chat/_renamed.html", chat=chat, chats=chats.list_chats(current_user.id))


@bp.post("/chats/<chat_id>/delete")
def delete(chat_id):
    outcome = chats.trash_chat(current_user.id, chat_id)
    if outcome == "missing":
        abort(404, "No such chat.")
    if outcome == "busy":
        message = "The agent is still answering in this chat. Stop it first, then delete the chat."
        if not _wants_fragment():
            abort(409, message)
        return render_template("errors/_error.html", message=message, status=409), 409
    target = url_for("chat.new", deleted=chat_id if outcome == "trashed" else None)
    if _wants_fragment():
        return "", 204, {"HX-Redirect": target}
    return redirect(target, 303)


@bp.post("/chats/<chat_id>/restore")
def restore(chat_id):
    chat = chats.restore_chat(current_user.id, chat_id) or abort(404, "No such chat.")
    return redirect(url_for("chat.show", chat_id=chat.id), 303)


@bp.get("/chats/<chat_id>/export.<any(md, json):kind>")
def export(chat_id, kind):
    chat = _owned_chat_or_404(chat_id)
    filename = secure_filename(chat.title)[:60] or "chat"
    if kind == "json":
        body, mimetype = json.dumps(chats.export_data(chat), indent=2, ensure_ascii=False), "application/json"
    else:
        body, mimetype = chats.export_markdown(chat, "Data Manager"), "text/markdown"
    return Response(body, mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="{filename}.{kind}"'})


@bp.get("/chats/<chat_id>/older")
def older(chat_id):
    """Messages before `before` (a message id), newest last, with the next "older" loader (long chats)."""
    chat = _owned_chat_or_404(chat_id)
    try:
        before = int(request.args.get("before", ""))
    except ValueError:
        abort(422, "`before` must be a message id.")
    messages, more = chats.messages_before(chat, before)
    return render_template("chat/_older.html", chat=chat, messages=messages, more=more)


@bp.post("/chats")
def create():
    """Create a chat with its first message and start the reply (the page's composer on /chats/new)."""
    text = request.form.get("message")
    agent_id = request.form.get("agent_id") or chats.DEFAULT_AGENT
    try:
        chat = chats.create_chat(current_user.id, agent_id=agent_id)
    except LookupError:
        abort(404, "No such agent.")
    if text is None:  # the scripted way (tests, the live client): an empty chat to send into
        return redirect(url_for("chat.show", chat_id=chat.id), 303)
    try:
        runner.start_run(chat, text)
    except RunError as exc:
        chats.delete_chat(current_user.id, chat.id)  # nothing was said: leave no empty chat behind
        if not _wants_fragment():
            abort(exc.status, str(exc))
        return render_template("chat/_send_error.html", message=str(exc), text=text), exc.status
    target = url_for("chat.show", chat_id=chat.id)
    if _wants_fragment():
        # A full page load: the new chat's page, its sidebar entry and its stream, focus in the box.
        return "", 204, {"HX-Redirect": target}
    return redirect(target, 303)


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


@bp.post("/chats/<chat_id>/resend")
def resend(chat_id):
    """Regenerate the last reply (no `message`) or resend the last message edited (`message`)."""
    chat = _owned_chat_or_404(chat_id)
    try:
        chats.resend(chat, request.form.get("message"))
    except RunError as exc:
        if not _wants_fragment():
            abort(exc.status, str(exc))
        return render_template("errors/_error.html", message=str(exc), status=exc.status), exc.status
    target = url_for("chat.show", chat_id=chat.id)
    if _wants_fragment():
        return "", 204, {"HX-Redirect": target}  # the page anew: earlier versions dimmed, the new reply streaming
    return redirect(target, 303)


@bp.post("/runs/<run_id>/calls/<call_id>/<any(approve, reject):decision>")
def decide(run_id, call_id, decision):
    try:
        # An admin may decide anyone's call (the run's owner is then not the one who decides).
        call, cursor = runner.decide(None if current_user.is_admin else current_user.id, run_id, call_id,
                                     approve=decision == "approve", reason=request.form.get("reason"),
                                     decider_id=current_user.id)
    except RunError as exc:
        if exc.status == 404:
            abort(404, str(exc))
        if not _wants_fragment():
            abort(exc.status, str(exc))
        return render_template("chat/_call.html", call=exc.call, notice=str(exc), inbox=_from_inbox()), exc.status
    if not _wants_fragment():
        if _from_inbox():
            return redirect(url_for("admin.show"), 303)
        return redirect(url_for("chat.show", chat_id=call.message.session_id), 303)
    if _from_inbox():  # the admin page has no chat around the card to update
        return render_template("chat/_call.html", call=call, inbox=True)
    run = db.session.get(Run, run_id)
    return render_template("chat/_decided.html", call=call, run=run, cursor=cursor)


def _from_inbox() -> bool:
    return request.form.get("view") == "inbox"


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
    (pauses, completes, fails). A reconnect sends Last-Event-ID and continues without gap or repeat.

    `hold=1` (the page's stream while a run waits for a decision) stays open through the pause, so a
    decision made elsewhere (another tab, the REST API) shows up live."""
    _owned_run_or_404(run_id)
    try:
        cursor = int(request.headers.get("Last-Event-ID") or request.args.get("after") or 0)
    except ValueError:
        abort(400, "The cursor must be a number.")
    last_text: dict[int, float] = {}  # this stream's reply renders (throttled, see render_batch)
    stream = follow_run(
        run_id, cursor,
        render=lambda batch: "".join(sse(html, id=event.seq) for event, html in render_batch(batch, last_text)),
        finish=lambda status: sse("", event="done"),
        first="retry: 1000\n\n",  # headers go out at once; reconnect quickly after a restart
        hold_paused=request.args.get("hold") == "1")
    return Response(stream, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
