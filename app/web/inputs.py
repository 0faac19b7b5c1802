"""Bad input gets a clear 4xx before anything reads the database: bodies too large for
MAX_CONTENT_LENGTH are refused before they are read (never spooled to disk), and NUL characters
anywhere in the request's text are a 422 (PostgreSQL refuses them in text, which would be a misleading
503). JSON fields are parsed by `app.jsontext.load_json`.
"""
from __future__ import annotations

import io

from flask import Flask, Request, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge, UnprocessableEntity


class BoundedRequest(Request):
    """Form files are kept in memory: the whole body is at most MAX_CONTENT_LENGTH (Werkzeug refuses a
    larger Content-Length at once and stops a chunked body at the limit), and this app takes no
    uploads, so nothing a client sends is ever written to the temp directory."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def register(app: Flask) -> None:
    """Call before the rate limiter and the blueprints register theirs: this check runs first, so a
    NUL in a user_id never reaches the query that finds the account."""
    app.request_class = BoundedRequest
    app.before_request(refuse_nul_characters)


def refuse_nul_characters() -> None:
    if request.endpoint == "static":
        return
    fields = [*(request.view_args or {}).items(), *request.args.items(multi=True)]
    try:  # reading the body here applies MAX_CONTENT_LENGTH before any other check or view runs
        if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            fields += request.form.items(multi=True)
        elif request.method in ("POST", "PUT", "PATCH", "DELETE"):
            request.get_data(cache=True)
    except RequestEntityTooLarge:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        raise RequestEntityTooLarge(f"The request is too large: at most {_size(limit)} is accepted.") from None
    for name, value in fields:
        if "\x00" in str(name) or "\x00" in str(value):
            raise UnprocessableEntity(f"{_label(name)} must not contain NUL characters.")


def _size(count: int) -> str:
    return f"{count / 1024 / 1024:g} MiB" if count >= 1024 * 1024 else f"{count / 1024:g} KiB"


def _label(name) -> str:
    text = str(name).replace("\x00", "")
    return text if text.isidentifier() else "The request"

