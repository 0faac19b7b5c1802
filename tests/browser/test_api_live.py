"""A chat page left open on a card follows a decision made over the REST API, live, in Chromium: a script
with the person's own API token starts the run and decides it; the person watches in their browser."""
from __future__ import annotations

import json

import pytest
import requests
from playwright.sync_api import expect

from app import accounts
from tests.api.apiclient import DELETE_50, KEY, documented
from tests.fake_openai import Turn

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


@pytest.fixture
def server_env(server_env):
    return {**server_env, "OS_SECURITY_KEY": KEY}


def test_an_open_page_follows_a_decision_made_over_the_api(page, app, live_server, fake_model, harness):
    fake_model.script(Turn(text="This needs your approval.", tool_calls=[DELETE_50]),
                      Turn(text="Deleted, as the script approved.", token_delay=0.02))
    before = harness.rows("users")
    with app.app_context():
        auth = {"Authorization": f"Bearer {accounts.create_api_token(page.account_id, 'cleanup script').secret}"}
    run = requests.post(f"{live_server.url}/agents/data_manager/runs", headers=auth, timeout=30, files={
        "message": (None, "Delete 50 old records from the users table"), "stream": (None, "false")}).json()
    assert run["status"] == "PAUSED"

    page.goto(f"/chats/{harness.run(run['run_id']).session_id}")
    expect(page.locator(".call-pending")).to_be_visible()
    expect(page.locator("#run-status")).to_contain_text("Waiting for your approval.")

    decided = requests.post(f"{live_server.url}/agents/data_manager/runs/{run['run_id']}/continue", headers=auth,
                            timeout=30, files={"tools": (None, json.dumps(documented(run["tools"][0])))})
    assert decided.status_code == 200

    # No reload: the open page's stream shows the outcome and the reply as they happen.
    expect(page.locator(".call-done")).to_contain_text("Deleted 50 records from users")
    expect(page.locator(".msg-assistant .msg-text").last).to_have_text("Deleted, as the script approved.")
    expect(page.locator("#composer-input")).to_be_enabled()
    assert page.locator(".msg-assistant").count() == 2, "every reply once"
    assert harness.rows("users") == before - 50
