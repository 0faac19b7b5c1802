"""The app's own tables: accounts, chats, messages, and the run ledger (runs, tool_calls, run_events).

The run ledger's primitives live on its models: compare-and-set transitions (`Run.transition`,
`ToolCall.transition`), the run row's lock (`Run.lock`) and owner-scoped lookups (`Run.owned_by`,
`ToolCall.owned_by`, `Run.latest_in`). What the transitions mean is `app.agent` (commands, loop,
recovery). Every row leads back to its owner so that each lookup can be scoped by owner (another
user's id is a 404).
"""
from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask_login import UserMixin

from app.extensions import db


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso_utc(moment: datetime | None) -> str | None:
    """ISO 8601 with its zone; SQLite gives back naive datetimes, stored as UTC."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat()


def new_id(prefix: str) -> str:
    """Unguessable ids: they appear in URLs, and guessing one must not reveal a row."""
    return f"{prefix}_{secrets.token_hex(12)}"


class RunStatus:
    QUEUED = "queued"          # waiting for a worker (new, or resumed after a decision)
    RUNNING = "running"        # a worker holds the lease and is talking to the model / running tools
    PAUSED = "paused"          # waiting for a person; stored state only, no worker is waiting
    COMPLETED = "completed"
    FAILED = "failed"          # model error or a crash; Retry continues from the stored state
    CANCELLED = "cancelled"

    ACTIVE = (QUEUED, RUNNING)
    FINISHED = (COMPLETED, FAILED, CANCELLED)


class CallStatus:
    PENDING = "pending"            # waiting for the person's decision
    APPROVED = "approved"          # decided (or needed no confirmation); will execute
    REJECTED = "rejected"          # never executes; the model is told why
    EXECUTING = "executing"        # committed before the side effect starts
    DONE = "done"
    FAILED = "failed"              # invalid arguments or the tool refused / raised
    OUTCOME_UNKNOWN = "outcome_unknown"  # the process died while executing: never silently retried
    EXPIRED = "expired"            # nobody decided before expires_at: never executes; the model is told

    DECIDED = (APPROVED, REJECTED, EXECUTING, DONE, FAILED, OUTCOME_UNKNOWN, EXPIRED)


class CallKind:
    """What a pending call asks of the person."""
    CONFIRM = "confirm"    # approve (possibly after editing the arguments) or reject
    INPUT = "input"        # fill in the tool's user_input_fields, then it runs with the merged arguments
    EXTERNAL = "external"  # run it themselves and hand back the result (never run on the server)


class Role:
    ADMIN = "admin"    # manages people and invites, sees everyone's pending calls, may decide any of them
    MEMBER = "member"  # their own chats; decides the calls of their own runs

    ALL = (ADMIN, MEMBER)


class Account(UserMixin, db.Model):
    """A person (email + password, signs in) or an API user (`external_id`, the `user_id` the service key
    names; no password). Accounts without either are the guests of installations from before sign-in:
    the first admin adopts their chats."""
    __tablename__ = "accounts"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str | None] = so.mapped_column(sa.String(120))
    external_id: so.Mapped[str | None] = so.mapped_column(sa.String(255), unique=True)
    email: so.Mapped[str | None] = so.mapped_column(sa.String(254), unique=True, index=True)  # lower-cased
    password_hash: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    role: so.Mapped[str] = so.mapped_column(sa.String(20), default=Role.MEMBER, server_default=Role.MEMBER)
    disabled_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True))
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow)

    # The token of the login session this request was signed in with: Flask-Login keeps it in the
    # session and remember-me cookies as the "user id", so a cookie names a revocable login session, never
    # the account's sequence number.
    login_token = ""

    def get_id(self) -> str:
        return self.login_token

    @property
    def is_active(self) -> bool:
        return self.disabled_at is None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def api_user_id(self) -> str | None:
        """How the REST API names this account (`user_id`): the client's name for it, else the email."""
        return self.external_id or self.email

    @property
    def display_name(self) -> str:
        return self.name or self.email or self.external_id or f"guest {self.id}"


class LoginSession(db.Model):
    """One signed-in browser. Its random token is what the session and remember-me cookies carry
    (`Account.login_token`), so deleting the row signs that browser out at once, remember-me included.
    Only the token's SHA-256 is stored."""
    __tablename__ = "login_sessions"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    account_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    user_agent: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow)
    expires_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True))


