"""People and their credentials: accounts, passwords, signed-in browsers, personal API tokens, invites.

Knows nothing of requests or HTML, so the sign-in views, the `flask users` commands and the tests all
drive the same functions. Secrets (login-session tokens, API tokens, invite links) are random, shown
once, and stored only as their SHA-256: a copy of the database signs nobody in.
"""
from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db, end_reads, reads_only
from app.models import Account, ApiToken, ChatSession, Invite, LoginSession, Role, Run, utcnow
from app.native_threads import run_in_native_thread
from app.sign_ins import forget_sign_ins_at_commit, sign_ins

MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # scrypt of a megabyte-long "password" would be a cheap way to burn our CPU
MAX_EMAIL = 254
MAX_TOKEN_NAME = 80
TOKEN_PREFIX = "act_"  # recognisable in logs and by secret scanners
TOKEN_USE_RESOLUTION = timedelta(minutes=1)  # last use is recorded at most this often (it is a write)


class AccountError(Exception):
    """A request about accounts that cannot be done; the message says why, for the person."""

    def __init__(self, message: str, kind: str = "invalid"):
        super().__init__(message)
        self.kind = kind  # invalid | conflict | not_found | forbidden


def hash_password(password: str) -> str:
    return run_in_native_thread(generate_password_hash, password)


def password_matches(password_hash: str, password: str) -> bool:
    return run_in_native_thread(check_password_hash, password_hash, password)


@functools.cache
def _dummy_hash() -> str:
    """Checked against when there is no account (or no password), so that timing does not tell which
    emails exist. Made when first needed: at import, every process (each worker, each `flask`
    command, each test subprocess) paid a hash's ~130 ms of CPU to start."""
    return hash_password("not a password")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def normalise_email(email: str | None) -> str:
    email = (email or "").strip().lower()
    local, at, domain = email.partition("@")
    if not (local and at and "." in domain) or len(email) > MAX_EMAIL or any(c.isspace() for c in email):
        raise AccountError("Enter a valid email address.")
    return email


def check_password(password: str | None) -> str:
    password = password or ""
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"The password must have at least {MIN_PASSWORD} characters.")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"The password must have at most {MAX_PASSWORD} characters.")
    return password


# --- Accounts -----------------------------------------------------------------------------------------

def setup_needed() -> bool:
    """True while nobody can sign in: the first-run setup page creates the first admin then."""
    return db.session.scalar(sa.select(Account.id).where(Account.email.is_not(None)).limit(1)) is None


def find_by_email(email: str) -> Account | None:
    try:
        email = normalise_email(email)
    except AccountError:
        return None
    return db.session.scalar(sa.select(Account).where(Account.email == email))


def create_account(email: str, password: str, role: str = Role.MEMBER, name: str | None = None) -> Account:
    email, password = normalise_email(email), check_password(password)
    if role not in Role.ALL:
        raise AccountError(f"The role must be one of {', '.join(Role.ALL)}.")
    end_reads()  # the page's checks read: nothing held across the slow hash
    account = Account(email=email, password_hash=hash_password(password), role=role,
                      name=(name or "").strip()[:120] or None)
    db.session.add(account)
    try:
        db.session.commit()
    except sa.exc.IntegrityError:
        db.session.rollback()
        raise AccountError("An account with this email already exists.", "conflict") from None
    return account


def create_first_admin(email: str, password: str) -> Account:
    """The setup page's one action: only while nobody can sign in; the admin receives the chats of the
    guest accounts an installation from before sign-in had (one browser each)."""
    email, password = normalise_email(email), check_password(password)
    end_reads()  # the page's check read: nothing held across the slow hash
    password_hash = hash_password(password)
    if db.session.get_bind().dialect.name == "postgresql":
        # Two setup forms sent at once must not both create an admin (SQLite's BEGIN IMMEDIATE already
        # serialises writers).
        db.session.execute(sa.text("SELECT pg_advisory_xact_lock(4200001)"))
    if not setup_needed():
        db.session.rollback()
        raise AccountError("The first account already exists. Sign in instead.", "conflict")
    admin = Account(email=email, password_hash=password_hash, role=Role.ADMIN)
    db.session.add(admin)
    db.session.flush()
    guests = sa.select(Account.id).where(Account.email.is_(None), Account.external_id.is_(None),
                                         Account.id != admin.id)
    db.session.execute(sa.update(ChatSession).where(ChatSession.owner_id.in_(guests)).values(owner_id=admin.id))
    db.session.execute(sa.update(Run).where(Run.owner_id.in_(guests)).values(owner_id=admin.id))
    db.session.commit()
    return admin


def verify_password(email: str, password: str) -> Account | None:
    """The account these credentials sign in, or None (unknown email, wrong password, disabled)."""
    account = find_by_email(email)
    end_reads()  # nothing held across the slow hash: a pooled connection, on SQLite the write lock
    if account is None or not account.password_hash:
        password_matches(_dummy_hash(), password or "")
        return None
    if not password_matches(account.password_hash, (password or "")[:MAX_PASSWORD]):
        return None
    return None if account.disabled_at else account


