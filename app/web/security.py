"""Security headers and cookie attributes for every response, what the app trusts from a reverse proxy,
and the open API's refusal of other sites.

Served over HTTPS (directly, or behind a proxy the app trusts: PROXY_FIX, gunicorn's
FORWARDED_ALLOW_IPS), the session cookie is `__Host-session` and every cookie is `Secure`, and
responses carry HSTS. Every cookie is `SameSite=Lax`. Pages, fragments, streams and API answers are
`Cache-Control: no-store` (they carry CSRF tokens or private data); static files are not.
"""
from __future__ import annotations

from flask import Flask, abort, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'report-sample'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
HSTS = "max-age=31536000"  # a year; no includeSubDomains: other hosts of the domain are not ours to decide
SECURE_SESSION_COOKIE = "__Host-session"  # the browser only accepts it Secure, for this host, Path=/


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, named with the `__Host-` prefix and `Secure` on HTTPS requests
    (on plain HTTP, a local `scripts/run`, a Secure cookie would never come back)."""

    def get_cookie_name(self, app: Flask) -> str:
        return SECURE_SESSION_COOKIE if request.is_secure else super().get_cookie_name(app)

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)


def register_request_checks(app: Flask) -> None:
    """Checks that must run before anything else reads or writes (create_app calls this early)."""
    if app.config.get("PROXY_FIX"):
        hops = app.config["PROXY_FIX"]  # that many proxies set X-Forwarded-*: trust the last `hops` entries
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    app.before_request(refuse_other_sites_on_an_open_api)
    # after_request functions run in reverse order of registration: registered first, this one runs
    # after every other (Flask-Login sets its remember-me cookie in one of them). The session cookie is
    # written after all of them, by SessionInterface.
    app.after_request(_harden_cookies)


def refuse_other_sites_on_an_open_api() -> None:
    """With API_AUTH=off (loopback only, config.py) the API has no credential, so any web page the
    person visits could post to it from their browser: refuse requests a browser marks as coming from
    another site. Clients that are not browsers send neither header and are unaffected."""
    from flask import current_app
    if request.blueprint != "api" or current_app.config.get("API_AUTH") != "off":
        return
    origin = request.headers.get("Origin")
    if request.headers.get("Sec-Fetch-Site") == "cross-site" or \
            (origin is not None and origin != f"{request.scheme}://{request.host}"):
        abort(403, "This API is open without a key (API_AUTH=off), so it refuses requests from other "
                   "web sites.")


def register(app: Flask) -> None:
    app.session_interface = SessionInterface()

    @app.after_request
    def headers(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response


def _harden_cookies(response):
    """Every cookie set by the app's code (Flask-Login's remember-me, any other) SameSite=Lax, and
    Secure on HTTPS."""
    cookies = response.headers.getlist("Set-Cookie")
    if not cookies:
        return response
    response.headers.remove("Set-Cookie")
    for cookie in cookies:
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        if "samesite" not in attributes:
            cookie += "; SameSite=Lax"
        if request.is_secure and "secure" not in attributes:
            cookie += "; Secure"
        response.headers.add("Set-Cookie", cookie)
    return response
