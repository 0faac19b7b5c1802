"""The chat UI over HTTP (Flask's test client): pages, fragments, decisions, the event stream, and
what bad input, other people and hostile model text get."""
from __future__ import annotations

import re
import threading
import time
from html import unescape
from html.parser import HTMLParser
from types import SimpleNamespace

import sqlalchemy as sa

from app.extensions import db
from app.markdown import StreamingReply
from app.models import ChatSession
from app.web.stream import StreamView
from tests.conftest import parse_sse, wait_for
from tests.fake_openai import ToolCall, Turn
from tests.test_faults import workspace_locked

DELETE_50 = ToolCall("delete_records", {"table_name": "users", "count": 50})


def run_id_in(html: bytes) -> str:
    return re.search(rb"/runs/(run_[0-9a-f]+)/events", html).group(1).decode()


def pending_call(browser, chat_id) -> tuple[str, str]:
    page = browser.get(f"/chats/{chat_id}").data
    run_id, call_id = re.search(rb"/runs/(run_\w+)/calls/(tc_\w+)/approve", page).groups()
    return run_id.decode(), call_id.decode()


def text_of(html: str) -> str:
    """The words of the (last) reply in a page or fragment, without its markup."""
    replies = re.findall(r'<div id="msg-\d+-text" class="msg-text markdown[^"]*"[^>]*>(.*?)</div>', html, re.S)
    return re.sub(r"<[^>]+>", "", replies[-1]).strip() if replies else ""


_WHOLE_REPLY = re.compile(r'<div id="msg-(\d+)-text" class="msg-text markdown[^"]*"[^>]*>(.*?)</div>', re.S)
_ADDED_WORDS = re.compile(r'<span hx-swap-oob="beforeend:#msg-(\d+)-text &gt; p:last-child" data-at="(\d+)">([^<]*)</span>')
_LAST_PLAIN_PARAGRAPH = re.compile(r"<p>([^<]*)</p>\s*$")


def shown_replies(events) -> list[str]:
    """The words of the reply after each of the stream's updates of it, applied as app.js applies them:
    a whole reply replaces it; words added to its last paragraph go there only if the paragraph is as
    long as they say it was."""
    replies, shown = {}, []
    for event in events:
        data = event["data"]
        updated = None
        for message_id, html in _WHOLE_REPLY.findall(data):
            replies[message_id] = updated = html
        for message_id, at, words in _ADDED_WORDS.findall(data):
            html = replies.get(message_id, "")
            last = _LAST_PLAIN_PARAGRAPH.search(html)
            if last and len(unescape(last[1]).encode("utf-16-le")) // 2 == int(at):
                html = replies[message_id] = html[:last.end(1)] + words + html[last.end(1):]
            updated = html
        if updated is not None:
            shown.append(_words(updated))
    return shown


def _words(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", html)).strip()


def wait_until_idle(harness, run_id):
    return harness.wait(run_id, "paused", "completed", "failed", "cancelled")


def test_a_chat_is_created_with_its_first_message_so_the_sidebar_has_no_empty_rows(browser, harness, fake_model):
    fake_model.script(Turn(text="First answer."))
    blank = browser.get("/").data.decode()
    assert 'id="composer-input"' in blank and "No chats yet." in blank
    browser.new_chat()  # the scripted way still makes an empty chat: it is no conversation, so not listed
    assert "No chats yet." in browser.get("/chats/new").data.decode()

    sent = browser.post("/chats", {"message": "first question"})
    assert sent.status_code == 204 and sent.headers["HX-Redirect"].startswith("/chats/")
    chat = sent.headers["HX-Redirect"].rsplit("/", 1)[-1]
    page = browser.get(f"/chats/{chat}").data.decode()
    assert page.count('class="chat-link') == 1 and f'href="/chats/{chat}"' in page
    assert browser.get("/").headers["Location"].endswith(chat), "/ opens the newest chat"


def test_an_empty_first_message_creates_no_chat(app, browser):
    refused = browser.post("/chats", {"message": "   "})
    assert refused.status_code == 422 and b"Type a message first." in refused.data
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ChatSession)
                                 .where(ChatSession.owner_id == browser.account_id)) == 0