class ApiToken(db.Model):
    """A personal API token: acts as its account only. Shown once; stored as its SHA-256."""
    __tablename__ = "api_tokens"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    account_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(80))
    prefix: so.Mapped[str] = so.mapped_column(sa.String(20))  # the token's first characters, to recognise it
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow)
    last_used_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True))
    revoked_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True))


class Invite(db.Model):
    """A single-use, expiring sign-up link an admin hands to someone. Stored as its SHA-256."""
    __tablename__ = "invites"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    role: so.Mapped[str] = so.mapped_column(sa.String(20), default=Role.MEMBER)
    note: so.Mapped[str | None] = so.mapped_column(sa.String(200))  # whom it is for, as the admin wrote it
    created_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("accounts.id", ondelete="SET NULL"))
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow)
    expires_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True))
    used_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True))
    used_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("accounts.id", ondelete="SET NULL"))


class ChatSession(db.Model):
    __tablename__ = "chat_sessions"
    # An API client may name its sessions ("test_session"); names are per owner, so two users' sessions
    # of the same name are two chats, and nobody learns that another user's name exists.
    __table_args__ = (sa.UniqueConstraint("owner_id", "external_id"),)

    id: so.Mapped[str] = so.mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("chat"))
    owner_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("accounts.id"), index=True)
    external_id: so.Mapped[str | None] = so.mapped_column(sa.String(200))  # the API's session_id, if the client chose it
    agent_id: so.Mapped[str] = so.mapped_column(sa.String(80))
    title: so.Mapped[str] = so.mapped_column(sa.String(200), default="New chat")
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow)
    updated_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow, index=True)
    # Deleted in the browser: hidden everywhere, restorable ("Undo") until purged (app.chats.trash_chat).
    deleted_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True))


class Run(db.Model):
    __tablename__ = "runs"
    # A message's checks read through these, not through all of an account's or a chat's runs: the
    # account's active runs, and the chat's newest run (migration 0011).
    __table_args__ = (sa.Index("ix_runs_owner_id_status", "owner_id", "status"),
                      sa.Index("ix_runs_session_id_created_at", "session_id", "created_at", "id"))

    id: so.Mapped[str] = so.mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("run"))
    session_id: so.Mapped[str] = so.mapped_column(sa.ForeignKey("chat_sessions.id", ondelete="CASCADE"))
    owner_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("accounts.id"))
    agent_id: so.Mapped[str] = so.mapped_column(sa.String(80))
    status: so.Mapped[str] = so.mapped_column(sa.String(20), default=RunStatus.QUEUED, index=True)
    input: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    model: so.Mapped[str | None] = so.mapped_column(sa.String(120))
    # Sequence number of the newest run_event; incremented under the run row's lock, so the order
    # events are committed in is the order of their numbers (a reader's cursor never skips one).
    last_seq: so.Mapped[int] = so.mapped_column(default=0)
    lease_owner: so.Mapped[str | None] = so.mapped_column(sa.String(80))
    lease_until: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True))
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow)
    updated_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    @property
    def is_active(self) -> bool:
        return self.status in RunStatus.ACTIVE

    @classmethod
    def owned_by(cls, owner_id: int, run_id: str, lock: bool = False) -> "Run | None":
        """The run if it is this account's (None also for another account's: it must look missing).
        With `lock`, also `Run.lock` in the same statement (the row read afresh under the lock)."""
        query = sa.select(cls).where(cls.id == run_id, cls.owner_id == owner_id)
        if lock:
            query = query.with_for_update().execution_options(populate_existing=True)
        return db.session.scalar(query)

    @classmethod
    def locked_with_calls(cls, query: sa.Select) -> sa.Select:
        """`query` (of one Run, `with_for_update(of=Run)`) that also reads the run's calls, in their
        order, in the same statement, for `read_locked_with_calls`. Build it once, with bind
        parameters: an aliased class's statement costs as much to build as to run."""
        before_lock = sa.orm.aliased(cls)
        seq_seen = sa.select(before_lock.last_seq).where(before_lock.id == cls.id).scalar_subquery()
        return query.add_columns(seq_seen, ToolCall).outerjoin(ToolCall, ToolCall.run_id == cls.id) \
            .order_by(ToolCall.created_at, ToolCall.position)

    @classmethod
    def read_locked_with_calls(cls, statement: sa.Select, params: dict
                               ) -> "tuple[Run, list[ToolCall] | None] | None":
        """Run a `locked_with_calls` statement: (run, calls) or None. PostgreSQL's wait for the lock
        re-reads the run's row but not its calls, so calls come only if the run did not change between
        the statement's snapshot and the lock (every change to a call numbers an event: `last_seq`
        moves); else None, for the caller to read them afresh."""
        rows = db.session.execute(statement, params).all()
        if not rows:
            return None
        run, last_seq_seen = rows[0][0], rows[0][1]
        if run.last_seq != last_seq_seen:
            return run, None
        return run, [row[2] for row in rows if row[2] is not None]

    @classmethod
    def latest_in(cls, session_id: str) -> "Run | None":
        """The chat's newest run: it decides what the composer and the stream show."""
        return db.session.scalar(sa.select(cls).where(cls.session_id == session_id)
                                 .order_by(cls.created_at.desc(), cls.id.desc()).limit(1))

    @classmethod
    def lock(cls, run_id: str) -> int:
        """Lock the run's row before touching its calls or messages; returns its event cursor.
        One lock order (run, then its calls and messages) keeps PostgreSQL free of deadlocks; on
        SQLite BEGIN IMMEDIATE already serialises writers and FOR UPDATE renders as nothing."""
        return db.session.execute(sa.select(cls.last_seq).where(cls.id == run_id).with_for_update()).scalar_one()

    @classmethod
    def hold(cls, run_id: str) -> None:
        """Run.lock where the cursor is not needed: nothing to do on SQLite, whose BEGIN IMMEDIATE
        already holds the whole database for the transaction."""
        if db.session.get_bind().dialect.name != "sqlite":
            cls.lock(run_id)

    @classmethod
    def transition(cls, run_id: str, expected: str, new: str, extra=(), **values) -> bool:
        """Compare-and-set the run's status: True if it was `expected` (and `extra` held) and is now `new`."""
        table = cls.__table__
        result = db.session.execute(sa.update(table).where(table.c.id == run_id, table.c.status == expected, *extra)
                                    .values(status=new, updated_at=utcnow(), **values))
        return result.rowcount == 1


