"""Settings from the environment (and a `.env` file), checked once at start-up.

A wrong value stops the app with one line naming the variable (`ConfigError`), never a traceback.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_MODEL = "gpt-5.2"
OPENAI_APIS = ("responses", "chat")
API_AUTH_MODES = ("on", "off")
SIGNUP_MODES = ("invite", "open")


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

    # PostgreSQL connections each engine (app, workspace) of each worker process may open. Under gevent
    # every query yields, so many requests and runs hold or wait for a connection at once; the pool
    # must cover that, and PostgreSQL's max_connections the pools of every worker.
    pool_size = _count(get("DATABASE_POOL_SIZE", "10"), "DATABASE_POOL_SIZE", minimum=1)
    max_overflow = _count(get("DATABASE_MAX_OVERFLOW", "10"), "DATABASE_MAX_OVERFLOW", minimum=0)
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
        "RUN_LEASE_SECONDS": lease,
        "RUN_SWEEP_SECONDS": sweep,
        "SQLITE_BUSY_TIMEOUT": busy,
        "RUN_CONCURRENCY": concurrency,
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
        "OS_SECURITY_KEY": get("OS_SECURITY_KEY"),
        "API_AUTH": api_auth,
        # Rate-limit counters: per process in memory by default; redis://host:6379 shares them between
        # hosts (Flask-Limiter's storage URI).
        "RATELIMIT_STORAGE_URI": get("RATELIMIT_STORAGE_URI", "memory://"),
        # Failed sign-ins per client address and per email; API tokens and invite links created per account.
        "SIGNIN_LIMIT_PER_IP": _rate(get("SIGNIN_LIMIT_PER_IP", "20 per minute; 100 per hour"), "SIGNIN_LIMIT_PER_IP"),
        "SIGNIN_LIMIT_PER_EMAIL": _rate(get("SIGNIN_LIMIT_PER_EMAIL", "5 per minute; 20 per hour"),
                                        "SIGNIN_LIMIT_PER_EMAIL"),
        "CREATION_LIMIT": _rate(get("CREATION_LIMIT", "10 per minute; 50 per day"), "CREATION_LIMIT"),
    }


def _rate(value: str, variable: str) -> str:
    """A Flask-Limiter rate, e.g. "5 per minute; 20 per hour"."""
    from limits import parse_many
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"{variable} must be a rate like '5 per minute; 20 per hour', got {value!r}") from None
    return value


def _positive(value: str, variable: str) -> float:
    try:
        seconds = float(value)
        if seconds <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{variable} must be a positive number of seconds, got {value!r}") from None
    return seconds


def _count(value: str, variable: str, minimum: int) -> int:
    try:
        number = int(value)
        if number < minimum:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{variable} must be a whole number of at least {minimum}, got {value!r}") from None
    return number
