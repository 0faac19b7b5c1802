"""The admin page: people (roles, disabling) and invite links; pending calls are in the approvals inbox."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user

from app import accounts
from app.accounts import AccountError
from app.extensions import limiter
from app.web.account import per_account

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def admins_only():
    if not current_user.is_authenticated or not current_user.is_admin:
        abort(404)  # a member learns nothing about this page


@bp.get("")
def show():
    return _page()


@bp.post("/invites")
@limiter.limit(lambda: current_app.config["CREATION_LIMIT"], key_func=per_account,
               error_message="You created many invites just now. Wait a little and try again.")
def create_invite():
    try:
        new = accounts.create_invite(current_user.id, timedelta(hours=current_app.config["INVITE_HOURS"]),
                                     role=request.form.get("role", "member"), note=request.form.get("note", ""))
    except AccountError as exc:
        return _page(error=str(exc), status=422)
    return _page(new_invite_url=url_for("signin.join", secret=new.secret, _external=True))


@bp.post("/invites/<int:invite_id>/revoke")
def revoke_invite(invite_id):
    accounts.revoke_invite(invite_id)
    return redirect(url_for("admin.show"), 303)


@bp.post("/accounts/<int:account_id>/role")
def set_role(account_id):
    return _change(lambda: accounts.set_role(account_id, request.form.get("role", "")))


@bp.post("/accounts/<int:account_id>/<any(disable, enable):action>")
def set_disabled(account_id, action):
    if account_id == current_user.id:
        return _page(error="You cannot disable your own account.", status=422)
    return _change(lambda: accounts.set_disabled(account_id, action == "disable"))


def _change(change):
    try:
        change()
    except AccountError as exc:
        return _page(error=str(exc), status=404 if exc.kind == "not_found" else 422)
    return redirect(url_for("admin.show"), 303)


def _page(status: int = 200, **context):
    return render_template("admin/page.html", people=accounts.list_accounts(),
                           invites=accounts.list_open_invites(), **context), status