class Message(db.Model):
    """One bubble: what the person typed, or one model turn's text (its tool calls hang off it)."""
    __tablename__ = "messages"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    session_id: so.Mapped[str] = so.mapped_column(sa.ForeignKey("chat_sessions.id", ondelete="CASCADE"), index=True)
    run_id: so.Mapped[str | None] = so.mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    role: so.Mapped[str] = so.mapped_column(sa.String(20))  # user | assistant
    content: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    # streaming -> done; interrupted when the turn broke off (kept for the person, left out of the model's context)
    state: so.Mapped[str] = so.mapped_column(sa.String(20), default="done")
    response_id: so.Mapped[str | None] = so.mapped_column(sa.String(120))  # the model's id for this turn
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow)

    tool_calls: so.Mapped[list["ToolCall"]] = so.relationship(
        back_populates="message", order_by="ToolCall.position", lazy="selectin")


class ToolCall(db.Model):
    """The ledger of tool calls: one row per call the model made, with its decision and outcome."""
    __tablename__ = "tool_calls"
    __table_args__ = (sa.UniqueConstraint("run_id", "call_id"),)

    id: so.Mapped[str] = so.mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("tc"))
    run_id: so.Mapped[str] = so.mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    message_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    position: so.Mapped[int] = so.mapped_column(default=0)  # order within the model turn
    call_id: so.Mapped[str] = so.mapped_column(sa.String(120))  # the model's id for the call
    name: so.Mapped[str] = so.mapped_column(sa.String(120))
    arguments: so.Mapped[dict | None] = so.mapped_column(sa.JSON)  # validated arguments (None if invalid)
    raw_arguments: so.Mapped[str] = so.mapped_column(sa.Text, default="")  # exactly what the model sent
    requires_confirmation: so.Mapped[bool] = so.mapped_column(default=False)
    # What the pause asks of the person (CallKind): approve, fill in fields, or run it themselves.
    kind: so.Mapped[str] = so.mapped_column(sa.String(20), default="confirm", server_default="confirm")
    # The model's arguments, kept when the person edited or completed them (NULL: run as proposed).
    original_arguments: so.Mapped[dict | None] = so.mapped_column(sa.JSON)
    status: so.Mapped[str] = so.mapped_column(sa.String(20), index=True)
    preview: so.Mapped[str | None] = so.mapped_column(sa.Text)
    decided_by: so.Mapped[str | None] = so.mapped_column(sa.String(20))  # user | auto | rule | grant | expired
    # Who decided (the run's owner, or an admin deciding for them); NULL for auto and API-key decisions.
    decider_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("accounts.id", ondelete="SET NULL"))
    decided_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True))
    reason: so.Mapped[str | None] = so.mapped_column(sa.Text)
    # The tool's approval options as they were when the call was made (app.agent.rules), so every card,
    # the inbox and the decide paths enforce the same thing: who may decide ("admin": only admins),
    # until when (then it expires), whether "Always allow" may be offered, and the grant that allowed it.
    approvers: so.Mapped[str | None] = so.mapped_column(sa.String(20))
    expires_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True), index=True)
    allow_always: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    grant_id: so.Mapped[int | None] = so.mapped_column()  # the ApprovalGrant that approved it (decided_by grant)
    result: so.Mapped[str | None] = so.mapped_column(sa.Text)
    error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow, index=True)
    updated_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    message: so.Mapped[Message] = so.relationship(back_populates="tool_calls")
    decider: so.Mapped[Account | None] = so.relationship(lazy="select")  # read only to show who decided

    @classmethod
    def owned_by(cls, owner_id: int | None, run_id: str, call_id: str) -> "ToolCall | None":
        """The call if it belongs to this account's run (any account's, for None: an admin)."""
        query = sa.select(cls).join(Run).where(cls.id == call_id, cls.run_id == run_id)
        return db.session.scalar(query if owner_id is None else query.where(Run.owner_id == owner_id))

    @classmethod
    def owned_with_run(cls, owner_id: int | None, run_id: str, call_id: str, also=None, also_params=None):
        """`owned_by` that also takes the run's row lock (the lock order: run first) and reads the run's
        fields, in one statement: (call, run row with last_seq, session_id, owner_id, agent_id) or None.
        On PostgreSQL, waiting for the lock re-reads the run's row but not the call's: a call read as
        pending may have been decided meanwhile (the decision's compare-and-set is what settles it).
        `also`: one more (uncorrelated) column the caller wants read with them, as the run row's `also`,
        run with `also_params`. Build `also` once: the statement is cached per `also` object."""
        params = {"owned_call_id": call_id, "owned_run_id": run_id, "owned_owner_id": owner_id, **(also_params or {})}
        row = db.session.execute(_owned_with_run_statement(owner_id is None, also), params).first()
        return None if row is None else (row[0], row)

    @classmethod
    def cas(cls, call_id: str, expected: str, new: str, **values) -> "CallChange":
        """The compare-and-set of the call's status from `expected` to `new` (setting `values` too), as
        data that `events.write_with_call` writes with the run's events."""
        return CallChange(call_id, expected, new, values)

    @classmethod
    def transition(cls, call_id: str, expected: str | None, new: str, extra_where=(), **values) -> bool:
        """Compare-and-set the call's status: True if it was `expected` (None: any status; and
        `extra_where` held) and is now `new`."""
        table = cls.__table__
        condition = [table.c.id == call_id, *extra_where]
        if expected is not None:
            condition.append(table.c.status == expected)
        return db.session.execute(sa.update(table).where(*condition).values(status=new, updated_at=utcnow(), **values)
                                  .returning(table.c.id)).first() is not None

    @classmethod
    def first_approved(cls, run_id, calls=None):
        """The id of the run's first approved call (None: none waits), as a scalar subquery. An alias
        (`calls`) when it is part of an UPDATE of tool_calls: it must read the other rows, not the one
        being updated."""
        calls = cls.__table__ if calls is None else calls
        return sa.select(calls.c.id).where(calls.c.run_id == run_id, calls.c.status == CallStatus.APPROVED) \
            .order_by(calls.c.created_at, calls.c.position).limit(1).scalar_subquery()