def test_the_whole_flow_over_http(browser, harness, fake_model):
    fake_model.script(Turn(text="I'll delete **50** users.", tool_calls=[DELETE_50]), Turn(text="All done."))
    chat = browser.new_chat()
    before = harness.rows("users")

    sent = browser.post(f"/chats/{chat}/messages", {"message": "Delete 50 old records from the users table"})
    assert sent.status_code == 200
    assert b'id="composer-input"' in sent.data and b"btn-stop" in sent.data, "Stop replaces Send while the run works"
    run_id = run_id_in(sent.data)

    harness.wait(run_id, "paused")
    stream = browser.events(run_id, after=0)  # e.g. a browser that connects late: a full replay
    html = "".join(e["data"] for e in stream)
    assert stream[-1]["event"] == "done"
    ids = [int(e["id"]) for e in stream[:-1]]
    assert ids == sorted(set(ids)), "in order, none twice (a reply's text events in one read are coalesced)"
    assert "Delete 50 old records from the users table" in html
    assert "Needs your approval" in html and "Deletes the 50 oldest of" in html
    assert "<strong>50</strong>" in html, "the finished reply is rendered markdown"
    # Replaying a finished stream from the start must not close it early: only its last event
    # replaces the stream element (an old "started" replayed as today's "paused" would).
    assert [e for e in stream if 'id="run-stream"' in e["data"]] == [stream[-2]]

    page = browser.get(f"/chats/{chat}").data.decode()
    assert "Waiting for your approval." in page and "Delete 50 rows" in page
    run, call = pending_call(browser, chat)
    approved = browser.post(f"/runs/{run}/calls/{call}/approve")
    assert approved.status_code == 200
    assert b"call-approved" in approved.data or b"call-executing" in approved.data or b"call-done" in approved.data
    cursor = int(re.search(rb"events\?after=(\d+)", approved.data).group(1))

    rest = browser.events(run, after=cursor)
    assert rest[-1]["event"] == "done"
    html = "".join(e["data"] for e in rest)
    assert "Calling delete_records" in rest[0]["data"], "the stream goes on from after the decision its answer showed"
    assert f"Deleted 50 records from users. {before - 50:,} remain." in html
    assert "All done." in html
    page = browser.get(f"/chats/{chat}").data.decode()
    assert "Deleted 50 records" in page and "All done." in page and "Delete 50 rows</button>" not in page


def test_the_answer_to_a_message_shows_it_and_the_stream_does_not_repeat_it(browser, harness, fake_model):
    fake_model.script(Turn(text="Shall I?", tool_calls=[DELETE_50]), Turn(text="Then I won't."))
    chat = browser.new_chat()
    sent = browser.post(f"/chats/{chat}/messages", {"message": "  <i>hello</i> there  "}).data.decode()
    assert sent.count('class="msg msg-user') == 1 and "&lt;i&gt;hello&lt;/i&gt; there</div>" in sent, \
        "the message, as stored (trimmed, escaped), in the answer to sending it"
    cursor = int(re.search(r"events\?after=(\d+)", sent).group(1))
    run_id = run_id_in(sent.encode())
    harness.wait(run_id, "paused")
    html = "".join(e["data"] for e in browser.events(run_id, after=cursor))
    assert "msg-user" not in html and "Shall I?" in html and "Needs your approval" in html

    # A message typed while a card waits rejects the card: the stream shows that, then the message.
    answer = browser.post(f"/chats/{chat}/messages", {"message": "no, stop"}).data.decode()
    assert "msg-user" not in answer
    cursor = int(re.search(r"events\?after=(\d+)", answer).group(1))
    harness.wait(run_id, "completed")
    html = "".join(e["data"] for e in browser.events(run_id, after=cursor))
    assert html.count('class="msg msg-user') == 1 and "no, stop" in html and "Then I won't." in html
    assert html.index("call-rejected") < html.index("no, stop")
    page = browser.get(f"/chats/{chat}").data.decode()
    assert page.count('class="msg msg-user') == 2


def test_reload_continues_the_stream_without_gaps_or_repeats(browser, harness, fake_model):
    fake_model.script(Turn(text="one two three four five six seven eight nine ten", token_delay=0.1))
    chat = browser.new_chat()
    run_id = run_id_in(browser.post(f"/chats/{chat}/messages", {"message": "count to ten"}).data)
    harness.wait(run_id, "running")
    wait_for(lambda: "four" in harness.messages(chat)[-1][1], message="some text to stream")

    page = browser.get(f"/chats/{chat}").data.decode()  # a reload mid-reply
    cursor = int(re.search(r"events\?after=(\d+)", page).group(1))
    words = "one two three four five six seven eight nine ten"
    shown = [text_of(page)]
    rest = browser.events(run_id, after=cursor)
    # Each update shows the reply so far (all of it, or the words added to it): it grows, and ends whole.
    shown += shown_replies(rest)
    assert all(words.startswith(text) for text in shown), shown
    assert [len(text) for text in shown] == sorted(len(text) for text in shown)
    assert shown[-1] == words

    # Last-Event-ID (what the browser sends on reconnect) wins over the URL's cursor.
    again = browser.events(run_id, after=0, last_event_id=cursor)
    assert all(int(e["id"]) > cursor for e in again if e["id"]) and again[-1]["id"] is None
    assert shown_replies(again)[-1] == words


