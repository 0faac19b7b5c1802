"""The chat UI: pages, htmx fragments, decisions, and the run's event stream (SSE)."""
from __future__ import annotations

import functools
import json
from contextlib import ExitStack
from types import SimpleNamespace

import sqlalchemy as sa

from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.utils import secure_filename

from app import approvals, chats, limits
from app.agent import commands
from app.agent.decisions import refresh_previews
from app.agent.refusals import Expired, Invalid, NotFound, Refusal
from app.grants import GrantRequest
from app.extensions import db
from app.models import CallStatus, Run, RunStatus, ToolCall, new_id, utcnow
from app.web import cards
from app.web.errors import answer_after_commit, status_of
from app.web.stream import CallCard, StreamView, follow_run, render_batch, sse

bp = Blueprint("chat", __name__)
cards.register(bp)
bp.add_app_template_global(chats.failure_headline, "failure_headline")
bp.add_app_template_global(lambda items: chats.group_by_date(items, utcnow().date()), "chat_dates")


def _owned_chat_or_404(chat_id: str):
    return chats.get_chat(current_user.id, chat_id) or abort(404, "No such chat.")


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
    return new()


@bp.get("/chats/new")
def new():
    """A blank chat to type into, with the agent picked by `agent_id` (the first agent if none); the
    chat itself is created with its first message (no empty rows). With several agents the page lists
    them, each with its tools and which ask first. After a delete (`deleted=<id>`) it offers to undo it."""
    agent = chats.agents().get(request.args.get("agent_id") or "")
    if request.args.get("agent_id") and agent is None:
        abort(404, "No such agent.")
    deleted = request.args.get("deleted")
    return _agent_page("chat/page.html", agent=agent, conv=chats.blank_conversation(agent or chats.agents().default()),
                       deleted=deleted and chats.trashed_chat(current_user.id, deleted),
                       chats=chats.list_chats(current_user.id))


@bp.get("/agent-tools/<agent_id>")
def agent_tools(agent_id):
    """An agent's tools (a fragment the New chat page polls while MCP servers list theirs)."""
    agent = chats.agents().get(agent_id) or abort(404, "No such agent.")
    agent.warm_tools()
    return render_template("chat/_agent_tools.html", agent=agent)


@bp.get("/chats/search")
def search():
    """Chats whose title or messages contain `q`: the sidebar's list (htmx), or a page with it."""
    query = request.args.get("q", "")
    found = chats.list_chats(current_user.id, query=query)
    if _wants_fragment():
        return render_template("chat/_chat_list.html", chats=found, query=query)
    return _agent_page("chat/page.html", conv=chats.blank_conversation(chats.agents().default()), chats=found,
                       query=query)


@bp.post("/chats/<chat_id>/title")
@limits.commands
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
        return answer_after_commit(lambda: redirect(url_for("chat.show", chat_id=chat_id), 303), "Renamed.")
    return answer_after_commit(
        lambda: render_template("chat/_renamed.html", chat=chat, chats=chats.list_chats(current_user.id)),
        "Renamed. The page could not be updated just now: reload it to see the new title.")


@bp.post("/chats/<chat_id>/delete")
@limits.commands
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
@limits.commands
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
        body, mimetype = chats.export_markdown(chat, _agent_of(chat).name), "text/markdown"
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
    return render_template("chat/_older.html", chat=chat, agent=_agent_of(chat), messages=messages, more=more)


@bp.post("/chats")
@limits.first_messages
def create():
    """Create a chat with its first message and start the reply (the composer of /chats/new), with the
    agent `agent_id` (the first agent if none). Without `message` (scripts, tests) an empty chat to
    send into; it shows in the sidebar from its first message."""
    text = request.form.get("message")
    try:
        chat = chats.create_chat(current_user.id, request.form.get("agent_id") or None)
    except LookupError:
        abort(404, "No such agent.")
    if text is None:
        return redirect(url_for("chat.show", chat_id=chat.id), 303)
    try:
        commands.start_run(chat, text)
    except Refusal as exc:
        chats.delete_chat(current_user.id, chat.id)  # nothing was said: leave no empty chat behind
        limits.raise_if_refused(exc)
        if not _wants_fragment():
            abort(status_of(exc), str(exc))
        return render_template("chat/_send_error.html", message=str(exc), text=text), status_of(exc)
    target = url_for("chat.show", chat_id=chat.id)
    if _wants_fragment():
        # A full page load: the new chat's page, its sidebar entry and its stream, focus in the box.
        return "", 204, {"HX-Redirect": target}
    return redirect(target, 303)


