"""Errors people can read: a small page (or fragment, for htmx) and never a stack trace."""
from flask import Flask, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from app.extensions import db


def register(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error):
        return _render("Your session expired. Reload the page and try again.", 400)

    @app.errorhandler(HTTPException)
    def http_error(error):
        return _render(error.description, error.code)

    @app.errorhandler(Exception)
    def unexpected(error):
        app.logger.exception("unhandled error")
        db.session.rollback()
        return _render("Something went wrong on the server.", 500)


def _render(message: str, status: int):
    if request.accept_mimetypes.best == "application/json":
        return {"detail": message}, status
    template = "errors/_error.html" if request.headers.get("HX-Request") else "errors/page.html"
    return render_template(template, message=message, status=status), status
