"""Approval rules, "Always allow" grants and expiry (issue 12, items 4-6), on SQLite and PostgreSQL:
what the ledger, the card, the inbox, the audit and the API show, and what ran (the agent file's tools
write a ledger file: tests/agentfiles.py RULES_AGENT)."""
from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.agent.recovery import recover
from app.extensions import db
from app.models import ApprovalGrant, Role, ToolCall, utcnow
from tests.agentfiles import ledger_lines, write_rules_agent
from tests.api.apiclient import KEY, Api
from tests.conftest import Browser
from tests.fake_openai import ToolCall as ModelCall, Turn


@pytest.fixture
def ledger(tmp_path):
    return tmp_path / "ledger.txt"


@pytest.fixture
def app_config(app_config, tmp_path, ledger):
    folder = tmp_path / "agents"
    folder.mkdir()
    return {**app_config, "AGENTS": [str(write_rules_agent(folder, ledger, timeout=600))],
            "OS_SECURITY_KEY": KEY, "API_AUTH": "on"}


@pytest.fixture
def member(app):
    return Browser(app)


def propose(harness, fake_model, chat: str, *calls: ModelCall, then: str | None = None) -> tuple[str, list[ToolCall]]:
    """The model proposes `calls` in `chat`; `then` is its next reply (when the calls need nobody)."""
    fake_model.script(Turn(tool_calls=list(calls)), *([Turn(text=then)] if then else []))
    run_id = harness.send(chat, "go")
    harness.wait(run_id)
    return run_id, harness.calls(run_id)


def rules_chat(harness, owner_id: int) -> str:
    return harness.chat(owner_id, agent_id="rules")[1]


