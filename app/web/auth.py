"""Who is calling the REST API, and as which account. The one place API credentials are checked.

Today there is one credential: `OS_SECURITY_KEY` (the reference's variable), sent as
`Authorization: Bearer <key>`, which acts for any `user_id`. Without a key the API refuses everything
(401, saying how to set one) unless `API_AUTH=off` opens it for local experiments. Personal API tokens
will slot in here: a token names its account, and `acting_account` will refuse other `user_id`s.

API `user_id` strings are accounts (`accounts.external_id`); a request without one acts as the
account `DEFAULT_USER_ID`.
"""
from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from flask import Flask, current_app, g, request

from app.extensions import db
from app.models import Account

log = logging.getLogger(__name__)

DEFAULT_USER_ID = "default"
MAX_USER_ID = 255


class ApiAuthError(Exception):
    """Refused: `status` (401) and a message for `detail`."""

    def __init__(self, message: str, status: int = 401):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Principal:
    """The verified caller. `any_user`: may act for any user_id (the OS key, or API_AUTH=off)."""
    kind: str
    any_user: bool = True


def register(app: Flask) -> None:
    if app.config.get("API_AUTH") == "off":
        log.warning("API_AUTH=off: the REST API accepts requests without a key, acting for any user_id. "
                    "Use this for local experiments only; set OS_SECURITY_KEY instead.")


def authenticate() -> Principal:
    """Check the request's credentials (once per request) or raise ApiAuthError."""
    if "api_principal" in g:
        return g.api_principal
    key = current_app.config.get("OS_SECURITY_KEY")
    if current_app.config.get("API_AUTH") == "off":
        principal = Principal("open")
    elif not key:
        raise ApiAuthError("The API is locked: no key is configured. Set OS_SECURITY_KEY to a long random "
                           "secret and send it as 'Authorization: Bearer <key>' (or set API_AUTH=off for "
                           "local experiments only).")
    else:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiAuthError("Send the API key as 'Authorization: Bearer <key>'.")
        if not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise ApiAuthError("The API key is not valid.")
        principal = Principal("os_key")
    g.api_principal = principal
    return principal


def requested_user_id() -> str:
    """The `user_id` the request acts for (form field or query parameter); the default one if absent."""
    user_id = (request.values.get("user_id") or "").strip()
    if len(user_id) > MAX_USER_ID:
        raise ApiAuthError(f"user_id is too long (at most {MAX_USER_ID} characters).", 422)
    return user_id or DEFAULT_USER_ID


def acting_account(create: bool = False) -> Account | None:
    """The account this request acts as. With `create`, an unknown user_id gets its account now;
    without, it is None (it owns nothing yet, so every lookup is a 404 or an empty list)."""
    principal = authenticate()
    user_id = requested_user_id()
    if not principal.any_user:  # personal tokens (later): only their own account
        raise ApiAuthError("This token cannot act for other users.", 403)
    find = sa.select(Account).where(Account.external_id == user_id)
    account = db.session.scalar(find)
    if account is None and create:
        try:
            account = Account(external_id=user_id, name=user_id[:120])
            db.session.add(account)
            db.session.commit()
        except sa.exc.IntegrityError:  # another request created it first
            db.session.rollback()
            account = db.session.scalar(find)
    return account
