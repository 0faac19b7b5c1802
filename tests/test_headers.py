"""Cookies and headers as a browser receives them: SameSite=Lax on every cookie; Secure, `__Host-` and
HSTS over HTTPS (directly, or behind a trusted proxy); no-store on everything but static files; the
CSP and friends as before; a CSRF token that lives as long as the session; and an open API
(API_AUTH=off) that refuses other sites."""
from __future__ import annotations

import re
import time

import itsdangerous
import pytest

from app import create_app
from tests.conftest import TEST_PASSWORD, Browser, make_account, stop_app
from tests.fake_openai import ToolCall, Turn

DELETE_50 = ToolCall("delete_records", {"table_name": "users", "count": 50})


def set_cookies(response) -> dict[str, str]:
    return {cookie.split("=", 1)[0]: cookie for cookie in response.headers.getlist("Set-Cookie")}


def attributes(cookie: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]} | \
        {part.strip().lower() for part in cookie.split(";")[1:]}


def sign_in_response(app, remember=True, **kwargs):
    """The response to signing in with "keep me signed in": it sets the session and remember-me cookies."""
    person = Browser(app, sign_in=False)
    _, email = make_account(app)
    token = re.search(r'name="csrf_token" value="([^"]+)"', person.client.get("/login", **kwargs).get_data(
        as_text=True)).group(1)
    referer = {"Referer": kwargs["base_url"] + "/login"} if "base_url" in kwargs else {}  # HTTPS: checked
    return person.client, person.client.post("/login", headers=referer, data={
        "email": email, "password": TEST_PASSWORD, "csrf_token": token, **({"remember": "on"} if remember else {})},
        **kwargs)


def csrf_signed_at(moment: int):
    """Sign CSRF tokens as if at `moment` (the page rendered then); sessions are signed as usual."""
    real = itsdangerous.timed.TimestampSigner.get_timestamp

    def get_timestamp(self):
        return moment if self.salt in (b"wtf-csrf-token", "wtf-csrf-token") else real(self)
    return get_timestamp


def test_over_http_every_cookie_is_samesite_lax_and_httponly(app):
    cookies = set_cookies(sign_in_response(app)[1])
    assert set(cookies) == {"session", "remember_token"}, "the session, and Flask-Login's remember-me"
    for cookie in cookies.values():
        assert "samesite=lax" in attributes(cookie) and "httponly" in attributes(cookie)
        assert "secure" not in attributes(cookie), "plain HTTP (scripts/run): a Secure cookie would never return"


def test_over_https_cookies_are_secure_and_host_prefixed_with_hsts(app):
    client, response = sign_in_response(app, base_url="https://chat.example.org")
    cookies = set_cookies(response)
    assert "__Host-session" in cookies and "session" not in cookies
    host_cookie = cookies["__Host-session"]
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= attributes(host_cookie)
    assert "domain" not in attributes(host_cookie), "__Host- cookies name no domain"
    assert "secure" in attributes(cookies["remember_token"])
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    # The __Host- cookie is read back: signed in, and the session's CSRF token checks out.
    account_page = client.get("/account", base_url="https://chat.example.org")
    assert account_page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', account_page.get_data(as_text=True)).group(1)
    created = client.post("/chats", data={"csrf_token": token}, base_url="https://chat.example.org",
                          headers={"Referer": "https://chat.example.org/"})  # as the browser sends it
    assert created.status_code == 303
    assert "Strict-Transport-Security" not in client.get("/health").headers, "no HSTS over plain HTTP"


@pytest.fixture
def behind_a_proxy(app_config):
    app = create_app({**app_config, "PROXY_FIX": 1})
    yield app
    stop_app(app)


def test_behind_a_trusted_proxy_the_app_knows_it_is_https(app, behind_a_proxy):
    make_account(app)  # so /login is the sign-in page, not the first-run setup
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Host": "chat.example.org"}
    response = behind_a_proxy.test_client().get("/login", headers=forwarded)
    assert "__Host-session" in set_cookies(response)
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"

    ignored = app.test_client().get("/login", headers=forwarded)  # PROXY_FIX unset: a client's header is not trusted
    assert "__Host-session" not in set_cookies(ignored) and "Strict-Transport-Security" not in ignored.headers