@bp.get("/chats/<chat_id>")
def show(chat_id):
    chat = _owned_chat_or_404(chat_id)
    latest = Run.latest_in(chat.id)
    refresh_previews(latest.id if latest else None)  # a card shows what approving it would do now
    conv = chats.conversation(chat)
    return _agent_page("chat/page.html", agent=_agent_of(conv.chat), conv=conv,
                       chats=chats.list_chats(current_user.id))


def _agent_of(chat):
    """The chat's agent; a stand-in if it was removed from AGENTS since (the chat stays readable)."""
    return chats.agents().get(chat.agent_id) or _RemovedAgent(chat.agent_id)


class _RemovedAgent:
    """Stands in for an agent no longer configured, so its old chats still render."""
    description, instructions, suggestions, tools, mcp, model, demo = "", "", (), (), (), None, None

    def __init__(self, agent_id: str):
        self.id = agent_id
        self.name = f"{agent_id} (no longer configured)"


@bp.post("/chats/<chat_id>/messages")
@limits.messages
def send(chat_id):
    new_run_id = new_id("run")
    with _handing_over(new_run_id) as handing:
        chat, heads_list = chats.get_chat_heading_list(current_user.id, chat_id, lock_owner=True) \
            or abort(404, "No such chat.")
        text = request.form.get("message", "")
        first_message, agent_id = chat.title == "New chat", chat.agent_id  # read before the command commits
        # The sidebar changes only if this chat moves to its top, gets its title or changes its date group.
        relist = first_message or not heads_list or chat.updated_at.date() != utcnow().date()
        try:
            started = commands.start_run(chat, text, owner_locked=True, new_run_id=new_run_id)
        except Refusal as exc:
            limits.raise_if_refused(exc)
            if not _wants_fragment():
                abort(status_of(exc), str(exc))
            return render_template("chat/_send_error.html", message=str(exc), text=text), status_of(exc)
        if _wants_fragment() and started.run_id == new_run_id:  # (not a paused run resumed by the message)
            handing.keep(started.after_message, RunStatus.QUEUED, chat_id, agent_id)
    if not _wants_fragment():
        return redirect(url_for("chat.show", chat_id=chat_id), 303)
    # The run as start_run left it (queued), not read back: the stream from the cursor shows the rest. A
    # new run's first events are its start and the person's message, which this answer shows itself.
    run = SimpleNamespace(id=started.run_id, session_id=chat_id, agent_id=agent_id, status=RunStatus.QUEUED)
    message = None if started.after_message is None else SimpleNamespace(
        id=started.message_id, role="user", content=started.message_text, state="done", session_id=chat_id,
        created_at=started.message_at)
    return answer_after_commit(
        lambda: render_template("chat/_run_started.html", chat=chat, run=run, message=message,
                                cursor=started.cursor if message is None else started.after_message,
                                first_message=first_message,
                                chats=chats.list_chats(current_user.id) if relist else None),
        "Your message was sent. The page could not be updated just now: reload it to follow the reply.")


@bp.post("/chats/<chat_id>/resend")
@limits.messages
def resend(chat_id):
    """Regenerate the last reply (no `message`) or resend the last message edited (`message`)."""
    chat = _owned_chat_or_404(chat_id)
    try:
        chats.resend(chat, request.form.get("message"))
    except Refusal as exc:
        limits.raise_if_refused(exc)
        if not _wants_fragment():
            abort(status_of(exc), str(exc))
        return render_template("errors/_error.html", message=str(exc), status=status_of(exc)), status_of(exc)
    target = url_for("chat.show", chat_id=chat.id)
    if _wants_fragment():
        return "", 204, {"HX-Redirect": target}  # the page anew: earlier versions dimmed, the new reply streaming
    return redirect(target, 303)


