"""Signing in, the first-run setup, invites, roles and sessions, as a person (or an attacker) sees them."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app import accounts
from app.extensions import db
from app.models import Account, ChatSession, Invite, LoginSession, Role, ToolCall, utcnow
from tests.conftest import ROOT, TEST_PASSWORD, Browser, make_account
from tests.fake_openai import ToolCall as ModelToolCall, Turn

DELETE_50 = ModelToolCall("delete_records", {"table_name": "users", "count": 50})


def account_count(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(Account))


# --- Nobody gets in without an account -------------------------------------------------------------------

def test_a_fresh_server_leads_to_the_setup_page_and_creates_no_guest(app):
    visitor = app.test_client()
    assert visitor.get("/").headers["Location"] == "/setup"
    assert visitor.get("/chats/chat_whatever").headers["Location"] == "/setup"
    assert visitor.get("/login").headers["Location"] == "/setup"
    assert account_count(app) == 0, "no guest account is created for a visitor"


def test_signed_out_requests_go_to_the_login_page_an_htmx_request_is_told_to_and_streams_get_401(app, browser):
    stranger = app.test_client()
    assert stranger.get("/chats/chat_x").headers["Location"].startswith("/login?next=/chats/chat_x")
    htmx = stranger.post("/chats", headers={"HX-Request": "true"})
    assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/login")
    assert stranger.get("/runs/run_x/events").status_code == 401
    assert stranger.get("/account").status_code == 302
    assert account_count(app) == 1, "only the browser fixture's account"


def test_setup_creates_the_first_admin_once_and_then_is_gone(app):
    person = Browser(app, sign_in=False)
    page = person.get("/setup")
    assert page.status_code == 200 and b'<label for="email">Email</label>' in page.data
    weak = person.client.post("/setup", data={"email": "root@example.test", "password": "short",
                                              "csrf_token": person.csrf})
    assert weak.status_code == 422 and b"at least 10 characters" in weak.data
    done = person.client.post("/setup", data={"email": "Root@Example.test", "password": TEST_PASSWORD,
                                              "csrf_token": person.csrf})
    assert done.status_code == 303
    with app.app_context():
        admin = db.session.scalar(sa.select(Account))
        assert (admin.email, admin.role) == ("root@example.test", Role.ADMIN)
    assert person.get("/").status_code in (200, 302), "signed in"
    assert person.get("/account").status_code == 200
    assert app.test_client().get("/setup").status_code == 404, "the setup page exists only while nobody can sign in"


def test_the_first_admin_receives_the_chats_of_guests_from_before_sign_in(app, harness):
    guest, chat_id = harness.chat()  # an account with neither email nor API user id: a pre-sign-in guest
    api_user = None
    with app.app_context():
        api_user = Account(external_id="script-user")
        db.session.add(api_user)
        db.session.commit()
        api_chat = ChatSession(owner_id=api_user.id, agent_id="data_manager")
        db.session.add(api_chat)
        db.session.commit()
        api_chat_id = api_chat.id
        admin = accounts.create_first_admin("root@example.test", TEST_PASSWORD)
        assert db.session.get(ChatSession, chat_id).owner_id == admin.id
        assert db.session.get(ChatSession, api_chat_id).owner_id == api_user.id, "API users keep theirs"


# --- Signing in and out -------------------------------------------------------------------------------------

def test_a_wrong_password_or_unknown_email_is_refused_alike(app):
    _, email = make_account(app)
    person = Browser(app, sign_in=False)
    for address, password in ((email, "wrong password!"), ("nobody@example.test", TEST_PASSWORD)):
        refused = person.sign_in(address, password)
        assert refused.status_code == 401
        assert b"That email and password don&#39;t match an account." in refused.data
        assert person.get("/account").status_code == 302


def test_an_unknown_email_still_costs_a_full_password_check(app, monkeypatch):
    """Timing must not tell which emails exist: with no account, the password is still checked against
    a hash as costly as a new password's (made when first needed, not when a process starts)."""
    make_account(app)  # someone exists: the sign-in page is open
    checked = []
    monkeypatch.setattr(accounts, "check_password_hash", lambda stored, _password: checked.append(stored) and False)
    person = Browser(app, sign_in=False)
    for _ in range(2):
        assert person.sign_in("nobody@example.test", TEST_PASSWORD).status_code == 401
    new_password_method = accounts.hash_password("a new password").split("$")[0]  # e.g. scrypt:32768:8:1
    assert [stored.split("$")[0] for stored in checked] == [new_password_method] * 2