def test_pages_fragments_streams_and_the_api_are_no_store_but_static_files_are_not(browser, harness, fake_model):
    fake_model.script(Turn(text="Hello."))
    chat = browser.new_chat()
    page = browser.get(f"/chats/{chat}")
    fragment = browser.post(f"/chats/{chat}/messages", {"message": "hi"})
    run_id = re.search(rb"/runs/(run_[0-9a-f]+)/events", fragment.data).group(1).decode()
    harness.wait(run_id)
    stream = browser.client.get(f"/runs/{run_id}/events?after=0")
    for response in (page, fragment, stream, browser.get("/health"), browser.get("/docs"), browser.get("/nope")):
        assert response.headers["Cache-Control"] == "no-store", response.request.path
    static = browser.get("/static/js/app.js")
    assert static.status_code == 200 and "no-store" not in static.headers.get("Cache-Control", "")


def test_what_passed_before_still_holds(browser):
    for response in (browser.get("/"), browser.get("/chats/nope"), browser.get("/health")):
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
    chat = browser.new_chat()
    assert re.fullmatch(r"chat_[0-9a-f]{24}", chat), "96 random bits"
    assert Browser(browser.client.application).get(f"/chats/{chat}").status_code == 404, "owner-scoped"


def test_a_card_left_open_for_hours_can_still_be_decided(browser, harness, fake_model, monkeypatch):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Done."))
    chat = browser.new_chat()
    run_id = re.search(rb"/runs/(run_[0-9a-f]+)/events",
                       browser.post(f"/chats/{chat}/messages", {"message": "Delete 50 old records"}).data).group(1)
    harness.wait(run_id.decode(), "paused")
    ten_hours_ago = int(time.time()) - 10 * 3600
    with monkeypatch.context() as travel:  # the page (and its token) rendered ten hours ago
        travel.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", csrf_signed_at(ten_hours_ago))
        page = browser.get(f"/chats/{chat}").data
    call = re.search(rb"/runs/(run_\w+)/calls/(tc_\w+)/approve", page).group(2).decode()
    approved = browser.post(f"/runs/{run_id.decode()}/calls/{call}/approve")
    assert approved.status_code == 200, approved.data
    assert harness.wait(run_id.decode(), "completed").status == "completed"


def test_an_expired_token_would_have_been_refused(app, browser, harness, fake_model, monkeypatch):
    """The test above can fail: with an hour's limit (Flask-WTF's default) the same card is refused."""
    app.config["WTF_CSRF_TIME_LIMIT"] = 3600
    chat = browser.new_chat()
    with monkeypatch.context() as travel:
        travel.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", csrf_signed_at(int(time.time()) - 36000))
        browser.get(f"/chats/{chat}")
    response = browser.post(f"/chats/{chat}/messages", {"message": "hi"})
    assert response.status_code == 400 and b"Your session expired" in response.data


# --- API_AUTH=off ------------------------------------------------------------------------------

@pytest.fixture
def open_api(app, app_config):
    app = create_app({**app_config, "OS_SECURITY_KEY": None, "API_AUTH": "off"})
    yield app
    stop_app(app)


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"},
                                     {"Origin": "null"}, {"Origin": "http://localhost:8001"}])
def test_an_open_api_refuses_other_sites(open_api, harness, headers):
    response = open_api.test_client().post("/agents/data_manager/runs", headers=headers,
                                           data={"message": "Delete 50 old records from the users table"})
    assert response.status_code == 403
    assert "refuses requests from other web sites" in response.get_json()["detail"]
    assert open_api.test_client().get("/sessions", headers=headers).status_code == 403


@pytest.mark.parametrize("headers", [{}, {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"},
                                     {"Sec-Fetch-Site": "none"}])
def test_an_open_api_still_answers_scripts_and_its_own_pages(open_api, fake_model, headers):
    fake_model.script(Turn(text="Hi."))
    response = open_api.test_client().post("/agents/data_manager/runs", headers=headers,
                                           data={"message": "hello", "stream": "false"})
    assert response.status_code == 200 and response.get_json()["content"] == "Hi."
