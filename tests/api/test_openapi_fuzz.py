"""schemathesis fuzzes every operation of /openapi.json against the app (WSGI, with the key), on
SQLite and PostgreSQL, with valid and invalid input: no answer is a 5xx, every status code and content
type is one the document lists, and JSON bodies (and each streamed event) match their schemas.

Purely random ids only ever meet 404s, so half the cases are pointed at things that exist: the agent,
runs and sessions of the default user (a paused run, a finished one), and well-formed decisions.
(schemathesis' own pytest integration does not run under pytest 9, so the operations are driven
through hypothesis here.)"""
from __future__ import annotations

import collections
import json

import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from app.api.openapi import spec
from tests.api.apiclient import AUTH, DELETE_50, documented, paused
from tests.fake_openai import Turn

EXAMPLES = 100  # per operation and backend: about 15 s each on SQLite and PostgreSQL here


@pytest.fixture
def app_config(app_config):
    """The fuzzer sends hundreds of runs as one user in a minute: lift the per-account limits (their 429
    is documented, and tests/test_limits.py covers them), or most cases would only meet that."""
    return {**app_config, "RATELIMIT_MESSAGES": "100000 per minute", "RATELIMIT_COMMANDS": "100000 per minute",
            "MAX_ACTIVE_RUNS": 100000}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def seed(api, fake_model, name: str) -> dict[str, list[str]]:
    """A paused run and a finished one, each in its own session, for the default user."""
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Hello."))
    waiting = paused(api, session_id=f"{name}-paused")
    done = api.run("hello", session_id=f"{name}-done", stream=False).get_json()
    decisions = [json.dumps([{**entry, "confirmed": confirmed}])
                 for entry in documented(waiting["tools"][0]) for confirmed in (True, False, None)]
    return {"agent_id": ["data_manager"], "run_id": [waiting["run_id"], done["run_id"]],
            "session_id": [f"{name}-paused", f"{name}-done"], "tools": ["[]", *decisions]}


def test_no_operation_answers_5xx_or_off_the_document(app, api, fake_model):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(methods) for methods in spec()["paths"].values())
    failures, answers = {}, collections.Counter()
    for number, operation in enumerate(operations):
        fake_model.respond_with(None)
        existing = seed(api, fake_model, f"fuzz{number}")
        fake_model.respond_with(lambda request: Turn(text="A fuzzed reply."))

        cases = st.one_of(operation.as_strategy(), operation.as_strategy(GenerationMode.NEGATIVE))

        @given(case=cases, aim=st.booleans(), data=st.data())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case, aim, data):
            if aim:  # at something that exists, as its owner
                for name, values in existing.items():
                    if name in (case.path_parameters or {}):
                        case.path_parameters[name] = data.draw(st.sampled_from(values))
                for part in (case.query, case.body):
                    if isinstance(part, dict):
                        part.pop("user_id", None)
                        part.pop("session_id", None)
                if isinstance(case.body, dict) and "tools" in case.body:
                    case.body["tools"] = data.draw(st.sampled_from(existing["tools"]))
            response = case.call_and_validate(headers=AUTH, checks=CHECKS)
            answers[operation.label, response.status_code] += 1

        try:
            fuzz()
        except Exception as exc:  # collect them all: one report per operation
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
    # The fuzzing reached past the 404s: every operation answered a 2xx at least once.
    succeeded = {label for (label, status), _ in answers.items() if status < 300}
    assert succeeded == {operation.label for operation in operations}, sorted(answers.items())
