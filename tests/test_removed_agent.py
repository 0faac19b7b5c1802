"""A chat whose agent is no longer configured (its file was removed before a restart) still opens with
its history; a new message is refused with the reason, stores nothing and starts no run, and a run that
was waiting for that agent fails saying so."""
from __future__ import annotations

import re

from tests.fake_openai import Turn


def test_a_message_to_a_removed_agent_is_refused_with_the_reason(app, browser, harness, fake_model, monkeypatch):
    fake_model.script(Turn(text="Hello there."))
    chat = browser.new_chat()
    sent = browser.post(f"/chats/{chat}/messages", {"message": "hi"})
    harness.wait(re.search(rb"/runs/(run_[0-9a-f]+)/events", sent.data).group(1).decode(), "completed")
    monkeypatch.delitem(app.extensions["agents"]._agents, "data_manager")

    page = browser.get(f"/chats/{chat}")
    assert page.status_code == 200 and "Hello there." in page.get_data(as_text=True)
    refused = browser.post(f"/chats/{chat}/messages", {"message": "are you still there?"})
    assert refused.status_code == 409
    assert "no longer configured on this server" in refused.get_data(as_text=True)
    assert harness.messages(chat) == [("user", "hi"), ("assistant", "Hello there.")], "nothing stored"


def test_a_run_whose_agent_was_removed_before_it_ran_fails_saying_so(app, harness, fake_model, monkeypatch):
    from app.agent import commands, recovery

    waiting = []
    monkeypatch.setattr(commands, "submit", lambda run_id, **kwargs: waiting.append((run_id, kwargs)))
    owner, chat = harness.chat()
    run_id = harness.send(chat, "hi")  # queued, not handed to the executor yet
    monkeypatch.delitem(app.extensions["agents"]._agents, "data_manager")
    with app.app_context():
        for queued, kwargs in waiting:
            recovery.submit(queued, **kwargs)
    run = harness.wait(run_id, "failed")
    assert run.error == "The agent 'data_manager' is no longer configured on this server."
    assert fake_model.requests == [], "no model was called"
