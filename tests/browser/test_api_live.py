"""A chat page left open on a card follows a decision made over the REST API, live, in Chromium.

Until sign-in lands a browser is its own guest account, so the page is signed in here the way sign-in
will do it: a session cookie naming the API user's account (signed with the app's key)."""
from __future__ import annotations

import json

import pytest
import requests
import sqlalchemy as sa
from playwright.sync_api import expect

from app.extensions import db
from app.models import Account
from tests.api.apiclient import AUTH, DELETE_50, KEY, documented
from tests.fake_openai import Turn

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


@pytest.fixture
def server_env(server_env):
    return {**server_env, "OS_SECURITY_KEY": KEY}


def test_an_open_page_follows_a_decision_made_over_the_api(page, app, live_server, fake_model, harness):
    fake_model.script(Turn(text="This needs your approval.", tool_calls=[DELETE_50]),
                      Turn(text="Deleted, as the script approved.", token_delay=0.02))
    before = harness.rows("users")
    run = requests.post(f"{live_server.url}/agents/data_manager/runs", headers=AUTH, timeout=30, files={
        "message": (None, "Delete 50 old records from the users table"), "user_id": (None, "alice"),
        "stream": (None, "false")}).json()
    assert run["status"] == "PAUSED"

    with app.app_context():
        account_id = db.session.scalar(sa.select(Account.id).where(Account.external_id == "alice"))
    cookie = app.session_interface.get_signing_serializer(app).dumps({"_user_id": str(account_id), "_fresh": True})
    page.context.add_cookies([{"name": "session", "value": cookie, "url": live_server.url}])
    page.goto(f"/chats/{harness.run(run['run_id']).session_id}")
    expect(page.locator(".call-pending")).to_be_visible()
    expect(page.locator("#run-status")).to_contain_text("Waiting for your decision.")

    decided = requests.post(f"{live_server.url}/agents/data_manager/runs/{run['run_id']}/continue", headers=AUTH,
                            timeout=30, files={"tools": (None, json.dumps(documented(run["tools"][0]))),
                                               "user_id": (None, "alice")})
    assert decided.status_code == 200

    # No reload: the open page's stream shows the outcome and the reply as they happen.
    expect(page.locator(".call-done")).to_contain_text("Deleted 50 records from users")
    expect(page.locator(".msg-assistant .msg-text").last).to_have_text("Deleted, as the script approved.")
    expect(page.locator("#composer-input")).to_be_enabled()
    assert page.locator(".msg-assistant").count() == 2, "every reply once"
    assert harness.rows("users") == before - 50