def test_sign_in_rotates_the_session_and_the_cookie_names_no_account_number(app):
    account_id, email = make_account(app)
    person = Browser(app, sign_in=False)
    person.get("/login")
    before = person.client.get_cookie("session").value
    assert person.sign_in(email, remember=True).status_code == 303
    after = person.client.get_cookie("session").value
    assert after != before
    remember = person.client.get_cookie("remember_token").value
    assert not remember.startswith(f"{account_id}|"), "the remember-me cookie names a login session, not the account"
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(LoginSession)) == 1


def test_open_redirects_after_sign_in_stay_on_this_site(app):
    _, email = make_account(app)
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        person = Browser(app, sign_in=False)  # a fresh browser for each try
        person.get("/login")
        response = person.client.post("/login", data={"email": email, "password": TEST_PASSWORD,
                                                       "csrf_token": person.csrf, "next": target})
        assert response.headers["Location"] == "/", target


def test_sign_out_ends_the_session_on_the_server(app, browser):
    stolen = browser.client.get_cookie("session").value
    assert browser.post("/logout", htmx=False).status_code == 303
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    assert replay.get("/account").status_code == 302, "a copy of the old cookie signs nobody in"


def test_sign_out_everywhere_and_a_password_change_end_every_session_and_remember_me(app):
    account_id, email = make_account(app)
    laptop, phone = Browser(app, sign_in=False), Browser(app, sign_in=False)
    laptop.sign_in(email, remember=True)
    phone.sign_in(email, remember=True)
    remembered = app.test_client()
    remembered.set_cookie("remember_token", laptop.client.get_cookie("remember_token").value)
    assert remembered.get("/account").status_code == 200, "remember-me alone signs in"

    changed = phone.post("/account/password", {"current_password": TEST_PASSWORD, "new_password": "a new one, longer"})
    assert changed.status_code == 200 and b"Password changed" in changed.data
    assert phone.get("/account").status_code == 200, "the browser that changed it stays signed in"
    assert laptop.get("/account").status_code == 302
    fresh = app.test_client()
    fresh.set_cookie("remember_token", laptop.client.get_cookie("remember_token").value)
    assert fresh.get("/account").status_code == 302, "remember-me cookies end too"

    assert phone.post("/account/sign-out-everywhere", htmx=False).status_code == 303
    assert phone.get("/account").status_code == 302
    assert Browser(app, sign_in=False).sign_in(email, "a new one, longer").status_code == 303


def test_a_wrong_current_password_changes_nothing(app, browser):
    response = browser.post("/account/password", {"current_password": "not it at all", "new_password": "x" * 12})
    assert response.status_code == 422 and b"The current password is not right." in response.data
    assert Browser(app, sign_in=False).sign_in(browser.email).status_code == 303


