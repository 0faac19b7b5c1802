"""The approvals inbox: every pending call a person may decide, across chats, decidable there; its count
on every page; `GET /approvals` for API clients; and the webhook that announces each new pending call."""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from app import accounts, notify
from app.extensions import db
from app.models import ApprovalNotification, NotificationStatus, Role
from tests.api.conftest import KEY
from tests.conftest import Browser, wait_for
from tests.fake_openai import ToolCall as ModelToolCall, Turn

DELETE_50 = ModelToolCall("delete_records", {"table_name": "users", "count": 50})


def pending_call(browser: Browser, harness, fake_model, text: str = "delete 50 users") -> tuple[str, str, str]:
    """A chat of `browser`'s person whose run waits for a decision on one call: (chat, run, call)."""
    fake_model.script(Turn(tool_calls=[DELETE_50]))
    chat = browser.new_chat()
    page = browser.post(f"/chats/{chat}/messages", {"message": text}).data.decode()
    run_id = re.search(r"/runs/(run_\w+)/events", page).group(1)
    harness.wait(run_id, "paused")
    return chat, run_id, harness.calls(run_id)[0].id


def sidebar_count(html: str) -> str:
    return re.search(r'<a id="approvals-link"[^>]*>([^<]*)</a>', html).group(1)


def test_a_member_sees_their_own_pending_calls_across_chats_and_nobody_elses(app, browser, harness, fake_model):
    first = pending_call(browser, harness, fake_model)
    second = pending_call(browser, harness, fake_model, "and 50 more")
    other = Browser(app)

    inbox = browser.get("/approvals").data.decode()
    for chat, run_id, call_id in (first, second):
        assert f'id="call-{call_id}"' in inbox and f"/runs/{run_id}/calls/{call_id}/approve" in inbox
        assert f"/chats/{chat}#call-{call_id}" in inbox
    assert sidebar_count(inbox) == "Approvals (2)"
    page = browser.get(f"/chats/{first[0]}").data.decode()
    assert sidebar_count(page) == "Approvals (2)"
    assert re.search(r"<title>\(2\) [^<]*· Agent Chat</title>", page)

    theirs = other.get("/approvals").data.decode()
    assert "Nothing is waiting." in theirs and first[2] not in theirs
    assert sidebar_count(theirs) == "Approvals" and "<title>Approvals · Agent Chat</title>" in theirs
    assert other.post(f"/runs/{first[1]}/calls/{first[2]}/approve", {"view": "inbox"}).status_code == 404


def test_an_admin_sees_everyones_with_whose_it_is_and_the_admin_page_links_there(app, browser, harness, fake_model):
    _, run_id, call_id = pending_call(browser, harness, fake_model)
    admin = Browser(app, role=Role.ADMIN)
    inbox = admin.get("/approvals").data.decode()
    assert f'id="call-{call_id}"' in inbox and browser.email in inbox
    assert sidebar_count(inbox) == "Approvals (1)"
    assert 'href="/approvals"' in admin.get("/admin").data.decode()


def test_deciding_in_the_chat_updates_the_card_the_run_and_the_count_in_place(app, browser, harness, fake_model):
    chat, run_id, call_id = pending_call(browser, harness, fake_model)
    pending_call(browser, harness, fake_model, "more")

    edited = browser.post(f"/runs/{run_id}/calls/{call_id}/edit", {"arg.table_name": "users", "arg.count": "10"})
    assert edited.status_code == 200
    edited = edited.data.decode()
    assert f'id="call-{call_id}"' in edited and "call-pending" in edited and "10" in edited
    assert re.search(r'<a id="approvals-link"[^>]*hx-swap-oob="true"[^>]*>Approvals \(2\)</a>', edited), \
        "an edited call still waits"

    fake_model.script(Turn(text="Done."))
    decided = browser.post(f"/runs/{run_id}/calls/{call_id}/approve", {"seen": re.search(
        r'name="seen" value="([^"]+)"', edited).group(1)}).data.decode()
    assert f'id="call-{call_id}"' in decided and "call-pending" not in decided
    assert "Edited and approved by you" in decided
    assert re.search(r'<a id="approvals-link"[^>]*hx-swap-oob="true"[^>]*>Approvals \(1\)</a>', decided)
    assert f'/runs/{run_id}/events' in decided, "the run's stream follows it from the decision on"
    harness.wait(run_id, "completed")
    assert sidebar_count(browser.get(f"/chats/{chat}").data.decode()) == "Approvals (1)"


