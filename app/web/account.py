"""The account page: password, personal API tokens, "Always allow" grants, signing out everywhere."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_user

from app import accounts, grants
from app.accounts import AccountError
from app.agent.refusals import Refusal
from app.extensions import limiter

bp = Blueprint("account", __name__, url_prefix="/account")


@bp.get("")
def show():
    return _page()


@bp.post("/password")
def change_password():
    try:
        accounts.change_password(current_user.id, request.form.get("current_password", ""),
                                 request.form.get("new_password", ""))
    except AccountError as exc:
        return _page(password_error=str(exc), status=422)
    # Every session of the account ended, this one too: sign this browser in again.
    account = accounts.start_login_session(current_user._get_current_object(), timedelta(days=current_app.config["LOGIN_DAYS"]),
                                           request.headers.get("User-Agent"))
    login_user(account)
    return _page(notice="Password changed. Your other browsers and devices are signed out.")


def per_account() -> str:
    return f"account:{current_user.id}"


@bp.post("/tokens")
@limiter.limit(lambda: current_app.config["CREATION_LIMIT"], key_func=per_account,
               error_message="You created many tokens just now. Wait a little and try again.")
def create_token():
    try:
        new = accounts.create_api_token(current_user.id, request.form.get("name", ""))
    except AccountError as exc:
        return _page(token_error=str(exc), status=422)
    return _page(new_token=new)


@bp.post("/tokens/<int:token_id>/revoke")
def revoke_token(token_id):
    try:
        accounts.revoke_api_token(current_user.id, token_id)
    except AccountError as exc:
        return _page(token_error=str(exc), status=404)
    return redirect(url_for("account.show"), 303)


@bp.post("/grants/<int:grant_id>/revoke")
def revoke_grant(grant_id):
    try:
        grants.revoke(current_user.id, grant_id)
    except Refusal as exc:
        return _page(grant_error=str(exc), status=404)
    return redirect(url_for("account.show", _anchor="grants-heading"), 303)


@bp.post("/sign-out-everywhere")
def sign_out_everywhere():
    accounts.end_all_login_sessions(current_user.id)
    return redirect(url_for("signin.login"), 303)


def _page(status: int = 200, **context):
    return render_template("account/page.html", tokens=accounts.list_api_tokens(current_user.id),
                           grants=grants.list_for(current_user.id), agent_name=_agent_name, **context), status


def _agent_name(agent_id: str) -> str:
    agent = current_app.extensions["agents"].get(agent_id)
    return agent.name if agent else agent_id