def make_overdue(app, call_id: str) -> None:
    """As if the approval's time had passed: only the stored time changes."""
    with app.app_context():
        db.session.execute(sa.update(ToolCall).where(ToolCall.id == call_id)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()


def audit(browser: Browser, **filters) -> list[dict]:
    response = browser.get("/audit.jsonl", query_string=filters)
    assert response.status_code == 200
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


# --- 4. Rules ------------------------------------------------------------------------------------------

def test_a_rule_lets_small_calls_run_as_approved_by_the_rule_and_asks_for_large_ones(harness, fake_model, member,
                                                                                   ledger):
    chat = rules_chat(harness, member.account_id)
    run_id, [small] = propose(harness, fake_model, chat, ModelCall("purge_events", {"count": 50}), then="Purged.")
    assert harness.run(run_id).status == "completed"
    assert (small.status, small.decided_by, small.decider_id) == ("done", "rule", None)
    assert ledger_lines(ledger) == ["purge_events 50"]

    run_id, [large] = propose(harness, fake_model, chat, ModelCall("purge_events", {"count": 500}))
    assert harness.run(run_id).status == "paused" and large.status == "pending"
    assert ledger_lines(ledger) == ["purge_events 50"], "nothing of the turn runs before the decision"

    page = member.get(f"/chats/{chat}").data.decode()
    assert "Approved by rule" in page and f"/runs/{run_id}/calls/{large.id}/approve" in page
    [record] = audit(member, decision="rule")
    assert (record["id"], record["decision"], record["decided_by"]) == (small.id, "rule", "rule")


def test_new_chat_says_which_tools_ask_by_a_rule_and_which_only_admins_decide(member):
    tools = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", member.get("/chats/new").data.decode()))
    assert "purge_events asks by its rule" in tools and "reset_password asks first admins decide" in tools
    assert "archive_table asks first" in tools


def test_a_rule_that_raises_asks_instead_of_running(harness, fake_model, member, ledger):
    chat = rules_chat(harness, member.account_id)
    run_id, [call] = propose(harness, fake_model, chat, ModelCall("compact_table", {"table_name": "events"}))
    assert harness.run(run_id).status == "paused" and call.status == "pending"
    assert ledger_lines(ledger) == []


def test_only_an_admin_decides_a_call_for_admins_not_the_person_whose_run_it_is(app, harness, fake_model, member,
                                                                              ledger):
    chat = rules_chat(harness, member.account_id)
    run_id, [call] = propose(harness, fake_model, chat, ModelCall("reset_password", {"email": "bo@example.test"}))
    assert (call.status, call.approvers) == ("pending", "admin")

    page = member.get(f"/chats/{chat}").data.decode()
    assert "Waiting for an admin" in page and f"/calls/{call.id}/approve" not in page
    refused = member.post(f"/runs/{run_id}/calls/{call.id}/approve")
    assert refused.status_code == 403 and "Only an admin" in refused.data.decode()
    assert member.post(f"/runs/{run_id}/calls/{call.id}/approve", htmx=False).status_code == 403
    assert "Nothing is waiting." in member.get("/approvals").data.decode()
    api = Api(app).continue_(run_id, [{"tool_call_id": call.call_id, "confirmed": True}], agent="rules",
                             user_id=member.email)
    assert api.status_code == 403 and "Only an admin" in api.get_json()["detail"]
    assert harness.calls(run_id)[0].status == "pending" and ledger_lines(ledger) == []

    admin = Browser(app, role=Role.ADMIN)
    inbox = admin.get("/approvals").data.decode()
    assert f'id="call-{call.id}"' in inbox and f"/calls/{call.id}/approve" in inbox
    fake_model.script(Turn(text="Reset."))
    assert admin.post(f"/runs/{run_id}/calls/{call.id}/approve", {"view": "inbox"}).status_code == 200
    harness.wait(run_id, "completed")
    assert ledger_lines(ledger) == ["reset_password bo@example.test"]
    [record] = audit(admin, tool="reset_password")
    assert record["decided_by"] == admin.email and record["approvers"] == "admin"


# --- 5. Always allow -----------------------------------------------------------------------------------

ARCHIVE_EVENTS = ModelCall("archive_table", {"table_name": "events"})


def always_allow(browser: Browser, run_id: str, call_id: str, **options):
    form = {"always": "1", "always_scope": "chat", "always_for": "forever", **options}
    return browser.post(f"/runs/{run_id}/calls/{call_id}/approve", form)


def test_always_allow_for_the_values_shown_in_this_chat_runs_matching_calls_without_a_card(
        app, harness, fake_model, member, ledger):
    chat = rules_chat(harness, member.account_id)
    run_id, [first] = propose(harness, fake_model, chat, ARCHIVE_EVENTS)
    assert "Always allow archive_table" in member.get(f"/chats/{chat}").data.decode()
    fake_model.script(Turn(text="Archived."))
    assert always_allow(member, run_id, first.id, always_same_arguments="1").status_code == 200
    harness.wait(run_id, "completed")
    with app.app_context():
        grant = db.session.scalar(sa.select(ApprovalGrant))
        assert (grant.account_id, grant.agent_id, grant.tool_name, grant.session_id, grant.arguments,
                grant.expires_at, grant.created_from_call_id) == (
            member.account_id, "rules", "archive_table", chat, {"table_name": "events"}, None, first.id)
        grant_id = grant.id

    run_id, [again] = propose(harness, fake_model, chat, ARCHIVE_EVENTS, then="Archived again.")
    assert harness.run(run_id).status == "completed"
    assert (again.status, again.decided_by, again.grant_id) == ("done", "grant", grant_id)
    page = member.get(f"/chats/{chat}").data.decode()
    assert "Allowed by your rule" in page and f'href="/account#grant-{grant_id}"' in page

    _, [other_values] = propose(harness, fake_model, chat, ModelCall("archive_table", {"table_name": "users"}))
    assert other_values.status == "pending", "only the values shown were allowed"
    fake_model.script(Turn(text="Left alone."))
    harness.decide(member.account_id, other_values.run_id, other_values.id, False)
    harness.wait(other_values.run_id, "completed")
    _, [other_chat] = propose(harness, fake_model, rules_chat(harness, member.account_id), ARCHIVE_EVENTS)
    assert other_chat.status == "pending", "only this chat was allowed"
    [record] = audit(member, decision="grant")
    assert record["id"] == again.id and record["grant"].startswith(f"grant #{grant_id}: always allow archive_table")

    account = member.get("/account").data.decode()
    assert f'id="grant-{grant_id}"' in account and "archive_table" in account
    assert Browser(app).post(f"/account/grants/{grant_id}/revoke", htmx=False).status_code == 404
    assert member.post(f"/account/grants/{grant_id}/revoke", htmx=False).status_code == 303
    _, [after_revoke] = propose(harness, fake_model, chat, ARCHIVE_EVENTS)
    assert after_revoke.status == "pending"
    assert ledger_lines(ledger) == ["archive_table events", "archive_table events"]


def test_a_grant_revoked_while_the_model_is_answering_lets_nothing_through(app, harness, fake_model, member,
                                                                           ledger):
    """A turn reads whether the account has any grant with its context (a turn of an account with none
    looks for none); the grant itself is looked up when the call is made, so a grant revoked while the
    model is answering is not used: the call asks."""
    chat = rules_chat(harness, member.account_id)
    run_id, [first] = propose(harness, fake_model, chat, ARCHIVE_EVENTS)
    fake_model.script(Turn(text="Archived."))
    assert always_allow(member, run_id, first.id, always_same_arguments="1").status_code == 200
    harness.wait(run_id, "completed")
    with app.app_context():
        grant_id = db.session.scalar(sa.select(ApprovalGrant.id))
    revoked = []

    def revoke_then_call(request):  # the model has the context: the run has read it
        revoked.append(member.post(f"/account/grants/{grant_id}/revoke", htmx=False).status_code)
        return Turn(tool_calls=[ARCHIVE_EVENTS])

    fake_model.respond_with(revoke_then_call)
    try:
        run_id = harness.send(chat, "go")
        assert harness.wait(run_id).status == "paused"
    finally:
        fake_model.respond_with(None)
    [call] = harness.calls(run_id)
    assert revoked == [303] and (call.status, call.grant_id) == ("pending", None)
    assert ledger_lines(ledger) == ["archive_table events"], "only the first call, approved by the person, ran"


def test_a_grant_for_all_chats_and_an_hour_ends_with_its_time(app, harness, fake_model, member):
    run_id, [first] = propose(harness, fake_model, rules_chat(harness, member.account_id), ARCHIVE_EVENTS)
    fake_model.script(Turn(text="Archived."))
    assert always_allow(member, run_id, first.id, always_scope="all", always_for="hour").status_code == 200
    harness.wait(run_id, "completed")
    elsewhere = rules_chat(harness, member.account_id)
    _, [any_values] = propose(harness, fake_model, elsewhere, ModelCall("archive_table", {"table_name": "users"}),
                              then="Done.")
    assert any_values.decided_by == "grant"
    _, [someone_else] = propose(harness, fake_model, rules_chat(harness, harness.account()), ARCHIVE_EVENTS)
    assert someone_else.status == "pending", "a grant is its owner's only"

    with app.app_context():
        grant = db.session.scalar(sa.select(ApprovalGrant))
        assert timedelta(minutes=59) < grant.expires_at.replace(tzinfo=None) - first.created_at.replace(tzinfo=None) \
            < timedelta(minutes=61)
        grant.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    _, [expired] = propose(harness, fake_model, elsewhere, ARCHIVE_EVENTS)
    assert expired.status == "pending"


def test_tools_that_refuse_grants_offer_none_and_refuse_one_sent_anyway(app, harness, fake_model, member):
    fake_model.script(Turn(tool_calls=[ModelCall("delete_records", {"table_name": "users", "count": 5})]))
    chat = member.new_chat()
    run_id = harness.latest_run(chat) or harness.send(chat, "delete 5 users")
    harness.wait(run_id, "paused")
    [call] = harness.calls(run_id)
    page = member.get(f"/chats/{chat}").data.decode()
    assert f"/calls/{call.id}/approve" in page and "Always allow" not in page
    refused = always_allow(member, run_id, call.id)
    assert refused.status_code == 403 and "cannot be allowed always" in refused.data.decode()
    assert harness.calls(run_id)[0].status == "pending"
    bad = always_allow(member, run_id, call.id, always_for="a week")
    assert bad.status_code == 422 and harness.calls(run_id)[0].status == "pending"
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ApprovalGrant)) == 0