def test_deciding_in_the_inbox_updates_the_card_and_the_count_in_place(app, browser, harness, fake_model):
    _, run_id, call_id = pending_call(browser, harness, fake_model)
    _, other_run, other_call = pending_call(browser, harness, fake_model, "more")
    browser.get("/approvals")

    unsigned = browser.client.post(f"/runs/{run_id}/calls/{call_id}/approve", data={"view": "inbox"},
                                   headers={"HX-Request": "true"})
    assert unsigned.status_code == 400 and harness.calls(run_id)[0].status == "pending"

    fake_model.script(Turn(text="Done."))
    decided = browser.post(f"/runs/{run_id}/calls/{call_id}/approve", {"view": "inbox"}).data.decode()
    assert f'id="call-{call_id}"' in decided and "call-pending" not in decided
    assert "Approved by you" in decided
    assert re.search(r'<a id="approvals-link"[^>]*hx-swap-oob="true"[^>]*>Approvals \(1\)</a>', decided)
    assert "<title>(1) Approvals · Agent Chat</title>" in decided
    assert harness.wait(run_id, "completed").status == "completed"

    again = browser.post(f"/runs/{run_id}/calls/{call_id}/reject", {"view": "inbox"})
    assert again.status_code == 409 and "already" in again.data.decode()

    # Without JavaScript: a plain form, then back to the inbox.
    plain = browser.post(f"/runs/{other_run}/calls/{other_call}/reject", {"view": "inbox", "reason": "not now"},
                         htmx=False)
    assert plain.status_code == 303 and plain.headers["Location"] == "/approvals"
    assert harness.calls(other_run)[0].status == "rejected"
    assert sidebar_count(browser.get("/approvals").data.decode()) == "Approvals"


def test_deciding_in_the_chat_refreshes_the_sidebar_count(app, browser, harness, fake_model):
    chat, run_id, call_id = pending_call(browser, harness, fake_model)
    fake_model.script(Turn(text="Done."))
    decided = browser.post(f"/runs/{run_id}/calls/{call_id}/approve").data.decode()
    assert re.search(r'<a id="approvals-link"[^>]*hx-swap-oob="true"[^>]*>Approvals</a>', decided)


@pytest.fixture
def app_config(app_config):
    return {**app_config, "OS_SECURITY_KEY": KEY}


