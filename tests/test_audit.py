"""The audit: every proposed tool call with its decision (who, when, why), execution and outcome, as a
page (members: their own; admins: everyone's), filtered, paginated, and exported as CSV and JSON Lines."""
from __future__ import annotations

import csv
import io
import json

import pytest

from app import accounts, audit
from app.models import Role
from tests.api.conftest import KEY
from tests.conftest import Browser
from tests.fake_openai import ToolCall as ModelToolCall, Turn
from tests.test_approvals import pending_call

SNEAKY = '=HYPERLINK("http://evil.test","click") <script>alert(1)</script>'


@pytest.fixture
def app_config(app_config):
    return {**app_config, "OS_SECURITY_KEY": KEY}


@pytest.fixture
def history(app, browser, harness, fake_model):
    """`browser`'s person: an approved call that ran, a rejected one (with a reason that tries CSV and HTML
    injection) and an automatic one; another member's call still pending."""
    _, approved_run, approved = pending_call(browser, harness, fake_model)
    fake_model.script(Turn(text="Deleted."))
    assert browser.post(f"/runs/{approved_run}/calls/{approved}/approve").status_code == 200
    harness.wait(approved_run, "completed")
    _, rejected_run, rejected = pending_call(browser, harness, fake_model, "delete more")
    fake_model.script(Turn(tool_calls=[ModelToolCall("count_records", {"table_name": "users"})]), Turn(text="OK."))
    assert browser.post(f"/runs/{rejected_run}/calls/{rejected}/reject", {"reason": SNEAKY}).status_code == 200
    harness.wait(rejected_run, "completed")
    [_, auto] = harness.calls(rejected_run)
    other = Browser(app)
    _, _, theirs = pending_call(other, harness, fake_model, "delete theirs")
    return {"approved": approved, "rejected": rejected, "auto": auto.id, "theirs": theirs, "other": other}


def jsonl(response) -> list[dict]:
    assert response.status_code == 200 and response.mimetype == "application/x-ndjson"
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


def test_a_member_audits_their_own_calls_with_who_decided_when_and_why(app, browser, history):
    records = {r["id"]: r for r in jsonl(browser.get("/audit.jsonl"))}
    assert set(records) == {history["approved"], history["rejected"], history["auto"]}, "never another's calls"

    approved = records[history["approved"]]
    assert approved["decision"] == "approved" and approved["decided_by"] == browser.email
    assert approved["status"] == "done" and approved["decided_at"] and approved["proposed_at"]
    assert approved["arguments"] == {"table_name": "users", "count": 50} and approved["preview"]
    assert approved["tool"] == "delete_records" and approved["agent_id"] == "data_manager"
    assert approved["person"] == browser.email and "Deleted 50" in approved["result"]
    rejected = records[history["rejected"]]
    assert rejected["decision"] == "rejected" and rejected["reason"] == SNEAKY and rejected["result"] is None
    assert records[history["auto"]]["decision"] == "auto" and records[history["auto"]]["decided_by"] == "auto"

    page = browser.get("/audit").data.decode()
    assert history["approved"] in page and history["theirs"] not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    theirs = jsonl(history["other"].get("/audit.jsonl"))
    assert [r["id"] for r in theirs] == [history["theirs"]] and theirs[0]["decision"] == "pending"


def test_an_admin_audits_everyone_and_filters_by_person(app, browser, history):
    admin = Browser(app, role=Role.ADMIN)
    assert {r["id"] for r in jsonl(admin.get("/audit.jsonl"))} == {
        history["approved"], history["rejected"], history["auto"], history["theirs"]}
    only = jsonl(admin.get("/audit.jsonl", query_string={"person": history["other"].email}))
    assert [r["id"] for r in only] == [history["theirs"]]
    page = admin.get("/audit", query_string={"person": browser.email}).data.decode()
    assert history["approved"] in page and history["theirs"] not in page
    # A member's person filter names nobody else: they still see only their own.
    assert jsonl(browser.get("/audit.jsonl", query_string={"person": history["other"].email}))


def test_filters_by_tool_agent_decision_and_time(app, browser, history):
    def ids(**query):
        return {r["id"] for r in jsonl(browser.get("/audit.jsonl", query_string=query))}

    assert ids(decision="rejected") == {history["rejected"]}
    assert ids(decision="auto") == {history["auto"]}
    assert ids(decision="approved", tool="delete_records") == {history["approved"]}
    assert ids(tool="count_records") == {history["auto"]}
    assert ids(agent="no_such_agent") == set()
    assert ids(since="2000-01-01", until="2999-12-31") == {history["approved"], history["rejected"], history["auto"]}
    assert ids(since="2999-01-01") == set() and ids(until="2000-01-01") == set()

    for query, words in (({"since": "yesterday"}, "since must be a date"), ({"decision": "maybe"}, "decision must be"),
                         ({"page": "x"}, "page must be")):
        refused = browser.get("/audit.jsonl", query_string=query)
        assert refused.status_code == 422 and words in refused.get_json()["detail"]
        page = browser.get("/audit", query_string=query)
        assert page.status_code == 422 and words in page.data.decode()


def test_the_page_is_paginated(app, browser, history, monkeypatch):
    monkeypatch.setattr(audit, "PER_PAGE", 2)
    first = browser.get("/audit").data.decode()
    assert 'rel="next"' in first and 'rel="prev"' not in first
    second = browser.get("/audit?page=2").data.decode()
    assert 'rel="prev"' in second and 'rel="next"' not in second
    shown = [call for call in (history["approved"], history["rejected"], history["auto"])
             if f'id="audit-{call}"' in first + second]
    assert len(shown) == 3 and sum(f'id="audit-{c}"' in second for c in shown) == 1


def test_csv_export_is_safe_in_a_spreadsheet_and_bearer_tokens_work(app, browser, history):
    response = browser.get("/audit.csv")
    assert response.mimetype == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 3
    [rejected] = [row for row in rows if row["id"] == history["rejected"]]
    assert rejected["reason"] == "'" + SNEAKY, "a formula is prefixed so a spreadsheet shows it as text"
    assert all(not value.startswith(("=", "+", "-", "@")) for row in rows for value in row.values())
    assert audit.csv_cell("-1+2") == "'-1+2" and audit.csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert audit.csv_cell({"a": 1}) == '{"a": 1}' and audit.csv_cell(None) == ""

    with app.app_context():
        token = accounts.create_api_token(browser.account_id, "auditor").secret
    client = app.test_client()
    mine = client.get("/audit.csv?decision=rejected", headers={"Authorization": f"Bearer {token}"})
    assert [row["id"] for row in csv.DictReader(io.StringIO(mine.get_data(as_text=True)))] == [history["rejected"]]
    everyone = jsonl(client.get("/audit.jsonl", headers={"Authorization": f"Bearer {KEY}"}))
    assert history["theirs"] in {r["id"] for r in everyone}
    refused = client.get("/audit.csv", headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401 and "detail" in refused.get_json()
    assert client.get("/audit.csv").status_code == 302, "without a credential: sign in first"