@functools.cache
def _owned_with_run_statement(any_owner: bool, also) -> sa.Select:
    """`ToolCall.owned_with_run`'s statement, built once per kind (building it cost as much as running
    it). `also` is cached by identity: callers pass one built once."""
    query = sa.select(ToolCall, Run.last_seq, Run.session_id, Run.owner_id, Run.agent_id) \
        .join(Run, ToolCall.run_id == Run.id) \
        .where(ToolCall.id == sa.bindparam("owned_call_id"), ToolCall.run_id == sa.bindparam("owned_run_id")) \
        .with_for_update(of=Run).execution_options(populate_existing=True)
    if also is not None:
        query = query.add_columns(also.label("also"))
    return query if any_owner else query.where(Run.owner_id == sa.bindparam("owned_owner_id"))


@dataclass(frozen=True)
class CallChange:
    """A compare-and-set of one call's status, as data: its Core UPDATE is built once per shape (which
    columns it sets and returns) and run with the values bound, so the hot path builds no statement."""
    call_id: str
    expected: str
    new: str
    values: dict = field(default_factory=dict)
    returned: tuple[str, ...] = ()  # more of the call's columns to return (its id always is)
    next_approved: bool = False     # also return the run's first approved call after this one, as next_call

    def returning(self, *columns: str, next_approved: bool = False) -> "CallChange":
        return replace(self, returned=columns, next_approved=next_approved)

    def returning_row(self, next_approved: bool = False) -> "CallChange":
        """Return all of the call's columns (`events.write_with_call` then gives them to this process's
        streams with the call's event)."""
        return self.returning(*ToolCall.__table__.columns.keys(), next_approved=next_approved)

    @property
    def whole_row(self) -> bool:
        return len(self.returned) == len(ToolCall.__table__.columns)

    def statement(self):
        """The UPDATE … RETURNING, with bound parameters named cas_*."""
        return _call_cas(tuple(sorted(self.values)), self.returned, self.next_approved)

    def params(self, run_id: str) -> dict:
        return {"cas_call_id": self.call_id, "cas_expected": self.expected, "cas_new": self.new,
                "cas_now": utcnow(), "cas_run_id": run_id, **{f"cas_set_{k}": v for k, v in self.values.items()}}