def change_password(account_id: int, current: str, new: str) -> None:
    account = db.session.get(Account, account_id)
    end_reads()  # nothing held across the slow hashes
    if account is None or not password_matches(account.password_hash or _dummy_hash(), current or ""):
        raise AccountError("The current password is not right.")
    account.password_hash = hash_password(check_password(new))
    end_all_login_sessions(account_id, commit=False)
    db.session.commit()


def list_accounts() -> list[Account]:
    return list(db.session.scalars(sa.select(Account).where(Account.email.is_not(None)).order_by(Account.id)))


def set_role(account_id: int, role: str) -> Account:
    if role not in Role.ALL:
        raise AccountError(f"The role must be one of {', '.join(Role.ALL)}.")
    account = db.session.get(Account, account_id) or _missing()
    if account.role == Role.ADMIN and role != Role.ADMIN and _other_active_admins(account.id) == 0:
        raise AccountError("This is the only admin left; make someone else admin first.", "conflict")
    account.role = role
    db.session.commit()
    return account


def set_disabled(account_id: int, disabled: bool) -> Account:
    """A disabled account's browsers and tokens stop working at once (every lookup checks the flag, and
    its login sessions are deleted); its chats stay."""
    account = db.session.get(Account, account_id) or _missing()
    if disabled and account.role == Role.ADMIN and _other_active_admins(account.id) == 0:
        raise AccountError("This is the only admin left; make someone else admin first.", "conflict")
    account.disabled_at = utcnow() if disabled else None
    if disabled:
        end_all_login_sessions(account.id, commit=False)
    db.session.commit()
    return account


def _other_active_admins(account_id: int) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(Account).where(
        Account.role == Role.ADMIN, Account.disabled_at.is_(None), Account.id != account_id))


def _missing():
    raise AccountError("No such account.", "not_found")


# --- Signed-in browsers ---------------------------------------------------------------------------------

def start_login_session(account: Account, lifetime: timedelta, user_agent: str | None = None) -> Account:
    """A new signed-in browser for this account; the returned account carries its token (`login_token`)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    # Expired sessions of this account go as a new one starts: the table does not grow without bound.
    db.session.execute(sa.delete(LoginSession).where(LoginSession.account_id == account.id,
                                                     LoginSession.expires_at < now))
    login = LoginSession(token_hash=digest(token), account_id=account.id,
                         user_agent=(user_agent or "")[:200] or None, created_at=now, expires_at=now + lifetime)
    db.session.add(login)
    db.session.commit()
    account.login_token = token
    return account


def signed_in_account(token: str) -> Account | None:
    """The enabled account whose live login session this cookie token names, or None."""
    if not token or len(token) > 100:
        return None
    key = ("browser", digest(token))
    remembered = sign_ins()
    values = remembered.get(key)
    if values is None:
        generation = remembered.generation()
        try:
            row = _signed_in_row(key[1])
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # The database dropped the connection (it restarted): the pool has let go of all it held.
            row = _signed_in_row(key[1])
        if row is None:
            return None
        values = dict(row._mapping)
        remembered.put(key, generation, values, expires_at=_aware(values.pop("session_expires_at")))
    account = detached_account(values)
    account.login_token = token
    return account


def detached_account(values: dict) -> Account:
    """The request's account from its row's values: detached, so no commit expires it (no reload on the
    next access). Changes to an account load it anew by id."""
    account = Account(**values)
    sa.orm.make_transient_to_detached(account)
    return account


def _signed_in_row(token_hash: str):
    # One Core statement on a connection of its own that only reads (on SQLite: no write lock), so the
    # request's own transaction begins when its view first needs the database.
    with db.engine.connect().execution_options(**reads_only(db.engine)) as conn:
        return conn.execute(_SIGNED_IN, {"token_hash": token_hash, "now": utcnow()}).one_or_none()


_SIGNED_IN = sa.select(*Account.__table__.c, LoginSession.expires_at.label("session_expires_at")) \
    .join(LoginSession, LoginSession.account_id == Account.id).where(
        LoginSession.token_hash == sa.bindparam("token_hash"), LoginSession.expires_at > sa.bindparam("now"),
        Account.disabled_at.is_(None))


def end_login_session(token: str) -> None:
    db.session.execute(sa.delete(LoginSession).where(LoginSession.token_hash == digest(token)))
    db.session.commit()


def end_all_login_sessions(account_id: int, commit: bool = True) -> None:
    db.session.execute(sa.delete(LoginSession).where(LoginSession.account_id == account_id))
    if commit:
        db.session.commit()


# --- Personal API tokens ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str  # shown once, never stored


def create_api_token(account_id: int, name: str) -> NewToken:
    name = " ".join((name or "").split())
    if not name:
        raise AccountError("Give the token a name, e.g. the script that will use it.")
    if len(name) > MAX_TOKEN_NAME:
        raise AccountError(f"The name must have at most {MAX_TOKEN_NAME} characters.")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(account_id=account_id, name=name, prefix=secret[:12], token_hash=digest(secret))
    db.session.add(token)
    db.session.commit()
    return NewToken(token, secret)


def list_api_tokens(account_id: int) -> list[ApiToken]:
    return list(db.session.scalars(sa.select(ApiToken).where(ApiToken.account_id == account_id,
                                                             ApiToken.revoked_at.is_(None))
                                   .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())))


def revoke_api_token(account_id: int, token_id: int) -> None:
    revoked = db.session.execute(sa.update(ApiToken).where(
        ApiToken.id == token_id, ApiToken.account_id == account_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())).rowcount
    forget_sign_ins_at_commit()  # other processes hear of it from the table's trigger (migration 0010)
    db.session.commit()
    if not revoked:
        raise AccountError("No such token.", "not_found")


def account_for_api_token(secret: str) -> Account | None:
    """The enabled account a live token belongs to (detached, as `signed_in_account`'s); records the
    token's last use (at most once a minute). Remembered like a sign-in (`app.sign_ins`): revoking the
    token or disabling its account is announced to every process."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 100:
        return None
    key = ("token", digest(secret))
    remembered = sign_ins()
    values = remembered.get(key)
    if values is None:
        # Not inside a transaction begun earlier: its snapshot might predate what `generation` has seen.
        generation = None if db.session().in_transaction() else remembered.generation()
        row = db.session.execute(_TOKEN_ACCOUNT, {"token_hash": key[1]}).first()
        if row is None:
            return None
        values = dict(row._mapping)
        remembered.put(key, generation, values)
    now = utcnow()
    if values["token_last_used_at"] is None or _aware(values["token_last_used_at"]) < now - TOKEN_USE_RESOLUTION:
        db.session.execute(sa.update(ApiToken).where(ApiToken.id == values["token_id"]).values(last_used_at=now))
        db.session.commit()
        values["token_last_used_at"] = now  # the remembered entry too: one write a minute, not one a request
    return detached_account({name: value for name, value in values.items() if not name.startswith("token_")})


_TOKEN_ACCOUNT = sa.select(ApiToken.id.label("token_id"), ApiToken.last_used_at.label("token_last_used_at"),
                           *Account.__table__.c) \
    .join(Account, Account.id == ApiToken.account_id) \
    .where(ApiToken.token_hash == sa.bindparam("token_hash"), ApiToken.revoked_at.is_(None),
           Account.disabled_at.is_(None))


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)


