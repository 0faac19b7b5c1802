"""The chat UI: pages, htmx fragments, decisions, and the run's event stream (SSE)."""
from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user

from app import chats, limits
from app.agent import runner
from app.agent.runner import RunError
from app.extensions import db
from app.models import Run
from app.web.errors import answer_after_commit
from app.web.stream import follow_run, render_event, sse

bp = Blueprint("chat", __name__)


def _owned_chat_or_404(chat_id: str):
    return chats.get_chat(current_user.id, chat_id) or abort(404, "No such chat.")


def _owned_run_or_404(run_id: str) -> Run:
    return chats.get_run(current_user.id, run_id) or abort(404, "No such run.")


def _wants_fragment() -> bool:
    return bool(request.htmx)


def _agent_page(template: str, agent=None, **context):
    """A page in the chat layout: its header shows `agent` (the first agent if None) and its model."""
    agent = agent or chats.agents().default()
    for shown in chats.agents().all():
        shown.warm_tools()  # MCP servers list their tools in the background, never inside this request
    return render_template(template, agent=agent, agents=chats.agents().all(),
                           model=current_app.extensions["models"].for_agent(agent), **context)


@bp.get("/")
def index():
    recent = chats.list_chats(current_user.id, limit=1)
    if recent:
        return redirect(url_for("chat.show", chat_id=recent[0].id))
    return _agent_page("chat/index.html", chats=[])


@bp.get("/chats/new")
def new():
    """Pick the agent of a new chat: each with its description, tools and which ask first."""
    return _agent_page("chat/new.html", chats=chats.list_chats(current_user.id))


@bp.get("/agent-tools/<agent_id>")
def agent_tools(agent_id):
    """An agent's tools (a fragment the New chat page polls while MCP servers list theirs)."""
    agent = chats.agents().get(agent_id) or abort(404, "No such agent.")
    agent.warm_tools()
    return render_template("chat/_agent_tools.html", agent=agent)


@bp.post("/chats")
def create():
    try:
        chat = chats.create_chat(current_user.id, request.form.get("agent_id") or None)
    except LookupError:
        abort(404, "No such agent.")
    return redirect(url_for("chat.show", chat_id=chat.id), 303)


@bp.get("/chats/<chat_id>")
def show(chat_id):
    conv = chats.conversation(_owned_chat_or_404(chat_id))
    agent = chats.agents().get(conv.chat.agent_id)
    if agent is None:  # the agent was removed from AGENTS since: the chat stays readable
        agent = _RemovedAgent(conv.chat.agent_id)
    return _agent_page("chat/page.html", agent=agent, conv=conv, chats=chats.list_chats(current_user.id))


class _RemovedAgent:
    """Stands in for an agent no longer configured, so its old chats still render."""
    description, instructions, suggestions, tools, mcp, model, demo = "", "", (), (), (), None, None

    def __init__(self, agent_id: str):
        self.id = agent_id
        self.name = f"{agent_id} (no longer configured)"


@bp.post("/chats/<chat_id>/messages")
@limits.messages
def send(chat_id):
    chat = _owned_chat_or_404(chat_id)
    text = request.form.get("message", "")
    first_message = chat.title == "New chat"
    try:
        run, cursor = runner.start_run(chat, text)
    except RunError as exc:
        limits.raise_if_refused(exc)
        if not _wants_fragment():
            abort(exc.status, str(exc))
        return render_template("chat/_send_error.html", message=str(exc), text=text), exc.status
    if not _wants_fragment():
        return redirect(url_for("chat.show", chat_id=chat_id), 303)
    return answer_after_commit(
        lambda: render_template("chat/_run_started.html", chat=chat, run=run, cursor=cursor,
                                first_message=first_message, chats=chats.list_chats(current_user.id)),
        "Your message was sent. The page could not be updated just now: reload it to follow the reply.")


@bp.post("/runs/<run_id>/calls/<call_id>/<any(approve, reject):decision>")
@limits.commands
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
    done = "Approved." if decision == "approve" else "Rejected."
    if not _wants_fragment():
        target = url_for("admin.show") if _from_inbox() else url_for("chat.show", chat_id=call.message.session_id)
        return answer_after_commit(lambda: redirect(target, 303), f"{done} Reload the page to see the outcome.")
    if _from_inbox():  # the admin page has no chat around the card to update
        return answer_after_commit(lambda: render_template("chat/_call.html", call=call, inbox=True),
                                   f"{done} Reload the page to see the outcome.", call_id=call_id)
    return answer_after_commit(
        lambda: render_template("chat/_decided.html", call=call, run=db.session.get(Run, run_id), cursor=cursor),
        f"{done} The page could not be updated just now: reload it to see the outcome.", call_id=call_id)


def _from_inbox() -> bool:
    return request.form.get("view") == "inbox"


@bp.post("/runs/<run_id>/retry")
@limits.commands
def retry(run_id):
    return _run_command(lambda: runner.retry(current_user.id, run_id), "Retrying.")


@bp.post("/runs/<run_id>/cancel")
@limits.commands
def cancel(run_id):
    return _run_command(lambda: (runner.cancel(current_user.id, run_id), None), "Stopped.")


def _run_command(command, done: str):
    try:
        run, cursor = command()
    except RunError as exc:
        limits.raise_if_refused(exc)
        if exc.status == 404:
            abort(404, str(exc))
        return render_template("errors/_error.html", message=str(exc), status=exc.status), exc.status
    if not _wants_fragment():
        return answer_after_commit(lambda: redirect(url_for("chat.show", chat_id=run.session_id), 303), done)
    return answer_after_commit(lambda: render_template("chat/_run_state.html", run=run, cursor=cursor),
                               f"{done} The page could not be updated just now: reload it to follow the run.")


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
    release_slot = limits.take_stream_slot()  # 429 beyond MAX_STREAMS_PER_ACCOUNT
    stream = follow_run(
        run_id, cursor,
        render=lambda batch: "".join(sse(render_event(event), id=event.seq) for event in batch),
        finish=lambda status: sse("", event="done"),
        first="retry: 1000\n\n",  # headers go out at once; reconnect quickly after a restart
        hold_paused=request.args.get("hold") == "1")
    response = Response(stream, mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    response.call_on_close(release_slot)
    return response