def test_no_database_connection_is_held_while_a_password_is_hashed(app, monkeypatch):
    """A password hash takes tens of milliseconds of CPU: held through it, a pooled connection (and on
    SQLite the write lock, which every writer, a streaming reply's too, waits for) is kept from
    everyone else. Setup, sign-in, sign-up, an invite and a password change all let go first."""
    held = []

    def measured(hash_function):
        def hashing(*args, **kwargs):
            held.append(db.engine.pool.checkedout())
            return hash_function(*args, **kwargs)
        return hashing

    monkeypatch.setattr(accounts, "generate_password_hash", measured(accounts.generate_password_hash))
    monkeypatch.setattr(accounts, "check_password_hash", measured(accounts.check_password_hash))
    founder = Browser(app, sign_in=False)
    founder.get("/setup")
    assert founder.client.post("/setup", data={"email": "root@example.test", "password": TEST_PASSWORD,
                                               "csrf_token": founder.csrf}).status_code == 303
    page = Browser(app, role=Role.ADMIN).post("/admin/invites", {"note": "Dana", "role": "member"}, htmx=False)
    link = re.search(rb'id="new-invite">http://localhost(/join/[^<]+)<', page.data).group(1).decode()
    newcomer = Browser(app, sign_in=False)
    newcomer.get(link)
    assert newcomer.client.post(link, data={"email": "dana@example.test", "password": TEST_PASSWORD,
                                            "csrf_token": newcomer.csrf}).status_code == 303
    app.config["SIGNUP"] = "open"
    joiner = Browser(app, sign_in=False)
    joiner.get("/signup")
    assert joiner.client.post("/signup", data={"email": "sam@example.test", "password": TEST_PASSWORD,
                                               "csrf_token": joiner.csrf}).status_code == 303
    assert Browser(app, sign_in=False).sign_in("dana@example.test", "wrong password!").status_code == 401
    assert Browser(app, sign_in=False).sign_in("nobody@example.test").status_code == 401
    assert Browser(app).post("/account/password", {"current_password": TEST_PASSWORD,
                                                "new_password": "a new one, longer"}).status_code == 200
    assert len(held) >= 8, held
    assert set(held) == {0}, held


# --- Invites and sign-up ---------------------------------------------------------------------------------------

def test_an_admin_invites_someone_with_a_link_that_works_once(app):
    admin = Browser(app, role=Role.ADMIN)
    page = admin.post("/admin/invites", {"note": "Dana", "role": "member"}, htmx=False)
    link = re.search(rb'id="new-invite">http://localhost(/join/[^<]+)<', page.data).group(1).decode()
    assert b"Dana" in page.data

    newcomer = Browser(app, sign_in=False)
    assert newcomer.get(link).status_code == 200
    joined = newcomer.client.post(link, data={"email": "dana@example.test", "password": TEST_PASSWORD,
                                              "csrf_token": newcomer.csrf})
    assert joined.status_code == 303 and newcomer.get("/account").status_code == 200
    with app.app_context():
        assert accounts.find_by_email("dana@example.test").role == Role.MEMBER

    again = Browser(app, sign_in=False)
    again.get("/login")
    assert again.get(link).status_code == 404
    reused = again.client.post(link, data={"email": "eve@example.test", "password": TEST_PASSWORD,
                                           "csrf_token": again.csrf})
    assert reused.status_code == 404 and accounts_named(app, "eve@example.test") == 0


def test_an_expired_invite_is_refused(app):
    admin_id, _ = make_account(app, role=Role.ADMIN)
    with app.app_context():
        secret = accounts.create_invite(admin_id, timedelta(hours=1)).secret
        db.session.execute(sa.update(Invite).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert Browser(app, sign_in=False).get(f"/join/{secret}").status_code == 404


def accounts_named(app, email: str) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(Account).where(Account.email == email))


def test_sign_up_is_closed_unless_signup_is_open(app, browser):
    assert Browser(app, sign_in=False).get("/signup").status_code == 404
    app.config["SIGNUP"] = "open"
    person = Browser(app, sign_in=False)
    assert person.get("/signup").status_code == 200
    assert person.client.post("/signup", data={"email": "new@example.test", "password": TEST_PASSWORD,
                                               "csrf_token": person.csrf}).status_code == 303
    taken = Browser(app, sign_in=False)
    taken.get("/signup")
    response = taken.client.post("/signup", data={"email": "NEW@example.test", "password": TEST_PASSWORD,
                                                  "csrf_token": taken.csrf})
    assert response.status_code == 422 and b"already exists" in response.data


# --- Roles -------------------------------------------------------------------------------------------------------

def test_members_cannot_reach_the_admin_page(app, browser):
    assert browser.get("/admin").status_code == 404
    assert browser.post("/admin/invites", {"role": "admin"}).status_code == 404