def test_api_clients_list_pending_calls_with_a_token_their_own_with_the_service_key_all(app, browser, harness,
                                                                                          fake_model):
    _, run_id, call_id = pending_call(browser, harness, fake_model)
    other = Browser(app)
    _, other_run, other_call = pending_call(other, harness, fake_model)
    with app.app_context():
        token = accounts.create_api_token(browser.account_id, "script").secret
    client = app.test_client()

    mine = client.get("/approvals", headers={"Authorization": f"Bearer {token}"})
    assert mine.status_code == 200 and mine.mimetype == "application/json"
    [item] = mine.get_json()["data"]
    assert item["id"] == call_id and item["run_id"] == run_id and item["tool_name"] == "delete_records"
    assert item["tool_args"] == {"table_name": "users", "count": 50} and item["requester"] == browser.email
    assert item["card_url"].endswith(f"/approvals#call-{call_id}")

    everyone = client.get("/approvals", headers={"Authorization": f"Bearer {KEY}"}).get_json()["data"]
    assert {entry["id"] for entry in everyone} == {call_id, other_call}

    refused = client.get("/approvals", headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401 and "detail" in refused.get_json()
    assert client.get("/approvals").headers["Location"].startswith("/login")


# --- The webhook ------------------------------------------------------------------------------------

class Receiver:
    """A webhook receiver on 127.0.0.1 that answers each POST with the next status of `statuses`
    (the last one repeats) and keeps what it received."""

    def __init__(self, statuses=(200,)):
        self.statuses, self.received = list(statuses), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.received.append(body)
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receivers = []

    def start(statuses=(200,)):
        receivers.append(Receiver(statuses))
        return receivers[-1]
    yield start
    for each in receivers:
        each.close()


def configure_webhook(app, url: str, attempts: int = 3):
    app.config.update(APPROVAL_WEBHOOK_URL=url, APPROVAL_WEBHOOK_ATTEMPTS=attempts, APPROVAL_WEBHOOK_BACKOFF=0.05,
                      APPROVAL_WEBHOOK_SCAN_SECONDS=0.05, PUBLIC_URL="https://chat.example.test")


def notification(app, call_id: str) -> ApprovalNotification:
    with app.app_context():
        row = db.session.scalar(sa.select(ApprovalNotification).where(ApprovalNotification.call_id == call_id))
        db.session.expunge_all()
        return row


def test_each_new_pending_call_is_posted_once_with_a_link_to_its_card(app, browser, harness, fake_model, receiver):
    hook = receiver()
    configure_webhook(app, hook.url)
    _, run_id, call_id = pending_call(browser, harness, fake_model)
    notifier = app.extensions["approval_notifier"]
    notifier.start()
    try:
        wait_for(lambda: hook.received, message="the webhook to be called")
        wait_for(lambda: notification(app, call_id).status == NotificationStatus.DELIVERED, message="delivery recorded")
        assert deliver(app) == 0  # more passes, as another process's, send nothing again
    finally:
        notifier.stop()
    [body] = hook.received
    assert body["call_id"] == call_id and body["run_id"] == run_id and body["tool"] == "delete_records"
    assert body["arguments"] == {"table_name": "users", "count": 50} and body["requester"] == browser.email
    assert body["agent"] == "Data Manager" and body["card_url"] == f"https://chat.example.test/approvals#call-{call_id}"
    assert "delete_records" in body["text"] and body["card_url"] in body["text"]
    assert notification(app, call_id).attempts == 1
    assert harness.calls(run_id)[0].status == "pending", "a notification never decides anything"


def test_a_failed_delivery_is_retried_with_backoff_and_given_up_after_the_last_attempt(app, browser, harness,
                                                                                     fake_model, receiver):
    flaky = receiver([500, 200])
    configure_webhook(app, flaky.url, attempts=3)
    _, _, call_id = pending_call(browser, harness, fake_model)
    assert deliver(app) == 0  # the 500
    failed = notification(app, call_id)
    assert failed.status == NotificationStatus.WAITING and failed.attempts == 1 and failed.last_error == "HTTP 500"
    assert failed.next_attempt_at is not None
    wait_for(lambda: deliver(app) == 1, timeout=5, message="the retry to be delivered")
    assert notification(app, call_id).status == NotificationStatus.DELIVERED and len(flaky.received) == 2

    broken = receiver([500])
    configure_webhook(app, broken.url, attempts=3)
    _, _, second = pending_call(browser, harness, fake_model, "more")
    wait_for(lambda: deliver(app) < 0 or notification(app, second).status == NotificationStatus.GAVE_UP,
             timeout=5, message="giving up")
    assert notification(app, second).attempts == 3 and len(broken.received) == 3


def deliver(app) -> int:
    """One pass of the notifier, as a serving process's thread makes it; how many it delivered."""
    with app.app_context():
        try:
            return notify.deliver_due(app.config, str)
        finally:
            db.session.remove()


def test_two_processes_never_both_claim_a_notification_and_a_decided_call_is_not_announced(app, browser, harness,
                                                                                           fake_model, receiver):
    hook = receiver()
    configure_webhook(app, hook.url)
    _, run_id, call_id = pending_call(browser, harness, fake_model)
    with app.app_context():
        assert notify.record_new_pending() == 1 and notify.record_new_pending() == 0
        first = notify.claim_due()
        second = notify.claim_due()  # another process, the same moment
    assert len(first) == 1 and second == []

    _, other_run, other_call = pending_call(browser, harness, fake_model, "more")
    with app.app_context():
        notify.record_new_pending()
    harness.decide(browser.account_id, other_run, other_call, approve=False)
    deliver(app)
    assert notification(app, other_call).status == NotificationStatus.SKIPPED
    assert all(body["call_id"] != other_call for body in hook.received)


@pytest.fixture
def hook():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def server_env(server_env, hook):
    return {**server_env, "APPROVAL_WEBHOOK_URL": hook.url, "APPROVAL_WEBHOOK_SCAN_SECONDS": "0.2",
            "PUBLIC_URL": "https://chat.example.test"}


def test_a_server_announces_a_new_pending_call_once_whatever_its_worker_count(live_server, app, harness,
                                                                              fake_model, hook):
    """gunicorn's workers (two on PostgreSQL) each scan: the claim lets exactly one of them send it."""
    fake_model.script(Turn(tool_calls=[DELETE_50]))
    _, chat = harness.chat()
    run_id = harness.send(chat, "delete 50 users")
    harness.wait(run_id, "paused")
    call_id = harness.calls(run_id)[0].id
    wait_for(lambda: hook.received, message="the server to call the webhook")
    wait_for(lambda: notification(app, call_id).status == NotificationStatus.DELIVERED, message="delivery recorded")
    time.sleep(1)  # several more scans of every worker
    assert [body["call_id"] for body in hook.received] == [call_id]
