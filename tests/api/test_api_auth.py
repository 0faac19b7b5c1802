"""Who may call the API, and as whom: the bearer key, a locked API without one, API_AUTH=off, and
runs and sessions that belong to their user_id (others get 404, not a hint)."""
from __future__ import annotations

import logging
from contextlib import contextmanager

import pytest

from app import config, create_app
from app.extensions import db
from app.models import Run
from tests.api.apiclient import DELETE_50, Api, documented, paused
from tests.conftest import stop_app
from tests.fake_openai import Turn


@contextmanager
def another_app(app_config, **overrides):
    """The same databases and model, other settings (as if the server restarted with them)."""
    other = create_app({**app_config, **overrides})
    try:
        yield other
    finally:
        stop_app(other)


ASK_FOR_A_CREDENTIAL = ("Send a personal API token (from your account page) or the server's OS_SECURITY_KEY as "
                        "'Authorization: Bearer <token>'.")


@pytest.mark.parametrize("headers, detail", [
    ({}, ASK_FOR_A_CREDENTIAL),
    ({"Authorization": "Bearer wrong-key"}, "The API key is not valid."),
    ({"Authorization": "Bearer act_not-a-real-token"},
     "This API token is not valid: it was revoked, or its account is disabled."),
    ({"Authorization": "Basic dGVzdDp0ZXN0"}, ASK_FOR_A_CREDENTIAL),
])
def test_requests_without_the_key_are_401(app, headers, detail):
    client = Api(app, headers=headers)
    for method, path in [("GET", "/agents"), ("POST", "/agents/data_manager/runs"), ("GET", "/sessions"),
                         ("POST", "/agents/data_manager/runs/run_x/continue"), ("DELETE", "/sessions/s")]:
        response = client.request(method, path, data={"message": "Delete 50 old records from the users table"})
        assert response.status_code == 401, (method, path)
        assert response.get_json() == {"detail": detail}
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Set-Cookie" not in response.headers, "no cookie for API calls"
    with app.app_context():
        assert db.session.query(Run).count() == 0, "and nothing started"


def test_a_browser_cookie_is_not_an_api_credential(app, browser):
    assert browser.get("/account").status_code == 200  # signed in, with its session cookie
    response = browser.client.post("/agents/data_manager/runs", data={"message": "hi"})
    assert response.status_code == 401


def test_without_a_configured_key_the_api_is_locked_and_says_how_to_open_it(app_config):
    with another_app(app_config, OS_SECURITY_KEY=None) as locked:
        response = Api(locked).get("/agents")
        assert response.status_code == 401
        detail = response.get_json()["detail"]
        assert "personal API token" in detail and "Authorization: Bearer <token>" in detail
        assert "set OS_SECURITY_KEY" in detail and "API_AUTH=off" in detail
        assert Api(locked, headers={}).get("/health").status_code == 200, "health needs no key"