def test_decisions_are_compare_and_set(browser, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="ok"))
    chat = browser.new_chat()
    run_id = run_id_in(browser.post(f"/chats/{chat}/messages", {"message": "delete"}).data)
    harness.wait(run_id, "paused")
    run, call = pending_call(browser, chat)
    assert browser.post(f"/runs/{run}/calls/{call}/reject", {"reason": "no"}).status_code == 200
    late = browser.post(f"/runs/{run}/calls/{call}/approve")
    assert late.status_code == 409
    assert b"already rejected" in late.data and b"call-rejected" in late.data, "the loser sees the current card"


def test_bad_input_gets_clear_errors(browser, harness, fake_model):
    chat = browser.new_chat()
    empty = browser.post(f"/chats/{chat}/messages", {"message": "   "})
    assert empty.status_code == 422 and b"Type a message first." in empty.data
    huge = browser.post(f"/chats/{chat}/messages", {"message": "x" * 8001})
    assert huge.status_code == 413 and b"too long" in huge.data
    assert harness.messages(chat) == []
    assert browser.get("/chats/chat_doesnotexist").status_code == 404
    assert browser.post("/chats/chat_doesnotexist/messages", {"message": "hi"}).status_code == 404
    assert browser.post("/runs/run_nope/calls/tc_nope/approve").status_code == 404
    assert browser.get("/runs/run_nope/events").status_code == 404
    assert browser.post("/runs/run_nope/retry").status_code == 404


def test_other_people_see_404(app, browser, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]))
    chat = browser.new_chat()
    run_id = run_id_in(browser.post(f"/chats/{chat}/messages", {"message": "delete"}).data)
    harness.wait(run_id, "paused")
    run, call = pending_call(browser, chat)

    from tests.conftest import Browser
    stranger = Browser(app)
    assert stranger.get(f"/chats/{chat}").status_code == 404
    assert stranger.get(f"/runs/{run}/events").status_code == 404
    assert stranger.post(f"/runs/{run}/calls/{call}/approve").status_code == 404
    assert stranger.post(f"/chats/{chat}/messages", {"message": "hi"}).status_code == 404
    assert chat.encode() not in stranger.get("/").data
    assert harness.calls(run)[0].status == "pending"


def test_state_changes_need_the_csrf_token(browser, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]))
    chat = browser.new_chat()
    run_id = run_id_in(browser.post(f"/chats/{chat}/messages", {"message": "delete"}).data)
    harness.wait(run_id, "paused")
    run, call = pending_call(browser, chat)
    forged = browser.client.post(f"/runs/{run}/calls/{call}/approve", headers={"HX-Request": "true"})
    assert forged.status_code == 400
    assert harness.calls(run)[0].status == "pending"


def test_model_text_never_reaches_the_page_as_html(browser, harness, fake_model):
    evil = ('<script>alert(1)</script><img src=x onerror=alert(2)> <button hx-post="/x">go</button> '
            '[click](javascript:alert(3)) ![pixel](https://evil.example/p.png)')
    fake_model.script(Turn(text=evil, tool_calls=[ToolCall("send_notification",
                                                           {"recipient": "<b>bob</b>", "message": evil})]))
    chat = browser.new_chat()
    run_id = run_id_in(browser.post(f"/chats/{chat}/messages", {"message": "<i>hi</i>"}).data)
    harness.wait(run_id, "paused")
    stream = "".join(e["data"] for e in browser.events(run_id))
    page = browser.get(f"/chats/{chat}").data.decode().split("<body", 1)[1]  # our own <head> has scripts
    for html in (stream, page):
        assert not re.search(r"<(script|img|b|i)[\s>]", html), "no tag from model or user text survives"
        assert not re.search(r"<button[^>]*hx-post=\"/x\"", html), "no live htmx control from model text"
        assert not re.search(r"<[^>]+\son\w+=", html), "no event handler attributes"
        assert 'href="javascript' not in html and "evil.example" not in html.replace("![pixel](https://evil.example/p.png)", "")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;bob&lt;/b&gt;" in html
    assert "&lt;i&gt;hi&lt;/i&gt;" in page
    assert "Content-Security-Policy" in browser.get(f"/chats/{chat}").headers