# --- 6. Expiry -----------------------------------------------------------------------------------------

EXPORT_EVENTS = ModelCall("export_table", {"table_name": "events"})


def test_the_sweeper_expires_an_overdue_call_from_its_stored_time_and_the_run_goes_on(app, harness, fake_model,
                                                                                     member, ledger):
    chat = rules_chat(harness, member.account_id)
    run_id, [call] = propose(harness, fake_model, chat, EXPORT_EVENTS)
    assert call.expires_at is not None
    page = member.get(f"/chats/{chat}").data.decode()
    assert re.search(r'Expires <time datetime="[^"]+" class="js-local-time">', page)
    assert f'id="call-{call.id}"' in member.get("/approvals").data.decode()

    make_overdue(app, call.id)
    assert "Nothing is waiting." in member.get("/approvals").data.decode(), "the inbox drops it before any sweep"
    fake_model.script(Turn(text="The export was not approved in time."))
    with app.app_context():
        recover()
    harness.wait(run_id, "completed")
    [expired] = harness.calls(run_id)
    assert (expired.status, expired.decided_by) == ("expired", "expired")
    assert fake_model.requests[-1].tool_outputs() == [(call.call_id, "Not executed: the approval expired.")]
    assert ledger_lines(ledger) == []

    requests = len(fake_model.requests)
    late = member.post(f"/runs/{run_id}/calls/{call.id}/approve")
    assert late.status_code == 200 and "expired" in late.data.decode() and "call-expired" in late.data.decode()
    assert member.post(f"/runs/{run_id}/calls/{call.id}/approve", htmx=False).status_code == 303
    api = Api(app).continue_(run_id, [{"tool_call_id": call.call_id, "confirmed": True}], agent="rules",
                             user_id=member.email)
    assert api.status_code == 409 and "expired" in api.get_json()["detail"]
    assert len(fake_model.requests) == requests and ledger_lines(ledger) == []
    [record] = audit(member, decision="expired")
    assert record["id"] == call.id


