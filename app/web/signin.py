"""Signing in and out, the first-run setup, and joining (by invite, or open sign-up).

Every other page, fragment and stream needs a signed-in account (`require_sign_in`): a browser is sent
to /login, an htmx request is told to go there (`HX-Redirect`), an event stream gets a 401. The REST API
authenticates with bearer credentials instead (app/web/auth.py).
"""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from app import accounts
from app.accounts import AccountError
from app.extensions import db, limiter, login_manager
from app.web.errors import DATABASE_UNAVAILABLE

bp = Blueprint("signin", __name__)

# Reachable without signing in (the REST API has its own credentials).
OPEN_ENDPOINTS = {"static", "signin.login", "signin.setup", "signin.join", "signin.signup"}
OPEN_BLUEPRINTS = {"api"}


@login_manager.user_loader
def load_account(token: str):
    if g.get("database_unavailable"):
        return None  # rendering the 503 page: don't ask the database again
    try:
        return accounts.signed_in_account(token)
    except DATABASE_UNAVAILABLE:
        g.database_unavailable = True
        raise


def register(app) -> None:
    # Before CSRF protection: a signed-out request is sent to sign in, not told its token expired.
    app.before_request(require_sign_in)


def require_sign_in():
    if (request.endpoint in OPEN_ENDPOINTS or request.blueprint in OPEN_BLUEPRINTS or request.endpoint is None
            or current_user.is_authenticated or _bearer_allowed()):
        return None
    if request.endpoint == "chat.run_events":
        abort(401, "Sign in to follow this chat.")  # EventSource cannot follow a redirect to a page
    target = url_for("signin.setup") if accounts.setup_needed() else url_for(
        "signin.login", next=request.full_path if request.method == "GET" else None)
    if request.headers.get("HX-Request"):
        # htmx would swap the login page into the chat; tell it to load the page instead.
        return "", 401, {"HX-Redirect": target}
    return redirect(target)


def _bearer_allowed() -> bool:
    """A view marked `accepts_bearer` (app.web.approvals) checks an Authorization header itself."""
    view = current_app.view_functions.get(request.endpoint)
    return bool(request.headers.get("Authorization")) and getattr(view, "accepts_bearer", False)


def _failed(response) -> bool:
    return response.status_code == 401


def _email_key() -> str:
    return "sign-in:" + (request.form.get("email") or "").strip().lower()[:254]


# Guessing passwords: failed attempts are counted per address and per email (so neither many addresses
# against one account nor one address against many accounts gets far); a successful sign-in costs nothing.
@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["SIGNIN_LIMIT_PER_IP"], methods=["POST"], deduct_when=_failed,
               error_message="Too many sign-in attempts from your network. Wait a little and try again.")
@limiter.limit(lambda: current_app.config["SIGNIN_LIMIT_PER_EMAIL"], methods=["POST"], key_func=_email_key,
               deduct_when=_failed, error_message="Too many sign-in attempts for this account. Wait a little and "
                                                 "try again.")
def login():
    if accounts.setup_needed():
        return redirect(url_for("signin.setup"))
    if current_user.is_authenticated:
        return redirect(_next_page())
    error = None
    if request.method == "POST":
        account = accounts.verify_password(request.form.get("email", ""), request.form.get("password", ""))
        if account is not None:
            _sign_in(account, remember=request.form.get("remember") == "on")
            return redirect(_next_page(), 303)
        error = "That email and password don't match an account."
    status = 401 if error else 200
    return render_template("signin/login.html", error=error, email=request.form.get("email", ""),
                           next=_next_page()), status


@bp.post("/logout")
def logout():
    accounts.end_login_session(current_user.login_token)
    logout_user()
    session.clear()
    return redirect(url_for("signin.login"), 303)


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """Exists only while nobody can sign in: creates the first admin."""
    if not accounts.setup_needed():
        abort(404)
    error = None
    if request.method == "POST":
        try:
            admin = accounts.create_first_admin(request.form.get("email", ""), request.form.get("password", ""))
        except AccountError as exc:
            if exc.kind == "conflict":
                return redirect(url_for("signin.login"), 303)
            error = str(exc)
        else:
            _sign_in(admin, remember=False)
            return redirect(url_for("chat.index"), 303)
    return render_template("signin/setup.html", error=error, email=request.form.get("email", "")), \
        422 if error else 200


@bp.route("/join/<secret>", methods=["GET", "POST"])
def join(secret):
    """An admin's invite link: choose an email and password, and you are in."""
    invite = accounts.open_invite(secret)
    if invite is None:
        return render_template("signin/join.html", invalid=True), 404
    return _join_form(lambda email, password: accounts.accept_invite(secret, email, password), invite=invite)


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    """Only with SIGNUP=open; otherwise joining takes an invite."""
    if current_app.config["SIGNUP"] != "open" or accounts.setup_needed():
        abort(404)
    return _join_form(lambda email, password: accounts.create_account(email, password))


def _join_form(create, invite=None):
    if current_user.is_authenticated:
        return redirect(url_for("chat.index"))
    error = None
    if request.method == "POST":
        try:
            account = create(request.form.get("email", ""), request.form.get("password", ""))
        except AccountError as exc:
            error = str(exc)
        else:
            _sign_in(account, remember=False)
            return redirect(url_for("chat.index"), 303)
    return render_template("signin/join.html", invite=invite, error=error, email=request.form.get("email", ""),
                           invalid=False), 422 if error else 200


def _sign_in(account, remember: bool) -> None:
    """A new login session, and a new Flask session: nothing from before sign-in carries over."""
    session.clear()
    accounts.start_login_session(account, timedelta(days=current_app.config["LOGIN_DAYS"]),
                                 request.headers.get("User-Agent"))
    login_user(account, remember=remember, duration=timedelta(days=current_app.config["LOGIN_DAYS"]))
    db.session.commit()


def _next_page() -> str:
    """Where to go after signing in: a path of ours only (never another site)."""
    target = request.values.get("next") or ""
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//") or parts.scheme or parts.netloc or "\\" in target:
        return url_for("chat.index")
    return target