def test_failed_runs_offer_retry(browser, harness, fake_model):
    fake_model.script(Turn(status=401, error_message="bad key"), Turn(text="Back again."))  # 401s are not retried
    chat = browser.new_chat()
    run_id = run_id_in(browser.post(f"/chats/{chat}/messages", {"message": "hi"}).data)
    harness.wait(run_id, "failed")
    page = browser.get(f"/chats/{chat}").data.decode()
    assert "rejected the API key (401)" in page and "Retry" in page
    retried = browser.post(f"/runs/{run_id}/retry")
    assert retried.status_code == 200 and b"events?after=" in retried.data
    assert harness.wait(run_id).status == "completed"
    assert "Back again." in browser.get(f"/chats/{chat}").data.decode()
    assert browser.post(f"/runs/{run_id}/retry").status_code == 409


def test_stop_cancels_a_streaming_run(browser, harness, fake_model):
    fake_model.script(Turn(text="blah " * 300, token_delay=0.02))
    chat = browser.new_chat()
    run_id = run_id_in(browser.post(f"/chats/{chat}/messages", {"message": "talk"}).data)
    harness.wait(run_id, "running")
    stopped = browser.post(f"/runs/{run_id}/cancel")
    assert stopped.status_code == 200 and b"Stopped." in stopped.data
    assert harness.run(run_id).status == "cancelled"
    assert browser.post(f"/chats/{chat}/messages", {"message": "next"}).status_code == 200


def test_the_outbox_shows_sent_notifications(browser, harness, fake_model):
    fake_model.script(Turn(tool_calls=[ToolCall("send_notification",
                                                {"recipient": "ops@example.com", "message": "Backup finished"})]),
                      Turn(text="Sent."))
    chat = browser.new_chat()
    run_id = run_id_in(browser.post(f"/chats/{chat}/messages", {"message": "tell ops"}).data)
    harness.wait(run_id, "paused")
    run, call = pending_call(browser, chat)
    outbox = browser.get(f"/chats/{chat}").data.split(b'id="outbox"')[1].split(b"</section>")[0]
    assert b"Backup finished" not in outbox, "nothing is sent before the approval"
    cursor = int(re.search(rb"events\?after=(\d+)", browser.post(f"/runs/{run}/calls/{call}/approve").data).group(1))
    live = "".join(e["data"] for e in browser.events(run, after=cursor))
    assert 'id="outbox"' in live and "Backup finished" in live, "the outbox updates live"
    assert b"To ops@example.com" in browser.get(f"/chats/{chat}").data
    # A late reader gets the card's updates in one batch: the card as it is now, once, with the
    # outbox once and the "Calling …" line of its executing step.
    replay = "".join(e["data"] for e in browser.events(run, after=0))
    assert replay.count('id="outbox"') == 1 and replay.count("Calling send_notification…") == 1
    cards = re.findall(rf'class="call call-(\w+)[^"]*" id="call-{call}"', replay)
    assert cards == ["done", "done"], "appended, then replaced once (each as the call is now)"


def test_a_command_response_streams_from_its_cursor_even_if_the_run_already_finished(app, harness, fake_model):
    """Under load a run can complete before the POST's fragment renders; the fragment must still
    connect a stream from its cursor, or the reply would only appear after a reload."""
    fake_model.script(Turn(text="Quick answer."))
    _, chat = harness.chat()
    run_id = harness.send(chat, "hi")
    run = harness.wait(run_id, "completed")
    from flask import render_template
    with app.test_request_context():
        html = render_template("chat/_run_state.html", run=run, cursor=0)
    assert f'sse-connect="/runs/{run_id}/events?after=0"' in html