def test_api_auth_off_opens_the_api_and_warns_at_start_up(app, app_config, fake_model, caplog):
    caplog.set_level(logging.WARNING, logger="app.web.auth")
    with another_app(app_config, OS_SECURITY_KEY=None, API_AUTH="off") as open_app:  # `app` migrated the database
        assert any("API_AUTH=off" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        fake_model.script(Turn(text="Hi there."))
        response = Api(open_app, headers={}).run("hello", stream=False)
        assert response.status_code == 200 and response.get_json()["content"] == "Hi there."


def test_api_auth_must_be_on_or_off(tmp_path):
    with pytest.raises(config.ConfigError, match="API_AUTH"):
        config.load(str(tmp_path), {"API_AUTH": "maybe"})
    key = "k" * config.MIN_KEY_CHARS
    settings = config.load(str(tmp_path), {"OS_SECURITY_KEY": f" {key} "})
    assert (settings["OS_SECURITY_KEY"], settings["API_AUTH"]) == (key, "on")


def test_a_short_key_stops_the_app_with_one_line_naming_the_variable(tmp_path):
    with pytest.raises(config.ConfigError, match="^OS_SECURITY_KEY must be at least 32 characters long"):
        config.load(str(tmp_path), {"OS_SECURITY_KEY": "s3cret"})
    with pytest.raises(config.ConfigError, match="OS_SECURITY_KEY"):
        config.load(str(tmp_path), {"OS_SECURITY_KEY": "k" * (config.MIN_KEY_CHARS - 1)})


@pytest.mark.parametrize("listen", [{}, {"HOST": "127.0.0.1"}, {"HOST": "::1"}, {"HOST": "localhost"},
                                    {"BIND": "127.0.0.1:8000"}, {"BIND": "[::1]:8000"}])
def test_api_auth_off_is_accepted_on_loopback_only(tmp_path, listen):
    assert config.load(str(tmp_path), {"API_AUTH": "off", **listen})["API_AUTH"] == "off"


@pytest.mark.parametrize("listen", [{"HOST": "0.0.0.0"}, {"HOST": "192.168.1.20"}, {"HOST": "::"},
                                    {"BIND": "0.0.0.0:8000"}, {"BIND": "127.0.0.1:8000,10.0.0.5:8000"}])
def test_api_auth_off_is_refused_when_the_server_listens_on_a_network(tmp_path, listen):
    with pytest.raises(config.ConfigError, match="^API_AUTH=off is only allowed when the server listens on loopback"):
        config.load(str(tmp_path), {"API_AUTH": "off", **listen})


def test_the_docs_and_the_document_need_no_key(app):
    client = Api(app, headers={})
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/health").get_json()["status"] == "ok"


def test_another_user_id_gets_404_for_runs_and_sessions(api, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]))
    run = paused(api, user_id="alice", session_id="shared-name")
    before = harness.rows("users")
    rid, tools = run["run_id"], documented(run["tools"][0])
    not_found = {"detail": f"No runs found for run ID {rid}"}

    for user in ("bob", None):  # another user; no user_id at all (the default account)
        form = {"user_id": user} if user else {}
        assert api.get(f"/agents/data_manager/runs/{rid}", query_string=form).get_json() == not_found
        assert api.continue_(rid, tools, stream=False, **form).status_code == 404
        assert api.post(f"/agents/data_manager/runs/{rid}/cancel", data=form).status_code == 404
        assert api.get("/sessions/shared-name", query_string=form).status_code == 404
        assert api.get("/sessions/shared-name/runs", query_string=form).status_code == 404
        assert api.delete("/sessions/shared-name", query_string=form).status_code == 404
        assert api.get("/sessions", query_string=form).get_json()["data"] == []
        assert api.get("/agents/data_manager/runs", query_string=form).get_json() == []
    assert harness.rows("users") == before

    # Bob may name his own session the same: it is another chat, and Alice's run stays paused.
    fake_model.script(Turn(text="Hello Bob."))
    bobs = api.run("hello", user_id="bob", session_id="shared-name", stream=False).get_json()
    assert bobs["session_id"] == "shared-name" and bobs["run_id"] != rid and bobs["status"] == "COMPLETED"
    assert api.get(f"/agents/data_manager/runs/{rid}", query_string={"user_id": "alice"}).get_json()["status"] == \
        "PAUSED"


def test_no_user_id_acts_as_the_default_user(api, harness, fake_model):
    fake_model.script(Turn(text="Hi."))
    body = api.run("hello", stream=False).get_json()
    assert body["user_id"] == "default"
    assert api.get(f"/agents/data_manager/runs/{body['run_id']}",
                   query_string={"user_id": "default"}).status_code == 200


def test_unknown_agents_and_paths_are_json_404s(api):
    assert api.run("hello", agent="nope").get_json() == {"detail": "Agent nope not found"}
    assert api.get("/agents/nope").status_code == 404
    assert api.get("/agents/nope/runs/run_x").get_json() == {"detail": "Agent nope not found"}
    unmatched = api.get("/agents/data_manager/nothing/here")
    assert unmatched.status_code == 404 and unmatched.mimetype == "application/json"
    wrong_method = api.get("/agents/data_manager/runs/run_x/continue")
    assert wrong_method.status_code == 405 and "detail" in wrong_method.get_json()
