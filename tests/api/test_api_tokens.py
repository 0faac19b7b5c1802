"""Personal API tokens: created on the account page and shown once, they act as their own account only;
the chats they start are that person's chats in the browser."""
from __future__ import annotations

import re

from tests.api.apiclient import DELETE_50, Api, documented
from tests.conftest import Browser
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