def test_a_late_click_expires_the_call_itself_when_no_sweeper_has_run(app, harness, fake_model, member, ledger):
    chat = rules_chat(harness, member.account_id)
    run_id, [call] = propose(harness, fake_model, chat, EXPORT_EVENTS)
    make_overdue(app, call.id)
    fake_model.script(Turn(text="It expired."))
    late = member.post(f"/runs/{run_id}/calls/{call.id}/approve").data.decode()
    assert "The approval of this call of export_table expired" in late and "nothing was run" in late
    harness.wait(run_id, "completed")
    assert harness.calls(run_id)[0].status == "expired" and ledger_lines(ledger) == []
    again = member.post(f"/runs/{run_id}/calls/{call.id}/reject")
    assert again.status_code == 200 and "call-expired" in again.data.decode()
    assert harness.calls(run_id)[0].status == "expired"


def test_an_api_continue_after_the_time_gets_409_and_the_call_never_runs(app, harness, fake_model, member, ledger):
    chat = rules_chat(harness, member.account_id)
    run_id, [call] = propose(harness, fake_model, chat, EXPORT_EVENTS)
    api = Api(app)
    shown = api.get(f"/agents/rules/runs/{run_id}", query_string={"user_id": member.email}).get_json()
    tool = shown["tools"][0]
    assert tool["expires_at"] > tool["created_at"] and tool["approvers"] is None and tool["decided_by"] is None
    make_overdue(app, call.id)
    fake_model.script(Turn(text="It expired."))
    refused = api.continue_(run_id, [{"tool_call_id": call.call_id, "confirmed": True}], agent="rules",
                            user_id=member.email)
    assert refused.status_code == 409 and "expired" in refused.get_json()["detail"]
    harness.wait(run_id, "completed")
    after = api.get(f"/agents/rules/runs/{run_id}", query_string={"user_id": member.email}).get_json()["tools"][0]
    assert (after["decided_by"], after["result"]) == ("expired", "Not executed: the approval expired.")
    assert ledger_lines(ledger) == []
