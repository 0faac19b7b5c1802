"""APPROVAL_WEBHOOK_URL: each new pending call is announced by a JSON POST (Slack-compatible `text`, plus
structured fields) that links to its card. The link only opens the card; deciding needs a signed-in person.

Durable and outside the run loop: a background thread in each serving process scans for pending calls
that have no delivery row yet and records one (`approval_notifications`), then sends the rows that are
due. A row is claimed by a compare-and-set (`claimed_until` in the past -> now + CLAIM), so two
processes never both send it; the outcome is written after the POST. A process that dies between the
POST and that write leaves a claim that lapses, and the notification is sent once more (at least once:
a receiver that must not show it twice can use `call_id`). Nothing here blocks a run or a request.
"""
from __future__ import annotations

import importlib
import json
import logging
import threading
import urllib.error
import urllib.request
from datetime import timedelta

import sqlalchemy as sa

from app.extensions import db, patient_checkouts
from app.models import (Account, ApprovalNotification, CallStatus, ChatSession, NotificationStatus, Run, ToolCall,
                        utcnow)

log = logging.getLogger(__name__)

CLAIM = timedelta(seconds=60)   # longer than a POST may take (TIMEOUT), so a live sender keeps its claim
TIMEOUT = 10                    # seconds one POST may take
MAX_BACKOFF = timedelta(hours=1)
CARD_PATH = "/approvals#call-{call_id}"
MAX_ARGS_IN_TEXT = 300


def record_new_pending() -> int:
    """Give every pending call that has none a delivery row, due now. Idempotent and race-free: the
    unique call_id and ON CONFLICT DO NOTHING let two processes run it at once."""
    now = utcnow()
    unannounced = (sa.select(ToolCall.id, sa.literal(NotificationStatus.WAITING), sa.literal(0),
                             sa.literal(now, sa.DateTime(timezone=True)), sa.literal(now, sa.DateTime(timezone=True)))
                   .where(ToolCall.status == CallStatus.PENDING,
                          ~sa.select(ApprovalNotification.id).where(ApprovalNotification.call_id == ToolCall.id)
                          .exists()))
    # The dialect's own INSERT (for ON CONFLICT); imported here so SQLite workers never load PostgreSQL's
    dialect = importlib.import_module(f"sqlalchemy.dialects.{db.session.get_bind().dialect.name}")
    insert = dialect.insert(ApprovalNotification.__table__).from_select(
        ["call_id", "status", "attempts", "next_attempt_at", "created_at"], unannounced).on_conflict_do_nothing()
    # Counted from RETURNING: psycopg reports no rowcount for this statement.
    added = len(db.session.execute(insert.returning(ApprovalNotification.__table__.c.id)).all())
    db.session.commit()
    return added


def claim_due(limit: int = 20) -> list[int]:
    """Take the due rows nobody holds, each by a compare-and-set; returns the ids this process now owns."""
    now = utcnow()
    due = db.session.scalars(sa.select(ApprovalNotification.id).where(
        ApprovalNotification.status == NotificationStatus.WAITING, ApprovalNotification.next_attempt_at <= now,
        sa.or_(ApprovalNotification.claimed_until.is_(None), ApprovalNotification.claimed_until < now))
        .order_by(ApprovalNotification.next_attempt_at).limit(limit)).all()
    claimed = []
    for notification_id in due:
        taken = db.session.execute(sa.update(ApprovalNotification).where(
            ApprovalNotification.id == notification_id, ApprovalNotification.status == NotificationStatus.WAITING,
            sa.or_(ApprovalNotification.claimed_until.is_(None), ApprovalNotification.claimed_until < now))
            .values(claimed_until=now + CLAIM, attempts=ApprovalNotification.attempts + 1)).rowcount
        if taken == 1:
            claimed.append(notification_id)
    db.session.commit()
    return claimed


