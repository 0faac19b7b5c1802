"""The approvals inbox (`/approvals`) and the audit (`/audit`, `/audit.csv`, `/audit.jsonl`).

Pages for signed-in people. `/approvals` and the two exports also answer API clients that send a bearer
credential (a personal token: its own account's calls; OS_SECURITY_KEY: everyone's), with JSON or the
export; they live here rather than in the REST blueprint, which is moving to a package of its own. Deciding a card
here posts to the chat's decision route (`chat.decide`, the core's `commands.decide`).
"""
from __future__ import annotations

import json

from flask import Blueprint, Response, g, render_template, request, stream_with_context, url_for
from flask_login import current_user

from app import approvals, audit
from app.agent.decisions import refresh_previews
from app.audit import AuditFilterError
from app.web import auth
from app.web.auth import ApiAuthError

bp = Blueprint("approvals", __name__)


def accepts_bearer(view):
    """Marks a view that a bearer credential may call without a signed-in session (app.web.signin)."""
    view.accepts_bearer = True
    return view


def _bearer() -> bool:
    return bool(request.headers.get("Authorization"))


def _scope() -> int | None:
    """Whose calls this request may see: an account id, or None for everyone's (an admin, the service key)."""
    if _bearer():
        return auth.authenticate().account_id  # a token: its own account; the service key: None
    return approvals.scope_of(current_user)


def _json_error(message: str, status: int) -> Response:
    return Response(json.dumps({"detail": message}), status, mimetype="application/json")


@bp.errorhandler(ApiAuthError)
def _refused(exc: ApiAuthError):
    return _json_error(str(exc), exc.status)


@bp.errorhandler(AuditFilterError)
def _bad_filter(exc: AuditFilterError):
    if _bearer() or request.path.endswith((".csv", ".jsonl")):
        return _json_error(str(exc), 422)
    return _audit_page(audit.AuditFilter(), error=str(exc), status=422)


@bp.app_context_processor
def waiting_approvals():
    def approvals_waiting() -> int:
        """Calls waiting for the signed-in person; counted once per request, on whatever page asks."""
        if g.get("database_unavailable") or not current_user.is_authenticated:
            return 0  # the 503 page must not ask the database again
        if "approvals_waiting" not in g:
            g.approvals_waiting = approvals.pending_count(approvals.scope_of(current_user))
        return g.approvals_waiting
    return {"approvals_waiting": approvals_waiting}


@bp.get("/approvals")
@accepts_bearer
def inbox():
    scope = _scope()
    for run_id in {item.call.run_id for item in approvals.pending_calls(scope)}:
        refresh_previews(run_id)  # each card shows what approving it would do now
    items = approvals.pending_calls(scope)
    if _bearer():
        return {"data": [approvals.as_json(item, url_for("approvals.inbox", _anchor=f"call-{item.call.id}",
                                                         _external=True),
                                           url_for("chat.show", chat_id=item.chat.id, _external=True))
                         for item in items]}
    return render_template("approvals/page.html", items=items)


@bp.get("/audit")
def audit_page():
    return _audit_page(audit.parse_filter(request.args))


def _audit_page(where: audit.AuditFilter, error: str | None = None, status: int = 200):
    records, more = audit.page(_scope(), where)
    return render_template("approvals/audit.html", records=records, more=more, where=where, error=error,
                           decisions=audit.DECISIONS), status


@bp.get("/audit.<any(csv, jsonl):kind>")
@accepts_bearer
def audit_export(kind):
    where = audit.parse_filter(request.args)
    records = audit.records(_scope(), where)
    body, mimetype = (audit.as_csv(records), "text/csv") if kind == "csv" else (audit.as_jsonl(records),
                                                                               "application/x-ndjson")
    return Response(stream_with_context(body), mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="audit.{kind}"', "Cache-Control": "no-store"})

