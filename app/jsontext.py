"""JSON from clients, parsed so that no shape of it can crash the app or reach the database as
text the database refuses."""
from __future__ import annotations

import json

MAX_JSON_DEPTH = 32  # the reference's bodies are 3 levels deep; 100,000 `[` must not reach the parser's recursion


class BadJson(ValueError):
    """JSON that is malformed (`status` 400) or holds what the app cannot store (422)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def load_json(text: str | bytes, field: str):
    """Parse JSON text, refusing (BadJson) what is not JSON, nested deeper than MAX_JSON_DEPTH, or
    holding strings that are not storable text (NUL characters, lone UTF-16 surrogates such as \\ud800)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadJson(f"{field} is nested too deeply (at most {MAX_JSON_DEPTH} levels).", 400) from None
    except ValueError:
        raise BadJson(f"Invalid JSON in {field} field", 400) from None
    _check_storable(value, field)
    return value


def _check_storable(value, field: str) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadJson(f"{field} is nested too deeply (at most {MAX_JSON_DEPTH} levels).", 400)
        if isinstance(item, dict):
            stack.extend((key, depth) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise BadJson(f"{field} must not contain NUL characters.")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadJson(f"{field} contains a lone surrogate (such as \\ud800), which is not text.") from None