@bp.post("/runs/<run_id>/calls/<call_id>/<any(approve, reject, edit, input, result):decision>")
@limits.commands
def decide(run_id, call_id, decision):
    # An admin may decide anyone's call (the run's owner is then not the one who decides).
    owner_id = None if current_user.is_admin else current_user.id
    typed = None
    try:
        with _handing_over(run_id) as handing:
            choice, typed = cards.decision_from_form(owner_id, run_id, call_id, decision, request.form)
            decided = commands.decide(owner_id, run_id, call_id, decider_id=current_user.id,
                                      reason=request.form.get("reason"), seen=request.form.get("seen"),
                                      always=_always_allow() if decision == "approve" else None,
                                      **_others_waiting(call_id), **choice)
            # (An admin deciding another account's call gets no stream of that run from it.)
            if decided.written is not None and decided.run.owner_id == current_user.id and _wants_fragment() \
                    and not _from_inbox():
                handing.keep(decided.cursor, decided.run_status, decided.run.session_id, decided.run.agent_id)
        call = decided.call
    except Refusal as exc:
        if isinstance(exc, NotFound):
            abort(404, str(exc))
        # A late click is no error: the answer is the card as it is now, expired (the API says 409).
        late = isinstance(exc, Expired)
        if not _wants_fragment():
            if late:
                return redirect(url_for("approvals.inbox") if _from_inbox() else
                                url_for("chat.show", chat_id=exc.call.message.session_id, _anchor=f"call-{call_id}"), 303)
            abort(status_of(exc), str(exc))
        typed = getattr(exc, "typed", typed)
        form_back = isinstance(exc, Invalid) and typed is not None  # the form again, as typed, with why
        card = render_template("chat/_call.html", call=exc.call, notice=None if form_back else str(exc),
                               problems=cards.problems_of(exc) if form_back else None, typed=typed,
                               editing_open=form_back and decision == "edit", inbox=_from_inbox())
        return card, 200 if late else status_of(exc)
    done = {"approve": "Approved.", "reject": "Rejected.", "edit": "Edited: check it and approve.",
            "input": "Sent.", "result": "Handed back."}[decision]
    if not _wants_fragment():
        target = url_for("approvals.inbox") if _from_inbox() else url_for("chat.show", chat_id=call.message.session_id)
        return answer_after_commit(lambda: redirect(target, 303), f"{done} Reload the page to see the outcome.")
    if _from_inbox():  # the approvals inbox has no chat around the card to update
        return answer_after_commit(lambda: render_template("approvals/_decided.html", call=call),
                                   f"{done} Reload the page to see the outcome.", call_id=call_id)
    return answer_after_commit(
        lambda: render_template("chat/_decided.html", cursor=decided.cursor,
                                **_call_and_run(decided, call_id, run_id)),
        f"{done} The page could not be updated just now: reload it to see the outcome.", call_id=call_id)


def _always_allow() -> GrantRequest | None:
    """The card's "Always allow" options, if the person approved with them."""
    form = request.form
    if form.get("always") != "1":
        return None
    return GrantRequest(scope=form.get("always_scope", "chat"), same_arguments=form.get("always_same_arguments") == "1",
                        duration=form.get("always_for", "forever"))


def _handing_over(run_id: str):
    """A watch of the run for the stream this command's answer opens (`Hub.hand_over`), opened before
    the command reads or writes: starting to watch may switch greenlets, which must never happen while
    a transaction holds SQLite's write lock."""
    db.session.remove()
    return current_app.extensions["run_events"].hand_over(run_id, current_user.id)


def _others_waiting(call_id: str) -> dict:
    """For `commands.decide`: read with the call the other calls waiting for this person (the sidebar's
    count, which the answer updates)."""
    scope = approvals.scope_of(current_user)
    return {"also": approvals.others_pending_column(scope is not None),
            "also_params": {**approvals.decidable_params(scope), "decidable_but": call_id}}