def payload(notification_id: int, public_url: str | None, agent_name) -> dict | None:
    """The JSON to POST, or None when the call no longer waits (decided before it could be announced)."""
    row = db.session.execute(
        sa.select(ToolCall, ChatSession, Account).join(ApprovalNotification, ApprovalNotification.call_id == ToolCall.id)
        .join(Run, Run.id == ToolCall.run_id).join(ChatSession, ChatSession.id == Run.session_id)
        .join(Account, Account.id == Run.owner_id).where(ApprovalNotification.id == notification_id)).first()
    if row is None or row[0].status != CallStatus.PENDING:
        return None
    call, chat, owner = row
    base = public_url or ""
    card_url = base + CARD_PATH.format(call_id=call.id)
    requester = owner.display_name
    agent = agent_name(chat.agent_id)
    arguments = json.dumps(call.arguments if call.arguments is not None else call.raw_arguments, ensure_ascii=False)
    if len(arguments) > MAX_ARGS_IN_TEXT:
        arguments = arguments[:MAX_ARGS_IN_TEXT - 1] + "…"
    return {
        "text": f"{agent} asks to run {call.name} {arguments} for {requester} (chat “{chat.title}”). "
                f"Review it: {card_url}",
        "call_id": call.id, "run_id": call.run_id, "tool": call.name, "arguments": call.arguments,
        "preview": call.preview, "agent_id": chat.agent_id, "agent": agent, "requester": requester,
        "requester_email": owner.email, "chat_id": chat.id, "chat_title": chat.title,
        "chat_url": f"{base}/chats/{chat.id}", "card_url": card_url,
    }


def post(url: str, body: dict) -> str | None:
    """POST the JSON; None if the receiver took it (2xx), else what went wrong."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "agent-chat-approvals"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            response.read(1024)
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:  # refused, timed out, DNS, a URL it cannot open
        return str(exc)[:500] or type(exc).__name__


def record_outcome(notification_id: int, error: str | None, skipped: bool, max_attempts: int,
                   backoff_seconds: float) -> None:
    """Delivered, skipped, or failed: then due again after a doubling wait, or given up after max_attempts."""
    now = utcnow()
    if skipped:
        values = {"status": NotificationStatus.SKIPPED}
    elif error is None:
        values = {"status": NotificationStatus.DELIVERED, "delivered_at": now, "last_error": None}
    else:
        attempts = db.session.scalar(sa.select(ApprovalNotification.attempts)
                                     .where(ApprovalNotification.id == notification_id)) or max_attempts
        wait = min(timedelta(seconds=backoff_seconds * 2 ** (attempts - 1)), MAX_BACKOFF)
        values = {"last_error": error, "next_attempt_at": now + wait}
        if attempts >= max_attempts:
            values["status"] = NotificationStatus.GAVE_UP
    db.session.execute(sa.update(ApprovalNotification).where(
        ApprovalNotification.id == notification_id, ApprovalNotification.status == NotificationStatus.WAITING)
        .values(claimed_until=None, **values))
    db.session.commit()


def deliver_due(config, agent_name) -> int:
    """One pass: record new pending calls, then send what is due. Returns how many were sent."""
    record_new_pending()
    sent = 0
    for notification_id in claim_due():
        body = payload(notification_id, config.get("PUBLIC_URL"), agent_name)
        db.session.commit()  # never hold a transaction across the POST
        error = post(config["APPROVAL_WEBHOOK_URL"], body) if body is not None else None
        if error:
            log.warning("approval webhook for notification %s failed: %s", notification_id, error)
        record_outcome(notification_id, error, body is None, config["APPROVAL_WEBHOOK_ATTEMPTS"],
                       config["APPROVAL_WEBHOOK_BACKOFF"])
        sent += body is not None and error is None
    return sent


class ApprovalNotifier:
    """The background thread of one process (create_app starts it in servers, when a webhook is set)."""

    def __init__(self, app):
        self.app = app
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="approval-webhook", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(TIMEOUT + 5)

    def _loop(self) -> None:
        registry = self.app.extensions["agents"]

        def agent_name(agent_id: str) -> str:
            agent = registry.get(agent_id)
            return agent.name if agent else agent_id

        while not self._stopped.is_set():
            with self.app.app_context(), patient_checkouts():
                try:
                    deliver_due(self.app.config, agent_name)
                except Exception:  # the database away, say: try again next time round
                    log.exception("approval webhook pass failed")
                finally:
                    db.session.remove()
            self._stopped.wait(self.app.config["APPROVAL_WEBHOOK_SCAN_SECONDS"])
