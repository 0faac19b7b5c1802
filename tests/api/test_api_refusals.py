"""Malformed forms, queries and bodies are refused with a `detail` that names the field as the client
wrote it and says what was expected (400 for text that is not JSON, 413 for a too long message, else
422); nothing starts or changes."""
from __future__ import annotations

import pytest

from tests.fake_openai import Turn

RUN = "/agents/data_manager/runs"


@pytest.mark.parametrize("form, status, detail", [
    ({}, 422, "message is required."),
    ({"message": "   "}, 422, "message is required."),
    ({"message": "x" * 8001}, 413, "message is too long (8,001 characters; the limit is 8,000)."),
    ({"message": "hi", "stream": "maybe"}, 422, "stream must be true or false, not 'maybe'."),
    ({"message": "hi", "session_id": "s" * 201}, 422, "session_id is too long (at most 200 characters)."),
])
def test_a_malformed_run_form_starts_nothing(api, form, status, detail):
    response = api.post(RUN, data=form, content_type="multipart/form-data")
    assert (response.status_code, response.get_json()) == (status, {"detail": detail})
    assert api.get("/sessions").get_json()["meta"]["total_count"] == 0


@pytest.mark.parametrize("query, detail", [
    ({"limit": "0"}, "limit must be at least 1."),
    ({"limit": "101"}, "limit must be at most 100."),
    ({"page": "first"}, "page must be a whole number, not 'first'."),
    ({"sort_order": "up"}, "sort_order must be one of 'asc' or 'desc', not 'up'."),
])
def test_a_malformed_sessions_query_is_a_422_that_names_the_parameter(api, query, detail):
    response = api.get("/sessions", query_string=query)
    assert (response.status_code, response.get_json()) == (422, {"detail": detail})


def test_unknown_fields_are_ignored_as_the_reference_ignores_them(api, fake_model):
    fake_model.script(Turn(text="Hi."))
    response = api.run("hello", stream=False, stream_events="true", session_state="", knowledge_filters="")
    assert response.status_code == 200 and response.get_json()["status"] == "COMPLETED"


@pytest.mark.parametrize("body, detail", [
    ({"session_name": 5}, "session_name must be a string, not a number."),
    ({"session_name": "  "}, "session_name is required."),
    (["x"], "The body must be a JSON object, not a list."),
])
def test_a_malformed_rename_is_a_422(api, fake_model, body, detail):
    fake_model.script(Turn(text="Hi."))
    api.run("hello", session_id="s", stream=False)
    response = api.post("/sessions/s/rename", json=body)
    assert (response.status_code, response.get_json()) == (422, {"detail": detail})
    assert api.get("/sessions/s").get_json()["session_name"] == "hello"
