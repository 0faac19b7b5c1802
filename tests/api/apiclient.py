"""The REST API as a test sees it: a client with the bearer key that speaks the reference's forms, and
readers for its JSON and event streams."""
from __future__ import annotations

import json

from tests.conftest import parse_sse
from tests.fake_openai import ToolCall

KEY = "test-os-security-key-0123456789abcdef"  # at least 32 characters (config.MIN_KEY_CHARS)
AUTH = {"Authorization": f"Bearer {KEY}"}
DELETE_50 = ToolCall("delete_records", {"table_name": "users", "count": 50})
NOTIFY_ADMIN = ToolCall("send_notification", {"recipient": "admin@example.com",
                                              "message": "50 old records were deleted from users"})


class Api:
    """The test client with the bearer key, and the reference's calls as methods."""

    def __init__(self, app, headers=AUTH):
        self.client = app.test_client()
        self.headers = headers

    def request(self, method: str, path: str, **kwargs):
        return self.client.open(path, method=method, headers={**self.headers, **kwargs.pop("headers", {})},
                                **kwargs)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data=None, **kwargs):
        return self.request("POST", path, data=data, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def run(self, message: str, agent: str = "data_manager", **form):
        """POST a run; form values go as the reference sends them (multipart, strings)."""
        return self.post(f"/agents/{agent}/runs", data={"message": message, **_form(form)},
                         content_type="multipart/form-data")

    def continue_(self, run_id: str, tools, agent: str = "data_manager", **form):
        text = tools if isinstance(tools, str) else json.dumps(tools)
        return self.post(f"/agents/{agent}/runs/{run_id}/continue", data={"tools": text, **_form(form)},
                         content_type="multipart/form-data")


def _form(values: dict) -> dict:
    return {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in values.items() if v is not None}


def events(response) -> list[tuple[str, dict]]:
    """The (name, payload) pairs of a `text/event-stream` answer."""
    assert response.mimetype == "text/event-stream", response.get_data(as_text=True)[:500]
    return [(e["event"], json.loads(e["data"])) for e in parse_sse(response.get_data(as_text=True))
            if e["data"]]


def names(stream: list[tuple[str, dict]]) -> list[str]:
    """The event names, with a run of RunContent counted once (text arrives in batches of ~40 ms)."""
    found = [name for name, _ in stream]
    return [name for i, name in enumerate(found) if name != "RunContent" or i == 0 or found[i - 1] != name]


def paused(api: Api, message: str = "Delete 50 old records from the users table", **form) -> dict:
    """Start a run with stream=false and return its (PAUSED) JSON."""
    response = api.run(message, stream=False, **form)
    body = response.get_json()
    assert response.status_code == 200 and body["status"] == "PAUSED", body
    return body


def documented(tool: dict, confirmed=True) -> list[dict]:
    """The continue payload exactly as the reference's docs write it (no requires_confirmation)."""
    return [{"tool_call_id": tool["tool_call_id"], "tool_name": tool["tool_name"], "tool_args": tool["tool_args"],
             "confirmed": confirmed}]
