"""Bad input gets a clear 4xx and loses nothing: bodies over MAX_CONTENT_LENGTH are refused before they
are read (nothing reaches the temp directory, also for requests that would fail CSRF or auth), NUL
characters anywhere are a 422 (not PostgreSQL's misleading 503), and lone surrogates or 100,000 nested
`[` in the API's JSON fields are a 400/422, never a 500."""
from __future__ import annotations

import json
import tempfile

import pytest

from tests.api.apiclient import AUTH, DELETE_50, KEY, Api, documented, paused
from tests.fake_openai import Turn

MiB = 1024 * 1024


@pytest.fixture
def app_config(app_config):
    return {**app_config, "OS_SECURITY_KEY": KEY, "API_AUTH": "on", "API_WAIT_SECONDS": 20.0}


@pytest.fixture
def api(app):
    return Api(app)


class EndlessUpload:
    """A multipart body that never ends (a 300 MiB upload and more), counting what the server reads."""

    def __init__(self):
        self.read_bytes = 0
        self.head = b'--zz\r\nContent-Disposition: form-data; name="message"; filename="big.txt"\r\n\r\n'

    def read(self, size=-1):
        if self.head:
            head, self.head = self.head, b""
            self.read_bytes += len(head)
            return head
        size = 64 * 1024 if size is None or size < 0 else size
        self.read_bytes += size
        return b"y" * size

    readline = read


@pytest.fixture
def spooled_files(monkeypatch, tmp_path):
    """Every temp file opened during the test (Werkzeug spools large form parts with TemporaryFile,
    which on Linux is invisible in a directory listing), created in a temp dir of the test's own."""
    created = []
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    real = tempfile.TemporaryFile

    def recording(*args, **kwargs):
        created.append(kwargs)
        return real(*args, **{**kwargs, "dir": spool_dir})

    monkeypatch.setattr(tempfile, "TemporaryFile", recording)
    monkeypatch.setattr(tempfile, "tempdir", str(spool_dir))
    yield created
    assert list(spool_dir.iterdir()) == []


def huge_post(client, path, chunked: bool, headers=None):
    """POST 300 MiB of multipart: with a Content-Length, or chunked (no length, an endless stream)."""
    body = EndlessUpload()
    environ = {"wsgi.input": body, "wsgi.input_terminated": True}
    if chunked:
        environ.update(HTTP_TRANSFER_ENCODING="chunked", CONTENT_LENGTH="")
    else:
        environ.update(CONTENT_LENGTH=str(300 * MiB))
    response = client.post(path, content_type="multipart/form-data; boundary=zz", headers=headers or {},
                           environ_overrides=environ)
    return response, body.read_bytes


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_300_mib_upload_is_refused_with_413_before_it_is_spooled(app, browser, spooled_files, chunked):
    browser.get("/")
    chat_id = browser.new_chat()
    cases = [
        (browser.client, f"/chats/{chat_id}/messages", {"X-CSRFToken": browser.csrf, "HX-Request": "true"}),
        (browser.client, f"/chats/{chat_id}/messages", {}),                 # no CSRF token: would be a 400
        (app.test_client(), "/agents/data_manager/runs", AUTH),              # the API with its key
        (app.test_client(), "/agents/data_manager/runs", {}),                # no key: would be a 401
    ]
    for client, path, headers in cases:
        response, read = huge_post(client, path, chunked, headers)
        assert response.status_code == 413, (path, headers, response.status_code)
        assert "too large" in response.get_data(as_text=True) and "1 MiB" in response.get_data(as_text=True)
        assert read <= app.config["MAX_CONTENT_LENGTH"] + 64 * 1024, "the server stopped reading at the limit"
    assert spooled_files == [], "nothing was written to a temp file"


def test_the_api_answers_413_as_json(app):
    response, _ = huge_post(app.test_client(), "/agents/data_manager/runs", chunked=False, headers=AUTH)
    assert response.status_code == 413 and response.get_json() == \
        {"detail": "The request is too large: at most 1 MiB is accepted."}


def test_a_small_message_still_goes_through(browser, harness, fake_model):
    fake_model.script(Turn(text="Hello."))
    chat_id = browser.new_chat()
    assert browser.post(f"/chats/{chat_id}/messages", {"message": "hi " * 2000}).status_code == 200


# --- NUL characters --------------------------------------------------------------------------------

def test_nul_in_a_message_is_a_422_with_a_message_and_nothing_is_stored(browser, harness):
    chat_id = browser.new_chat()
    response = browser.post(f"/chats/{chat_id}/messages", {"message": "delete\x00 everything"})
    assert response.status_code == 422
    assert "message must not contain NUL characters." in response.get_data(as_text=True)
    assert 'id="flash"' in response.get_data(as_text=True), "shown inline, in the page's flash"
    assert harness.messages(chat_id) == []