def _call_and_run(decided: commands.Decided, call_id: str, run_id: str) -> dict:
    """The decided call and its run as the decision left them, and the calls still waiting for this
    person (the sidebar's count): from what the decision wrote and read with the call, or, when it
    wrote nothing, read back in one statement."""
    if decided.written is not None:
        run = decided.run
        card = CallCard(decided.written._mapping)
        g.approvals_waiting = decided.also + (card.status == CallStatus.PENDING)
        cards.know_run(run.id, run.owner_id, run.agent_id)
        return {"call": card, "run": SimpleNamespace(id=run.id, session_id=run.session_id, agent_id=run.agent_id,
                                                    status=decided.run_status, error=None)}
    scope = approvals.scope_of(current_user)
    call, run, g.approvals_waiting = db.session.execute(_call_and_run_statement(scope is not None), {
        "call_id": call_id, "run_id": run_id, **approvals.decidable_params(scope)}).one()
    cards.know_run(run.id, run.owner_id, run.agent_id)
    return {"call": call, "run": run}


@functools.cache
def _call_and_run_statement(scoped: bool) -> sa.Select:
    """Built once per scope (building it cost more than running it): bound call_id, run_id and the
    approvals count's values."""
    waiting = approvals.pending_count_select(scoped).scalar_subquery().correlate(None)
    return sa.select(ToolCall, Run, waiting).join(Run, ToolCall.run_id == Run.id).where(
        ToolCall.id == sa.bindparam("call_id"), Run.id == sa.bindparam("run_id"))


def _from_inbox() -> bool:
    return request.form.get("view") == "inbox"


@bp.post("/runs/<run_id>/retry")
@limits.commands
def retry(run_id):
    return _run_command(lambda: commands.retry(current_user.id, run_id), "Retrying.")


@bp.post("/runs/<run_id>/cancel")
@limits.commands
def cancel(run_id):
    return _run_command(lambda: (commands.cancel(current_user.id, run_id), None), "Stopped.")


def _run_command(command, done: str):
    try:
        run, cursor = command()
    except Refusal as exc:
        limits.raise_if_refused(exc)
        if isinstance(exc, NotFound):
            abort(404, str(exc))
        return render_template("errors/_error.html", message=str(exc), status=status_of(exc)), status_of(exc)
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
    try:
        cursor = int(request.headers.get("Last-Event-ID") or request.args.get("after") or 0)
    except ValueError:
        abort(400, "The cursor must be a number.")
    # Watching starts before the first read (no wake-up is missed), and that read is also the owner
    # check: another account's run, or none, is a 404 before the stream begins.
    # End the sign-in's transaction first: starting to watch may switch greenlets, which must never
    # happen while holding SQLite's write lock; the read below then needs no lock (a plain BEGIN).
    db.session.remove()
    watching = ExitStack()
    hub = current_app.extensions["run_events"]
    # The watch this person's message or decision kept for this stream, if it was answered here: its
    # first read needs no database (it has heard every event since before the command wrote).
    handed = hub.take_over(run_id, current_user.id, cursor)
    if handed is not None:
        watching.enter_context(handed.stack)
        watch = handed.watch
    else:
        watch = watching.enter_context(hub.watch(run_id, owner_id=current_user.id))
    try:
        seen = watch.generation
        batch, status = watch.read_after(cursor)
        if status == "gone":
            abort(404, "No such run.")
        release_slot = limits.take_stream_slot()  # 429 beyond MAX_STREAMS_PER_ACCOUNT
    except BaseException:
        watching.close()
        raise
    watching.callback(release_slot)
    view = StreamView(run_id, watch.run, watch)  # what this stream remembers between batches
    cards.know_run(run_id, current_user.id, watch.run.agent_id)  # the cards it shows need no run read
    stream = follow_run(
        run_id, cursor,
        # Relayed words have no seq: an empty id, which the page applies (and a reconnect replays from
        # the URL's cursor, whose events the page drops as seen).
        render=lambda batch: "".join(sse(html, id="" if event.seq is None else event.seq)
                                     for event, html in render_batch(batch, view)),
        finish=lambda status: sse("", event="done"),
        first="retry: 1000\n\n",  # headers go out at once; reconnect quickly after a restart
        hold_paused=request.args.get("hold") == "1", watch=watch, first_read=(seen, batch, status),
        status=handed and handed.status)
    response = Response(stream, mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    response.call_on_close(watching.close)
    return response
