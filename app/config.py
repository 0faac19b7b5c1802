"""Settings from the environment (and a `.env` file), checked once at start-up.

A wrong value stops the app with one line naming the variable (`ConfigError`), never a traceback.
"""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_MODEL = "gpt-5.2"
OPENAI_APIS = ("responses", "chat")
API_AUTH_MODES = ("on", "off")
SIGNUP_MODES = ("invite", "open")
RUN_EXECUTION_MODES = ("web", "workers")
MIN_KEY_CHARS = 32  # OS_SECURITY_KEY: a guessable key is an open API


class ConfigError(Exception):
    """A configuration value is wrong; the message names the variable and says what is expected."""


def database_url(value: str, variable: str) -> str:
    """Normalise a database URL so PostgreSQL always goes through psycopg 3."""
    if value.startswith("postgres://"):  # Heroku-style
        value = "postgresql+psycopg://" + value[len("postgres://"):]
    elif value.startswith("postgresql://"):
        value = "postgresql+psycopg://" + value[len("postgresql://"):]
    try:
        url = make_url(value)
    except ArgumentError:
        raise ConfigError(f"{variable} is not a database URL: {value!r}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"{variable} must be a sqlite:// or postgresql:// URL, got {url.get_backend_name()!r}")
    if url.get_backend_name() == "postgresql" and url.get_driver_name() != "psycopg":
        raise ConfigError(f"{variable} must use psycopg 3 (postgresql+psycopg://), got {url.drivername!r}")
    return value


def load(instance_path: str, environ: dict[str, str] | None = None) -> dict:
    """Build the Flask config mapping from environment variables."""
    env = os.environ if environ is None else environ
    instance = Path(instance_path)

    def get(name: str, default: str | None = None) -> str | None:
        value = env.get(name)
        return value.strip() if value and value.strip() else default

    api = get("OPENAI_API", "responses").lower()
    if api not in OPENAI_APIS:
        raise ConfigError(f"OPENAI_API must be one of {', '.join(OPENAI_APIS)}, got {api!r}")

    base_url = get("OPENAI_BASE_URL")
    if base_url and urlsplit(base_url).scheme not in ("http", "https"):
        raise ConfigError(f"OPENAI_BASE_URL must be an http(s):// URL, got {base_url!r}")

    timeout_seconds = _positive(get("OPENAI_TIMEOUT", "60"), "OPENAI_TIMEOUT")

    lease = _positive(get("RUN_LEASE_SECONDS", "30"), "RUN_LEASE_SECONDS")
    sweep = _positive(get("RUN_SWEEP_SECONDS", "15"), "RUN_SWEEP_SECONDS")
    busy = _positive(get("SQLITE_BUSY_TIMEOUT", "15"), "SQLITE_BUSY_TIMEOUT")
    # Runs each process executes at once. A streaming run occupies one for its whole reply; under
    # gevent they are greenlets, so hundreds cost little.
    concurrency = int(_positive(get("RUN_CONCURRENCY", "200"), "RUN_CONCURRENCY"))
    # Who executes runs: the web processes (one command runs everything), or only `flask worker`
    # processes, so web and run capacity scale apart (hosts sharing one PostgreSQL).
    execution = get("RUN_EXECUTION", "web").lower()
    if execution not in RUN_EXECUTION_MODES:
        raise ConfigError(f"RUN_EXECUTION must be web or workers, got {execution!r}")

    # PostgreSQL connections each engine (app, workspace) of each worker process may open. Under gevent
    # every query yields, so many requests and runs hold or wait for a connection at once; the pool
    # must cover that, and PostgreSQL's max_connections the pools of every worker. All of them are kept
    # (no overflow by default): a worker near a full core holds ~20 at once, and overflow connections,
    # closed as they are returned, were opened again at the next peak (500 backends in 40 s at 96
    # streams, each a fork and cold caches on the server; bench/README.md, twenty-second round).
    pool_size = _count(get("DATABASE_POOL_SIZE", "20"), "DATABASE_POOL_SIZE", minimum=1)
    max_overflow = _count(get("DATABASE_MAX_OVERFLOW", "0"), "DATABASE_MAX_OVERFLOW", minimum=0)
    # Whole seconds: Flask-SQLAlchemy builds engines with engine_from_config, which truncates to an int.
    pool_timeout = _count(get("DATABASE_POOL_TIMEOUT", "10"), "DATABASE_POOL_TIMEOUT", minimum=1)

    builtin_agents = get("BUILTIN_AGENTS", "on").lower()
    if builtin_agents not in ("on", "off"):
        raise ConfigError(f"BUILTIN_AGENTS must be on or off, got {builtin_agents!r}")
    agents = [entry.strip() for entry in (get("AGENTS") or "").split(",") if entry.strip()]
    if builtin_agents == "off" and not agents:
        raise ConfigError("BUILTIN_AGENTS is off but AGENTS names no agent module: there would be no agent")
    mcp_timeout = _positive(get("MCP_TIMEOUT", "60"), "MCP_TIMEOUT")

    api_auth = get("API_AUTH", "on").lower()
    if api_auth not in API_AUTH_MODES:
        raise ConfigError(f"API_AUTH must be on or off, got {api_auth!r}")
    os_key = get("OS_SECURITY_KEY")
    if os_key is not None and len(os_key) < MIN_KEY_CHARS:
        raise ConfigError(f"OS_SECURITY_KEY must be at least {MIN_KEY_CHARS} characters long (got {len(os_key)}); "
                          "generate one with: python3 -c 'import secrets; print(secrets.token_hex(32))'")
    if api_auth == "off":
        # An open API on a network is anyone's agent (and model key): only on this machine.
        listen = get("BIND") or get("HOST", "127.0.0.1")
        if not all(_is_loopback(address) for address in listen.split(",")):
            raise ConfigError(f"API_AUTH=off is only allowed when the server listens on loopback only "
                              f"(HOST=127.0.0.1), but it listens on {listen!r}; set OS_SECURITY_KEY instead")

    # Limits per account (browser and API alike; see app/limits.py and the README's "Limits").
    messages_limit = _rate(get("RATELIMIT_MESSAGES", "20 per minute"), "RATELIMIT_MESSAGES")
    commands_limit = _rate(get("RATELIMIT_COMMANDS", "120 per minute"), "RATELIMIT_COMMANDS")
    max_active_runs = _count(get("MAX_ACTIVE_RUNS", "3"), "MAX_ACTIVE_RUNS", minimum=1)
    max_streams = _count(get("MAX_STREAMS_PER_ACCOUNT", "30"), "MAX_STREAMS_PER_ACCOUNT", minimum=1)
    max_body = _count(get("MAX_CONTENT_LENGTH", str(1024 * 1024)), "MAX_CONTENT_LENGTH", minimum=16 * 1024)
    proxies = _count(get("PROXY_FIX", "0"), "PROXY_FIX", minimum=0)

    webhook = get("APPROVAL_WEBHOOK_URL")
    if webhook and (urlsplit(webhook).scheme not in ("http", "https") or not urlsplit(webhook).netloc):
        raise ConfigError(f"APPROVAL_WEBHOOK_URL must be an http(s):// URL, got {webhook!r}")
    public_url = get("PUBLIC_URL")
    if public_url and (urlsplit(public_url).scheme not in ("http", "https") or not urlsplit(public_url).netloc):
        raise ConfigError(f"PUBLIC_URL must be the http(s):// address people open the app at, got {public_url!r}")

    signup = get("SIGNUP", "invite").lower()
    if signup not in SIGNUP_MODES:
        raise ConfigError(f"SIGNUP must be invite or open, got {signup!r}")

    return {
        "SECRET_KEY": get("SECRET_KEY"),
        # Who may create an account once the first admin exists: people with an admin's invite link, or
        # anyone who reaches the server.
        "SIGNUP": signup,
        "INVITE_HOURS": _count(get("INVITE_HOURS", "168"), "INVITE_HOURS", minimum=1),
        # How long a sign-in lasts on one browser (with or without "remember me").
        "LOGIN_DAYS": _count(get("LOGIN_DAYS", "30"), "LOGIN_DAYS", minimum=1),
        # Bodies larger than this are refused with 413 before they are read (not spooled to disk).
        "MAX_CONTENT_LENGTH": max_body,
        "RATELIMIT_MESSAGES": messages_limit,
        "RATELIMIT_COMMANDS": commands_limit,
        "MAX_ACTIVE_RUNS": max_active_runs,
        "MAX_STREAMS_PER_ACCOUNT": max_streams,
        # Reverse proxies in front of the app whose X-Forwarded-For/-Proto/-Host to trust (Werkzeug ProxyFix).
        "PROXY_FIX": proxies,
        # A card left open for hours can still be decided: the CSRF token lives as long as the session.
        "WTF_CSRF_TIME_LIMIT": None,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_HTTPONLY": True,
        "RUN_LEASE_SECONDS": lease,
        "RUN_SWEEP_SECONDS": sweep,
        "SQLITE_BUSY_TIMEOUT": busy,
        "RUN_CONCURRENCY": concurrency,
        "RUN_EXECUTION": execution,
        "DATABASE_POOL_SIZE": pool_size,
        "DATABASE_MAX_OVERFLOW": max_overflow,
        "DATABASE_POOL_TIMEOUT": pool_timeout,
        "SQLALCHEMY_DATABASE_URI": database_url(
            get("DATABASE_URL", f"sqlite:///{instance / 'app.db'}"), "DATABASE_URL"),
        "SQLALCHEMY_BINDS": {"workspace": database_url(
            get("WORKSPACE_DATABASE_URL", f"sqlite:///{instance / 'workspace.db'}"), "WORKSPACE_DATABASE_URL")},
        "OPENAI_API_KEY": get("OPENAI_API_KEY"),
        "OPENAI_BASE_URL": base_url,
        "OPENAI_MODEL": get("OPENAI_MODEL", DEFAULT_MODEL),
        "OPENAI_API": api,
        "OPENAI_TIMEOUT": timeout_seconds,
        # The REST API: a bearer key that acts for any user_id (the reference's variable name), or
        # API_AUTH=off to open it for local experiments.
        # Agents: the built-in Data Manager unless BUILTIN_AGENTS=off, plus every Agent defined at
        # module level in AGENTS (comma-separated: path/to/file.py or package.module).
        "AGENTS": agents,
        "BUILTIN_AGENTS": builtin_agents == "on",
        "MCP_TIMEOUT": mcp_timeout,  # seconds one MCP tool call may take
        "OS_SECURITY_KEY": os_key,
        "API_AUTH": api_auth,
        # Seconds a run request without `stream` waits for the run to pause or end (then 202: still running).
        "API_WAIT_SECONDS": _positive(get("API_WAIT_SECONDS", "120"), "API_WAIT_SECONDS"),
        # Rate-limit counters: per process in memory by default; redis://host:6379 shares them between
        # hosts (Flask-Limiter's storage URI).
        "RATELIMIT_STORAGE_URI": _rate_storage(get("RATELIMIT_STORAGE_URI", "memory://")),
        # A shared store that is down (Redis restarting) lets requests through and logs it, rather
        # than answering every limited request with a 500.
        "RATELIMIT_SWALLOW_ERRORS": True,
        # Failed sign-ins per client address and per email; API tokens and invite links created per account.
        "SIGNIN_LIMIT_PER_IP": _rate(get("SIGNIN_LIMIT_PER_IP", "20 per minute; 100 per hour"), "SIGNIN_LIMIT_PER_IP"),
        "SIGNIN_LIMIT_PER_EMAIL": _rate(get("SIGNIN_LIMIT_PER_EMAIL", "5 per minute; 20 per hour"),
                                        "SIGNIN_LIMIT_PER_EMAIL"),
        "CREATION_LIMIT": _rate(get("CREATION_LIMIT", "10 per minute; 50 per day"), "CREATION_LIMIT"),
        # Each new pending call is POSTed here as JSON (Slack-compatible `text`), retried with backoff:
        # APPROVAL_WEBHOOK_ATTEMPTS tries, the n-th retry APPROVAL_WEBHOOK_BACKOFF * 2**(n-1) seconds later.
        "APPROVAL_WEBHOOK_URL": webhook,
        "APPROVAL_WEBHOOK_ATTEMPTS": _count(get("APPROVAL_WEBHOOK_ATTEMPTS", "8"), "APPROVAL_WEBHOOK_ATTEMPTS", minimum=1),
        "APPROVAL_WEBHOOK_BACKOFF": _positive(get("APPROVAL_WEBHOOK_BACKOFF", "10"), "APPROVAL_WEBHOOK_BACKOFF"),
        "APPROVAL_WEBHOOK_SCAN_SECONDS": _positive(get("APPROVAL_WEBHOOK_SCAN_SECONDS", "5"),
                                                   "APPROVAL_WEBHOOK_SCAN_SECONDS"),
        # Seconds a call waits for its approval before it expires (a tool may set its own, approval_timeout=).
        "APPROVAL_TIMEOUT": _positive(get("APPROVAL_TIMEOUT", "86400"), "APPROVAL_TIMEOUT"),
        # The address people open the app at, for links that leave it (the webhook's link to a card).
        "PUBLIC_URL": public_url.rstrip("/") if public_url else None,
    }


def _is_loopback(address: str) -> bool:
    """HOST or one BIND address ("127.0.0.1:8000", "[::1]:8000", "localhost", "unix:/run/app.sock")."""
    address = address.strip()
    if address.startswith("unix:"):
        return True  # a socket file: only this machine (and its proxy) can connect
    host = address
    if address.startswith("["):
        host = address[1:address.find("]")]
    elif address.count(":") == 1:
        host = address.split(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive(value: str, variable: str) -> float:
    try:
        seconds = float(value)
        if seconds <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{variable} must be a positive number of seconds, got {value!r}") from None
    return seconds


def _rate_storage(uri: str) -> str:
    """memory:// (per process), or a shared store whose client library is installed (redis://… needs
    `pip install redis`); checked here so a wrong one is one line, not a traceback in every worker."""
    if uri.startswith("memory://"):
        return uri
    from limits.errors import ConfigurationError
    from limits.storage import storage_from_string
    try:
        storage_from_string(uri)  # builds the client; connects on first use
    except (ConfigurationError, ValueError) as exc:
        raise ConfigError(f"RATELIMIT_STORAGE_URI cannot be used ({uri!r}): {exc}") from None
    return uri


def _rate(value: str, variable: str) -> str:
    """A Flask-Limiter rate such as "20 per minute" or "100/hour"."""
    from limits import parse_many
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"{variable} must be a rate such as '20 per minute', got {value!r}") from None
    return value


def _count(value: str, variable: str, minimum: int) -> int:
    try:
        number = int(value)
        if number < minimum:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{variable} must be a whole number of at least {minimum}, got {value!r}") from None
    return number