@pytest.mark.parametrize("path", ["/chats/abc\x00def", "/runs/run_\x00/events", "/chats/x?after=\x00"])
def test_nul_in_ids_and_query_strings_is_a_422(browser, path):
    response = browser.get(path.replace("\x00", "%00"))
    assert response.status_code == 422 and "must not contain NUL characters" in response.get_data(as_text=True)


def test_nul_in_decision_paths_and_form_fields_is_a_422(browser, harness, fake_model):
    fake_model.script(Turn(tool_calls=[DELETE_50]))
    chat_id = browser.new_chat()
    run_id = browser.post(f"/chats/{chat_id}/messages", {"message": "Delete 50 old records from the users table"}) \
        .get_data(as_text=True).split("/runs/")[1].split("/")[0]
    harness.wait(run_id, "paused")
    call_id = harness.calls(run_id)[0].id
    assert browser.post(f"/runs/{run_id}/calls/{call_id}%00/approve").status_code == 422
    assert browser.post(f"/runs/{run_id}/calls/{call_id}/reject", {"reason": "no\x00"}).status_code == 422
    assert browser.post(f"/runs/{run_id}%00/retry").status_code == 422
    assert harness.calls(run_id)[0].status == "pending", "nothing was decided"


@pytest.mark.parametrize("field", ["message", "user_id", "session_id", "stream"])
def test_nul_in_api_form_fields_is_a_422(api, field):
    form = {"message": "hello", "user_id": "alice", "session_id": "s1", "stream": "false", field: "x\x00y"}
    response = api.post("/agents/data_manager/runs", data=form, content_type="multipart/form-data")
    assert response.status_code == 422
    assert response.get_json() == {"detail": f"{field} must not contain NUL characters."}


def test_nul_in_api_paths_and_queries_is_a_422(api):
    for path in ["/sessions/a%00b", "/agents/data_manager/runs/run_%00", "/sessions?user_id=a%00"]:
        response = api.get(path)
        assert response.status_code == 422, path
        assert "NUL" in response.get_json()["detail"]


# --- JSON fields: NUL, lone surrogates, deep nesting -----------------------------------------------

BAD_JSON = {
    "nul": ('"x\\u0000y"', 422, "must not contain NUL characters"),
    "lone surrogate": ('"\\ud800"', 422, "lone surrogate"),
    "deep nesting": ("[" * 100_000, 400, "nested too deeply"),
    "nesting past the limit": ("[" * 40 + "]" * 40, 400, "nested too deeply"),
}


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_bad_json_in_tools_and_confirmation_note_is_a_4xx(api, harness, fake_model, case):
    fake_model.script(Turn(tool_calls=[DELETE_50]))
    run = paused(api, user_id="alice", session_id="s")
    value, status, detail = BAD_JSON[case]
    rejected = {k: v for k, v in documented(run["tools"][0], confirmed=False)[0].items() if k != "tool_args"}
    as_note = json.dumps([rejected])[:-2] + f', "confirmation_note": {value}}}]'
    as_args = json.dumps([rejected])[:-2] + f', "tool_args": {{"table_name": {value}}}}}]'
    for tools in (value, as_note, as_args):
        response = api.continue_(run["run_id"], tools, user_id="alice", stream=False)
        assert response.status_code == status, (case, response.get_data(as_text=True)[:200])
        assert detail in response.get_json()["detail"]
    assert api.get(f"/agents/data_manager/runs/{run['run_id']}", query_string={"user_id": "alice"}) \
        .get_json()["status"] == "PAUSED", "nothing was decided"


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_bad_json_in_the_rename_body_is_a_4xx(api, harness, fake_model, case):
    fake_model.script(Turn(text="Hi."))
    api.run("hello", session_id="s", stream=False)
    value, status, detail = BAD_JSON[case]
    body = '{"session_name": %s}' % value if case != "deep nesting" else value
    response = api.post("/sessions/s/rename", data=body, content_type="application/json")
    assert response.status_code == status and detail in response.get_json()["detail"]
    assert api.get("/sessions/s").get_json()["session_name"] != "y"


def test_a_rename_with_a_nul_in_a_form_field_is_a_422(api, fake_model):
    fake_model.script(Turn(text="Hi."))
    api.run("hello", session_id="s", stream=False)
    assert api.post("/sessions/s/rename", data={"session_name": "a\x00"}).status_code == 422