@functools.cache
def _call_cas(columns: tuple[str, ...], returned: tuple[str, ...], next_approved: bool):
    table = ToolCall.__table__
    bound = {name: sa.bindparam(f"cas_set_{name}", type_=table.c[name].type) for name in columns}
    update = sa.update(table).where(table.c.id == sa.bindparam("cas_call_id", type_=table.c.id.type),
                                    table.c.status == sa.bindparam("cas_expected", type_=table.c.status.type)) \
        .values(status=sa.bindparam("cas_new", type_=table.c.status.type),
                updated_at=sa.bindparam("cas_now", type_=table.c.updated_at.type), **bound)
    returning = [table.c.id, *(table.c[name] for name in returned if name != "id")]
    if next_approved:
        run_id = sa.bindparam("cas_run_id", type_=table.c.run_id.type)
        returning.append(ToolCall.first_approved(run_id, table.alias("later")).label("next_call"))
    return update.returning(*returning)


class RunEvent(db.Model):
    """The replayable stream of a run: every text batch, card and state change, numbered per run."""
    __tablename__ = "run_events"
    __table_args__ = (sa.UniqueConstraint("run_id", "seq"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    run_id: so.Mapped[str] = so.mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    seq: so.Mapped[int]
    type: so.Mapped[str] = so.mapped_column(sa.String(40))
    data: so.Mapped[dict] = so.mapped_column(sa.JSON, default=dict)
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow)


class NotificationStatus:
    WAITING = "waiting"        # to be sent at next_attempt_at (again, after a failure)
    DELIVERED = "delivered"
    GAVE_UP = "gave_up"        # APPROVAL_WEBHOOK_ATTEMPTS failed
    SKIPPED = "skipped"        # the call was decided before it could be announced


class ApprovalNotification(db.Model):
    """The webhook delivery of one pending call (app.notify): durable, so a restart neither loses nor
    repeats it; `claimed_until` is the sending process's claim (a compare-and-set takes it)."""
    __tablename__ = "approval_notifications"
    __table_args__ = (sa.Index("ix_approval_notifications_due", "status", "next_attempt_at"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    call_id: so.Mapped[str] = so.mapped_column(sa.ForeignKey("tool_calls.id", ondelete="CASCADE"), unique=True)
    status: so.Mapped[str] = so.mapped_column(sa.String(20), default=NotificationStatus.WAITING)
    attempts: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    next_attempt_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow)
    claimed_until: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True))
    last_error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    delivered_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True))
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow)


class ApprovalGrant(db.Model):
    """"Always allow": a person's standing approval of one agent's tool (app.grants), in one chat or
    all of theirs, optionally only for exact arguments, until `expires_at` (None: until revoked)."""
    __tablename__ = "approval_grants"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    account_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    agent_id: so.Mapped[str] = so.mapped_column(sa.String(80))
    tool_name: so.Mapped[str] = so.mapped_column(sa.String(120))
    session_id: so.Mapped[str | None] = so.mapped_column(
        sa.ForeignKey("chat_sessions.id", ondelete="CASCADE"))  # None: all the person's chats
    arguments: so.Mapped[dict | None] = so.mapped_column(sa.JSON)  # None: any arguments
    expires_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True))
    revoked_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True))
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True), default=utcnow)
    created_from_call_id: so.Mapped[str | None] = so.mapped_column(
        sa.ForeignKey("tool_calls.id", ondelete="SET NULL"))