def test_a_member_cannot_decide_another_members_call_but_an_admin_can_and_is_recorded(app, browser, harness,
                                                                                       fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Done."))
    chat = browser.new_chat()
    run_id = browser.post(f"/chats/{chat}/messages", {"message": "delete 50 users"}).data.decode()
    run_id = re.search(r"/runs/(run_\w+)/events", run_id).group(1)
    harness.wait(run_id, "paused")
    call_id = harness.calls(run_id)[0].id
    before = harness.rows("users")

    other_member = Browser(app)
    assert other_member.post(f"/runs/{run_id}/calls/{call_id}/approve").status_code == 404
    assert harness.calls(run_id)[0].status == "pending"

    admin = Browser(app, role=Role.ADMIN)
    inbox = admin.get("/approvals").data.decode()
    assert f"/runs/{run_id}/calls/{call_id}/approve" in inbox and browser.email in inbox
    decided = admin.post(f"/runs/{run_id}/calls/{call_id}/approve", {"view": "inbox"})
    assert decided.status_code == 200 and "call-pending" not in decided.data.decode()
    assert harness.wait(run_id, "completed", "failed").status == "completed"
    assert harness.rows("users") == before - 50
    with app.app_context():
        assert db.session.get(ToolCall, call_id).decider_id == admin.account_id
    assert f"Approved by {admin.email} at" in browser.get(f"/chats/{chat}").data.decode()


def test_a_disabled_accounts_sessions_and_tokens_stop_working_at_once(app, browser):
    with app.app_context():
        token = accounts.create_api_token(browser.account_id, "script").secret
    api = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    assert api.get("/sessions", headers=auth).status_code == 200
    admin = Browser(app, role=Role.ADMIN)
    assert admin.post(f"/admin/accounts/{browser.account_id}/disable", htmx=False).status_code == 303
    assert browser.get("/account").status_code == 302
    assert api.get("/sessions", headers=auth).status_code == 401
    assert Browser(app, sign_in=False).sign_in(browser.email).status_code == 401
    assert admin.post(f"/admin/accounts/{browser.account_id}/enable", htmx=False).status_code == 303
    assert api.get("/sessions", headers=auth).status_code == 200


def test_the_last_admin_cannot_be_demoted_or_disabled(app):
    admin = Browser(app, role=Role.ADMIN)
    demoted = admin.post(f"/admin/accounts/{admin.account_id}/role", {"role": "member"}, htmx=False)
    assert demoted.status_code == 422 and b"only admin left" in demoted.data
    assert admin.get("/admin").status_code == 200


# --- The shell ------------------------------------------------------------------------------------------------------

def test_the_users_commands(app):
    cli = app.test_cli_runner()
    created = cli.invoke(args=["users", "create", "ops@example.test", "--admin", "--password-stdin"],
                         input=TEST_PASSWORD + "\n")
    assert created.exit_code == 0 and "Created admin ops@example.test" in created.output
    cli.invoke(args=["users", "create", "dev@example.test", "--password-stdin"], input=TEST_PASSWORD + "\n")
    duplicate = cli.invoke(args=["users", "create", "DEV@example.test", "--password-stdin"], input=TEST_PASSWORD + "\n")
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output
    assert cli.invoke(args=["users", "set-role", "dev@example.test", "admin"]).exit_code == 0
    assert cli.invoke(args=["users", "disable", "dev@example.test"]).exit_code == 0
    listed = cli.invoke(args=["users", "list"]).output
    assert "ops@example.test\tadmin\tactive" in listed and "dev@example.test\tadmin\tdisabled" in listed
    assert "No account" in cli.invoke(args=["users", "disable", "nobody@example.test"]).output
    assert Browser(app, sign_in=False).sign_in("ops@example.test").status_code == 303
    assert Browser(app, sign_in=False).sign_in("dev@example.test").status_code == 401


# --- Limits on guessing and creating ------------------------------------------------------------------------

@pytest.fixture
def app_config(app_config):
    return {**app_config, "SIGNIN_LIMIT_PER_EMAIL": "3 per minute", "SIGNIN_LIMIT_PER_IP": "6 per minute",
            "CREATION_LIMIT": "2 per minute"}


def test_failed_sign_ins_are_limited_per_email_and_per_address_and_say_so(app):
    _, victim = make_account(app)
    _, bystander = make_account(app)
    guesser = Browser(app, sign_in=False)
    for _ in range(3):
        assert guesser.sign_in(victim, "guess guess guess").status_code == 401
    blocked = guesser.sign_in(victim, TEST_PASSWORD)
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert b"Too many sign-in attempts for this account" in blocked.data
    assert Browser(app, sign_in=False).sign_in(bystander).status_code == 303, "other accounts sign in as usual"

    for number in range(3):  # more failures from the same address, against other emails
        assert guesser.sign_in(f"nobody{number}@example.test", "guess guess guess").status_code == 401
    assert guesser.sign_in("nobody9@example.test", "x").status_code == 429
    assert b"Too many sign-in attempts from your network" in guesser.sign_in(bystander).data


def test_creating_tokens_and_invites_is_limited_per_account(app, browser):
    for number in range(2):
        assert browser.post("/account/tokens", {"name": f"t{number}"}, htmx=False).status_code == 200
    refused = browser.post("/account/tokens", {"name": "t3"}, htmx=False)
    assert refused.status_code == 429 and b"You created many tokens just now" in refused.data
    assert Browser(app).post("/account/tokens", {"name": "mine"}, htmx=False).status_code == 200, "others unaffected"


def test_upgrading_an_installation_from_before_sign_in_keeps_every_chat_for_the_first_admin(app_config):
    from flask_migrate import upgrade

    from app import create_app
    from tests.conftest import stop_app
    old = create_app(app_config)
    try:
        with old.app_context():
            upgrade(revision="0002_api_users")  # the schema as it was before sign-in
            with db.engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO accounts (id, name, created_at) VALUES (7, NULL, CURRENT_TIMESTAMP)")
                conn.exec_driver_sql("INSERT INTO chat_sessions (id, owner_id, agent_id, title, created_at, updated_at) "
                                     "VALUES ('chat_old', 7, 'data_manager', 'Cleanup last spring', "
                                     "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
                conn.exec_driver_sql("INSERT INTO runs (id, session_id, owner_id, agent_id, status, input, last_seq, "
                                     "created_at, updated_at) VALUES ('run_old', 'chat_old', 7, 'data_manager', "
                                     "'completed', 'delete', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
                conn.exec_driver_sql("INSERT INTO messages (id, session_id, run_id, role, content, state, created_at) "
                                     "VALUES (1, 'chat_old', 'run_old', 'assistant', 'Deleted them.', 'done', "
                                     "CURRENT_TIMESTAMP)")
                conn.exec_driver_sql("INSERT INTO tool_calls (id, run_id, message_id, position, call_id, name, "
                                     "raw_arguments, requires_confirmation, status, created_at, updated_at) VALUES "
                                     "('tc_old', 'run_old', 1, 0, 'call_1', 'delete_records', '{}', true, 'done', "
                                     "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
            upgrade()
            assert accounts.setup_needed()
        admin = Browser(old, sign_in=False)
        admin.get("/setup")
        admin.client.post("/setup", data={"email": "root@example.test", "password": TEST_PASSWORD,
                                          "csrf_token": admin.csrf})
        page = admin.get("/chats/chat_old")
        assert page.status_code == 200 and b"Cleanup last spring" in page.data and b"Deleted them." in page.data
        assert b'id="call-tc_old"' in page.data
    finally:
        stop_app(old)


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
def test_the_first_commands_on_a_fresh_machine_print_no_errors(databases, tmp_path):
    """`scripts/run` migrates, then asks whether anyone can sign in: neither may log a traceback (a
    `flask` command used to start the run sweeper, which failed on tables not yet created)."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "DATABASE_URL": databases.app_url, "WORKSPACE_DATABASE_URL": databases.workspace_url,
           "SECRET_KEY": "test-secret"}
    for command in (["db", "upgrade"], ["users", "list"]):
        done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *command], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and " ERROR " not in done.stderr, done.stderr
    assert done.stdout == "", "nobody can sign in yet: scripts/run then points to /setup"
