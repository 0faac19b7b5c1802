"""Who is calling the REST API, and as which account. The one place API credentials are checked.

Two credentials, both sent as `Authorization: Bearer <secret>`:
- a personal API token (created on the account page) acts as its own account only: a `user_id` naming
  anyone else is a 403; without `user_id` it is the token's account. A chat started with a token is the
  same chat in that person's browser.
- `OS_SECURITY_KEY` (the reference's variable) is the operator's service key and acts for any `user_id`
  (an API user, `accounts.external_id`, or a person by email); a request without one acts as the account
  `DEFAULT_USER_ID`.
Without either the API refuses everything (401) unless `API_AUTH=off` opens it for local experiments.
"""
from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import Flask, current_app, g, request

from app import accounts
from app.extensions import db
from app.models import Account
from app.sign_ins import sign_ins

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
    """The verified caller: a personal token's account (`account_id`, and the account itself, detached),
    or one that may act for any user_id (the OS key, or API_AUTH=off: `account_id` None)."""
    account_id: int | None = None
    account: Account | None = field(default=None, compare=False)


def register(app: Flask) -> None:
    if app.config.get("API_AUTH") == "off":
        log.warning("API_AUTH=off: the REST API accepts requests without a key, acting for any user_id. "
                    "Use this for local experiments only; set OS_SECURITY_KEY instead.")


def authenticate() -> Principal:
    """Check the request's credentials (once per request) or raise ApiAuthError."""
    if "api_principal" in g:
        return g.api_principal
    key = current_app.config.get("OS_SECURITY_KEY")
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    secret = secret.strip() if scheme.lower() == "bearer" else ""
    if secret.startswith(accounts.TOKEN_PREFIX):
        account = accounts.account_for_api_token(secret)
        if account is None:
            raise ApiAuthError("This API token is not valid: it was revoked, or its account is disabled.")
        principal = Principal(account.id, account)
    elif current_app.config.get("API_AUTH") == "off":
        principal = Principal()
    elif secret and key and hmac.compare_digest(secret.encode(), key.encode()):
        principal = Principal()
    elif not key:
        raise ApiAuthError("Send a personal API token (from your account page) as 'Authorization: Bearer "
                           "<token>'. For a service key that acts for any user_id, set OS_SECURITY_KEY (or "
                           "API_AUTH=off for local experiments only).")
    elif secret:
        raise ApiAuthError("The API key is not valid.")
    else:
        raise ApiAuthError("Send a personal API token (from your account page) or the server's "
                           "OS_SECURITY_KEY as 'Authorization: Bearer <token>'.")
    g.api_principal = principal
    return principal


def requested_user_id() -> str | None:
    """The `user_id` the request names (form field or query parameter), if any."""
    user_id = (request.values.get("user_id") or "").strip()
    if len(user_id) > MAX_USER_ID:
        raise ApiAuthError(f"user_id is too long (at most {MAX_USER_ID} characters).", 422)
    return user_id or None


def acting_account(create: bool = False) -> Account | None:
    """The account this request acts as. With `create`, an unknown user_id gets its account now;
    without, it is None (it owns nothing yet, so every lookup is a 404 or an empty list)."""
    if g.get("acting_account") is not None:  # found once per request (the rate limit's key asks first)
        return g.acting_account
    account = _acting_account(create)
    if account is not None:
        if sa.inspect(account).session is not None:
            if sa.inspect(account).expired_attributes:
                db.session.refresh(account)  # just created (and committed)
            db.session.expunge(account)  # loaded once: no commit of the request expires (and reloads) it
        g.acting_account = account
    return account


_COLUMNS = tuple(sa.inspect(Account).column_attrs)
# The account an API user_id names: its external id, else its email (built once: building a statement
# cost about as much as running it).
_BY_USER_ID = sa.select(Account).where(sa.or_(Account.external_id == sa.bindparam("user_id"),
                                              Account.email == sa.bindparam("email")))
_BY_USER_ID_EXTERNAL_FIRST = _BY_USER_ID.order_by(Account.external_id.is_(None)).limit(1)


def _acting_account(create: bool) -> Account | None:
    principal = authenticate()
    user_id = requested_user_id()
    if principal.account_id is not None:  # a personal token: its own account, whatever it is called
        account = principal.account
        if user_id is not None and user_id not in (account.external_id, account.email, str(account.id)):
            raise ApiAuthError(f"This token acts for its own account only, not for user_id {user_id!r}.", 403)
        return account
    user_id = user_id or DEFAULT_USER_ID
    key = ("user", user_id)
    remembered = sign_ins()
    if (values := remembered.get(key)) is not None:
        return accounts.detached_account(values)
    # Not inside a transaction begun earlier: its snapshot might predate what `generation` has seen.
    generation = None if db.session().in_transaction() else remembered.generation()
    params = {"user_id": user_id, "email": user_id.lower()}
    account = db.session.scalar(_BY_USER_ID_EXTERNAL_FIRST, params)
    if account is not None:
        remembered.put(key, generation, {column.key: getattr(account, column.key) for column in _COLUMNS})
    elif create:
        try:
            account = Account(external_id=user_id, name=user_id[:120])
            db.session.add(account)
            db.session.commit()
        except sa.exc.IntegrityError:  # another request created it first
            db.session.rollback()
            account = db.session.scalar(_BY_USER_ID, params)
    return account
