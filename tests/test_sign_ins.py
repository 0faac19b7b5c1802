"""A web process remembers who a browser's cookie names (PostgreSQL), and forgets it the moment it
changes in any process: a browser signed out through another server, or an account disabled from the
shell, is refused by every server at once, not when the remembered sign-in would expire (30 s)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from app import sign_ins
from app.models import Role
from tests.conftest import ROOT, Browser, sign_in_reads, until_the_sign_in_is_remembered, wait_for
from tests.live import Client, LiveServer

AT_ONCE = 5.0  # seconds: far less than a remembered sign-in lives (app.sign_ins.ENTRY_SECONDS)
postgresql_only = pytest.mark.parametrize("databases", ["postgresql"], indirect=True)


def test_postgresql_remembers_a_sign_in_and_sqlite_reads_it_each_time(app, databases, browser):
    remembers = databases.backend == "postgresql"
    if remembers:
        until_the_sign_in_is_remembered(app, browser)
    with sign_in_reads(app) as reads:
        for _ in range(3):
            assert browser.get("/account").status_code == 200
    assert len(reads) == (0 if remembers else 3)


@postgresql_only
def test_the_process_that_disables_an_account_forgets_it_without_waiting_for_the_notification(app, browser):
    listener = app.extensions["run_events"].listener
    wait_for(listener.listening.is_set, message="the listener")
    listener.handlers[sign_ins.CHANNEL] = lambda payload: None  # as if the notification came late
    admin = Browser(app, role=Role.ADMIN)
    assert browser.get("/account").status_code == 200  # remembered from here on
    assert admin.post(f"/admin/accounts/{browser.account_id}/disable", htmx=False).status_code == 303
    assert browser.get("/account").status_code == 302


@pytest.fixture
def servers(app, server_env, tmp_path):
    """Two web servers (two workers each) on one database, as behind a load balancer."""
    started = []
    try:
        for name in ("a", "b"):
            started.append(LiveServer(server_env, workers=2, log_path=tmp_path / f"{name}.log").start())
        yield started
    finally:
        for server in started:
            server.stop()


def signed_in(client: Client) -> bool:
    response = client.get("/account", allow_redirects=False)
    assert response.status_code in (200, 302), response.text[:300]
    return response.status_code == 200


def remembered_everywhere(client: Client) -> None:
    """Requests enough for each worker of the server to have read (and remembered) the sign-in."""
    for _ in range(8):
        assert signed_in(client)


def refused_within(client: Client, seconds: float) -> float:
    started = time.monotonic()
    while signed_in(client):
        assert time.monotonic() - started < seconds, f"still signed in after {seconds} s"
        time.sleep(0.05)
    waited = time.monotonic() - started
    for _ in range(8):  # on every worker of that server
        assert not signed_in(client)
    return waited


@postgresql_only
def test_signing_out_through_one_server_ends_the_session_on_the_other_at_once(servers):
    a, b = servers
    on_a = Client(a.url)
    remembered_everywhere(on_a)
    on_b = Client(b.url, sign_in=False)
    on_b.http.cookies.update(on_a.http.cookies)  # the same browser, sent to the other server
    assert signed_in(on_b)

    assert on_b.post("/logout").status_code == 303
    refused_within(on_a, AT_ONCE)


@postgresql_only
def test_an_account_disabled_from_the_shell_is_refused_by_every_server_at_once(servers, server_env):
    a, b = servers
    person = Client(a.url)
    remembered_everywhere(person)
    same_person_on_b = Client(b.url, sign_in=False)
    same_person_on_b.http.cookies.update(person.http.cookies)
    remembered_everywhere(same_person_on_b)

    disabled = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "users", "disable", person.email],
                              cwd=ROOT, env={**os.environ, **server_env}, capture_output=True, text=True, timeout=60)
    assert disabled.returncode == 0, disabled.stderr
    refused_within(person, AT_ONCE)
    refused_within(same_person_on_b, AT_ONCE)
