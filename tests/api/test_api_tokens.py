"""Personal API tokens: created on the account page and shown once, they act as their own account only;
the chats they start are that person's chats in the browser; a revoked token is refused by every
process at once, though each remembers the tokens it has seen (PostgreSQL)."""
from __future__ import annotations

import re
import time

import pytest
import sqlalchemy as sa

from app import sign_ins
from tests.api.apiclient import DELETE_50, Api, documented
from tests.conftest import Browser, reads_of, wait_for
from tests.fake_openai import Turn


def create_token(browser, name="nightly cleanup") -> str:
    page = browser.post("/account/tokens", {"name": name}, htmx=False).data.decode()
    return re.search(r'id="new-token">(act_[^<]+)<', page).group(1)


def test_a_token_is_shown_once_listed_by_prefix_and_revoked(app, browser):
    secret = create_token(browser)
    account_page = browser.get("/account").data.decode()
    assert secret not in account_page, "shown once"
    assert f"{secret[:12]}…" in account_page and "nightly cleanup" in account_page and "never" in account_page
    api = Api(app, headers={"Authorization": f"Bearer {secret}"})
    assert api.get("/sessions").status_code == 200
    assert "never" not in browser.get("/account").data.decode(), "last use is recorded"

    token_id = re.search(r"/account/tokens/(\d+)/revoke", account_page).group(1)
    assert browser.post(f"/account/tokens/{token_id}/revoke", htmx=False).status_code == 303
    assert api.get("/sessions").status_code == 401
    assert Api(app, headers={"Authorization": f"Bearer {secret}"}).get("/sessions").get_json()["detail"] == \
        "This API token is not valid: it was revoked, or its account is disabled."


def test_a_token_cannot_be_revoked_by_someone_else(app, browser):
    create_token(browser)
    token_id = re.search(r"/account/tokens/(\d+)/revoke", browser.get("/account").data.decode()).group(1)
    assert Browser(app).post(f"/account/tokens/{token_id}/revoke", htmx=False).status_code == 404


def test_a_token_acts_for_its_own_account_only(app, browser, fake_model):
    api = Api(app, headers={"Authorization": f"Bearer {create_token(browser)}"})
    refused = api.run("hello", user_id="someone-else", stream=False)
    assert refused.status_code == 403
    assert refused.get_json() == {"detail": "This token acts for its own account only, not for user_id 'someone-else'."}
    assert api.get("/sessions", query_string={"user_id": "default"}).status_code == 403

    fake_model.script(Turn(text="Hi."), Turn(text="Hi again."))
    mine = api.run("hello", stream=False).get_json()
    assert (mine["status"], mine["user_id"]) == ("COMPLETED", browser.email)
    assert api.run("hello", user_id=browser.email, stream=False).status_code == 200, "naming yourself is fine"


def test_a_chat_started_with_a_token_is_the_same_chat_in_the_browser(app, browser, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Deleted, as you approved in the chat."))
    api = Api(app, headers={"Authorization": f"Bearer {create_token(browser)}"})
    run = api.run("Delete 50 old records from the users table", session_id="from-my-script", stream=False).get_json()
    assert run["status"] == "PAUSED"
    before = harness.rows("users")

    chat_id = harness.run(run["run_id"]).session_id
    page = browser.get(f"/chats/{chat_id}").data.decode()
    assert "Needs your approval" in page
    call_id = re.search(r"/calls/(tc_\w+)/approve", page).group(1)
    assert browser.post(f"/runs/{run['run_id']}/calls/{call_id}/approve").status_code == 200
    assert harness.wait(run["run_id"], "completed", "failed").status == "completed"
    assert harness.rows("users") == before - 50

    seen = api.get(f"/agents/data_manager/runs/{run['run_id']}").get_json()
    assert (seen["status"], seen["tools"][0]["confirmed"]) == ("COMPLETED", True)
    assert api.continue_(run["run_id"], documented(run["tools"][0]), stream=False).status_code == 409
    assert [s["session_id"] for s in api.get("/sessions").get_json()["data"]] == ["from-my-script"]


def test_a_token_name_is_required(browser):
    response = browser.post("/account/tokens", {"name": "   "}, htmx=False)
    assert response.status_code == 422 and b"Give the token a name" in response.data


# A process remembers which account a token names (PostgreSQL, as a browser's sign-in: app.sign_ins)
# and forgets it the moment the token is revoked anywhere.

AT_ONCE = 5.0  # seconds: far less than a remembered token lives (app.sign_ins.ENTRY_SECONDS)
postgresql_only = pytest.mark.parametrize("databases", ["postgresql"], indirect=True)


def token_reads(app):
    return reads_of(app, "api_tokens")


def remembered_token_api(app, browser) -> tuple[Api, str]:
    secret = create_token(browser)
    api = Api(app, headers={"Authorization": f"Bearer {secret}"})
    with token_reads(app) as reads:  # the notifications of the token's own creation arrive a moment later
        wait_for(lambda: reads.clear() or api.get("/sessions").status_code == 200 and not reads,
                 message="a request that finds the token remembered")
    return api, secret


def test_postgresql_remembers_a_token_and_sqlite_reads_it_each_time(app, databases, browser):
    remembers = databases.backend == "postgresql"
    api = remembered_token_api(app, browser)[0] if remembers else \
        Api(app, headers={"Authorization": f"Bearer {create_token(browser)}"})
    with token_reads(app) as reads:
        for _ in range(3):
            assert api.get("/sessions").status_code == 200
    assert len(reads) == (0 if remembers else 3)
    assert "never" not in browser.get("/account").data.decode(), "its last use is still recorded"


@postgresql_only
def test_a_token_revoked_in_the_browser_is_refused_here_without_waiting_for_the_notification(app, browser):
    api, _ = remembered_token_api(app, browser)
    app.extensions["run_events"].listener.handlers[sign_ins.CHANNEL] = lambda payload: None  # as if late
    token_id = re.search(r"/account/tokens/(\d+)/revoke", browser.get("/account").data.decode()).group(1)
    assert browser.post(f"/account/tokens/{token_id}/revoke", htmx=False).status_code == 303
    assert api.get("/sessions").status_code == 401


@postgresql_only
def test_a_token_revoked_by_another_process_is_refused_at_once(app, browser, databases):
    api, secret = remembered_token_api(app, browser)
    other_process = sa.create_engine(databases.app_url)  # its own connection: this process hears only the trigger
    try:
        with other_process.begin() as conn:
            conn.execute(sa.text("UPDATE api_tokens SET revoked_at = now() WHERE prefix = :prefix"),
                         {"prefix": secret[:12]})
    finally:
        other_process.dispose()
    started = time.monotonic()
    wait_for(lambda: api.get("/sessions").status_code == 401, timeout=AT_ONCE, message="the token refused")
    assert time.monotonic() - started < AT_ONCE


@postgresql_only
def test_recording_a_tokens_last_use_does_not_make_every_process_forget(app, browser, databases):
    api, secret = remembered_token_api(app, browser)
    other_process = sa.create_engine(databases.app_url)
    try:
        with other_process.begin() as conn:  # what account_for_api_token writes once a minute
            conn.execute(sa.text("UPDATE api_tokens SET last_used_at = now() WHERE prefix = :prefix"),
                         {"prefix": secret[:12]})
    finally:
        other_process.dispose()
    time.sleep(0.5)  # a notification, if there were one, would have arrived
    with token_reads(app) as reads:
        assert api.get("/sessions").status_code == 200
    assert reads == []