def test_a_streaming_reply_shows_words_between_the_writes_that_store_them(app, browser, harness, fake_model):
    words = " ".join(f"w{i}" for i in range(60))
    fake_model.script(Turn(text=words, token_delay=0.03))  # 60 tokens over ~2 s
    chat = browser.new_chat()
    run_id = run_id_in(browser.post(f"/chats/{chat}/messages", {"message": "go"}).data)
    stream = browser.events(run_id, after=0)  # follows the run live to its end
    renders = shown_replies(stream)
    assert renders[-1] == words, "the reply ends whole (message_completed)"
    assert all(words.startswith(r) for r in renders)
    assert [len(r) for r in renders] == sorted(len(r) for r in renders), "it only grows"
    with app.app_context():
        stored = db.session.scalar(sa.text("SELECT count(*) FROM run_events WHERE run_id = :run AND type = 'text'"),
                                   {"run": run_id})
    # Words reach the stream from memory between the few writes that store them, and a render shows
    # several tokens at once; the stored reply is the whole of it.
    assert stored < len(renders) < 60, (stored, len(renders))
    assert harness.messages(chat)[-1][1] == words


def test_a_longer_reply_takes_its_stream_no_more_database_connections(app, browser, harness, fake_model):
    """A stream renders a reply's words from memory, the stored ones too: it takes a connection for what
    it must read (the run, its end), not for every batch the reply's stores wake it for."""
    def stream_checkouts(words: str) -> tuple[int, int]:
        fake_model.script(Turn(text=words, token_delay=0.03))
        chat = browser.new_chat()
        run_id = run_id_in(browser.post(f"/chats/{chat}/messages", {"message": "go"}).data)
        checkouts, stream_thread = [], threading.get_ident()
        count = lambda *args: checkouts.append(1) if threading.get_ident() == stream_thread else None
        with app.app_context():
            engine = db.engine
        sa.event.listen(engine, "checkout", count)
        try:
            assert shown_replies(browser.events(run_id, after=0))[-1] == words
        finally:
            sa.event.remove(engine, "checkout", count)
        with app.app_context():
            stored = db.session.scalar(sa.text("SELECT count(*) FROM run_events WHERE run_id = :run AND type = 'text'"),
                                       {"run": run_id})
        return len(checkouts), stored

    short, _ = stream_checkouts("Hi.")
    long, stored = stream_checkouts(" ".join(f"w{i}" for i in range(60)))  # ~2 s: stored ~8 times
    assert stored >= 5, stored
    assert long <= short, (short, long, stored)


def test_words_that_came_before_the_model_stopped_to_think_are_shown_while_it_thinks(browser, fake_model):
    # Four words at once, then the model thinks for two seconds before the fifth.
    fake_model.script(Turn(text="Alpha beta gamma delta epsilon", stall_after=4, stall=2.0))
    chat = browser.new_chat()
    run_id = run_id_in(browser.post(f"/chats/{chat}/messages", {"message": "go"}).data)
    renders = shown_replies(browser.events(run_id, after=0))
    assert "Alpha beta gamma delta" in renders, renders  # not held back until the fifth word came
    assert renders[-1] == "Alpha beta gamma delta epsilon"


def test_a_streaming_update_is_the_replys_element_then_the_writing_status(app):
    """A stream fills each update of a reply into its templates' HTML, rendered once per reply
    (StreamView.render_streaming): the same as rendering the templates, escaped the same."""
    env = app.jinja_env
    with app.app_context():
        view = StreamView("run", SimpleNamespace(id="run", session_id="s", agent_id="a"))
        for text in ("One", "One *two*", "One *two*\n\nThree <script>x</script>", "One *two*\n\nThree, four"):
            reply = SimpleNamespace(id=7, content=text, state="streaming", html=StreamingReply().render(text))
            expected = (env.get_template("chat/events/_message_replace.html").render(message=reply)
                        + env.get_template("chat/events/_activity.html").render(activity="Writing…"))
            assert view.render_streaming(7, text) == expected
            assert "<script>" not in expected