# --- Invites --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NewInvite:
    invite: Invite
    secret: str  # goes into the link, shown once


def create_invite(created_by_id: int, lifetime: timedelta, role: str = Role.MEMBER, note: str = "") -> NewInvite:
    if role not in Role.ALL:
        raise AccountError(f"The role must be one of {', '.join(Role.ALL)}.")
    secret = secrets.token_urlsafe(24)
    invite = Invite(token_hash=digest(secret), role=role, note=" ".join((note or "").split())[:200] or None,
                    created_by_id=created_by_id, expires_at=utcnow() + lifetime)
    db.session.add(invite)
    db.session.commit()
    return NewInvite(invite, secret)


def open_invite(secret: str) -> Invite | None:
    """The unused, unexpired invite this link carries, or None."""
    if not secret or len(secret) > 100:
        return None
    return db.session.scalar(sa.select(Invite).where(Invite.token_hash == digest(secret),
                                                     Invite.used_at.is_(None), Invite.expires_at > utcnow()))


def list_open_invites() -> list[Invite]:
    return list(db.session.scalars(sa.select(Invite).where(Invite.used_at.is_(None), Invite.expires_at > utcnow())
                                   .order_by(Invite.created_at.desc())))


def accept_invite(secret: str, email: str, password: str) -> Account:
    """Create the account the invite is for; the link works once (a compare-and-set on `used_at`)."""
    email, password = normalise_email(email), check_password(password)
    invite = open_invite(secret)
    if invite is None:
        raise AccountError("This invite link has expired or was already used. Ask for a new one.", "not_found")
    role = invite.role
    db.session.rollback()  # no transaction held across the slow hash
    password_hash = hash_password(password)
    account = Account(email=email, password_hash=password_hash, role=role)
    db.session.add(account)
    try:
        db.session.flush()
    except sa.exc.IntegrityError:
        db.session.rollback()
        raise AccountError("An account with this email already exists. Sign in instead.", "conflict") from None
    used = db.session.execute(sa.update(Invite).where(
        Invite.token_hash == digest(secret), Invite.used_at.is_(None), Invite.expires_at > utcnow())
        .values(used_at=utcnow(), used_by_id=account.id)).rowcount
    if not used:
        db.session.rollback()
        raise AccountError("This invite link has expired or was already used. Ask for a new one.", "not_found")
    db.session.commit()
    return account


def revoke_invite(invite_id: int) -> None:
    db.session.execute(sa.delete(Invite).where(Invite.id == invite_id, Invite.used_at.is_(None)))
    db.session.commit()