def test_while_the_last_paragraph_grows_a_stream_sends_only_the_words_added(app, monkeypatch):
    """Between whole updates (the first, one every WHOLE_EVERY, and any that is more than words added
    to the last paragraph), an update is the new words with where they go: applied as the page applies
    them, the reply shows what it shows whole."""
    from app.web import stream
    replies = ["Café 𝐀 said", 'Café 𝐀 said "yes"', 'Café 𝐀 said "yes" ', 'Café 𝐀 said "yes" and',
               'Café 𝐀 said "yes" and *no', 'Café 𝐀 said "yes" and *no* then', "Another reply"]
    with app.app_context():
        view = StreamView("run", SimpleNamespace(id="run", session_id="s", agent_id="a"))
        updates = [view.render_streaming(7, text) for text in replies]
        monkeypatch.setattr(stream, "WHOLE_EVERY", 0.0)  # a stream whose last whole update is a second old
        later = view.render_streaming(7, "Another reply, grown")
    assert [bool(_WHOLE_REPLY.search(u)) for u in updates] == [True, False, False, False, True, True, True]
    assert updates[2] == "", "nothing new to show: nothing is sent"
    assert updates[1] == ('<span hx-swap-oob="beforeend:#msg-7-text &gt; p:last-child" data-at="12">'
                          " &#34;yes&#34;</span>"), "escaped, and placed after 12 UTF-16 units (𝐀 is two)"
    shown = shown_replies([{"data": u} for u in updates[:6]])
    assert shown == [_words(StreamingReply().render(text)) for text in replies[:6] if text != replies[2]]
    assert _WHOLE_REPLY.search(later), "sent whole again once WHOLE_EVERY has passed"
    # Words that do not fit where the page's paragraph is (another stream of the run added them) are skipped.
    assert shown_replies([{"data": updates[0]}, {"data": updates[1]}, {"data": updates[1]}])[-1] == 'Café 𝐀 said "yes"'


def live_events(browser, run_id: str, after: int):
    """The run's event stream as it comes: the stream stays open while the caller looks at each event."""
    response = browser.client.get(f"/runs/{run_id}/events?after={after}", buffered=False)
    text = ""
    try:
        for chunk in response.response:
            text += chunk.decode() if isinstance(chunk, bytes) else chunk
            *blocks, text = text.split("\n\n")
            for block in blocks:
                yield from parse_sse(block)
    finally:
        response.close()


class _Element(HTMLParser):
    """The element with `element_id`, as a list of tags (attributes sorted, without the one that swaps it
    in from a stream, and CSRF tokens, which carry their time) and words: two renderings of one card
    compare equal if they show the same."""
    VOID = {"input", "br", "img", "hr", "meta", "link"}

    def __init__(self, element_id: str):
        super().__init__()
        self.element_id, self.depth, self.found = element_id, 0, []

    def handle_starttag(self, tag, attrs):
        if self.depth == 0:
            if dict(attrs).get("id") != self.element_id:
                return
            self.found = []  # the last rendering in the text counts
        csrf = ("name", "csrf_token") in attrs
        self.found.append((tag, sorted((k, v) for k, v in attrs if k != "hx-swap-oob" and not (csrf and k == "value"))))
        if tag not in self.VOID:
            self.depth += 1

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1
            self.found.append(f"/{tag}")

    def handle_data(self, data):
        if self.depth and data.strip():
            self.found.append(" ".join(data.split()))


def shown(html: str, element_id: str) -> list:
    parser = _Element(element_id)
    parser.feed(html)
    return parser.found


def test_a_live_stream_shows_each_card_as_a_reload_shows_it(databases, browser, harness, fake_model):
    """The cards a stream shows while the run goes on (made from what the run's process wrote, not read
    back) are the cards a reload shows: the pending one with its buttons, then the outcome."""
    fake_model.script(Turn(text="I will delete them " + "now " * 10, token_delay=0.03, tool_calls=[DELETE_50]),
                      Turn(text="All done."))
    chat = browser.new_chat()
    run_id = run_id_in(browser.post(f"/chats/{chat}/messages", {"message": "Delete 50 old users"}).data)
    seen, stream = [], live_events(browser, run_id, after=0)
    for event in stream:
        seen.append(event)
        if "msg-text" in event["data"]:
            break  # the reply is streaming: the stream was open before its card was written
    seen += list(stream)
    run, call_id = pending_call(browser, chat)
    live = "".join(e["data"] for e in seen)
    page = browser.get(f"/chats/{chat}").data.decode()
    assert "Needs your approval" in live and shown(live, f"call-{call_id}") == shown(page, f"call-{call_id}")

    with workspace_locked(databases):  # the tool waits: the stream is open before its outcome is written
        cursor = int(re.search(rb"events\?after=(\d+)", browser.post(f"/runs/{run}/calls/{call_id}/approve").data)
                     .group(1))
        stream = live_events(browser, run_id, after=cursor)
        seen = [next(stream)]
    seen += list(stream)
    live = "".join(e["data"] for e in seen)
    page = browser.get(f"/chats/{chat}").data.decode()
    assert "call-done" in live and "All done." in live
    assert shown(live, f"call-{call_id}") == shown(page, f"call-{call_id}")
