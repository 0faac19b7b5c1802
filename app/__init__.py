"""The app factory: `create_app()` for the CLI, `create_app(cli=False)` for the web server
(gunicorn.conf.py), `create_app({...})` for tests."""
from __future__ import annotations

from app import lean_imports

lean_imports.install()  # before anything imports flask_login

import gc
import logging
import secrets
import sys
from pathlib import Path

import sqlalchemy as sa
from dotenv import load_dotenv
from flask import Flask

from app import config as settings
from app.extensions import PatientQueuePool, csrf, db, htmx, limiter, login_manager

ROOT = Path(__file__).resolve().parent.parent


def create_app(overrides: dict | None = None, *, cli: bool = True) -> Flask:
    """`cli=False` builds a web server's app: without the `flask db` commands, whose Flask-Migrate and
    Alembic would cost every worker ~11 MiB of memory for migrations it never runs."""
    app = Flask(__name__, instance_relative_config=True,
                template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    load_dotenv(ROOT / ".env")
    try:
        app.config.update(settings.load(app.instance_path))
    except settings.ConfigError as exc:
        # One line naming the variable, not a traceback.
        print(f"Configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app.config.update(overrides or {})
    app.jinja_env.trim_blocks = app.jinja_env.lstrip_blocks = True  # lean fragments on the wire
    app.config["SECRET_KEY"] = app.config.get("SECRET_KEY") or _instance_secret(app)
    # PostgreSQL engines check a pooled connection before use (app.extensions); a SQLite file has no
    # server that could have dropped it.
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
    _size_postgres_pools(app.config)
    app.config.setdefault("SEED_WORKSPACE", True)

    if not app.debug and not app.testing:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    db.init_app(app)
    with app.app_context():
        _configure_sqlite(db.engines.values(), busy_ms=int(app.config["SQLITE_BUSY_TIMEOUT"] * 1000))
    if cli:
        from flask_migrate import Migrate

        from app import agent_commands
        from app.cli import users
        from app.worker import worker
        Migrate(app, db, directory=str(ROOT / "migrations"))
        app.cli.add_command(users)
        app.cli.add_command(worker)
        agent_commands.register(app)
    from app.web import inputs, security, signin
    # First: oversized bodies, NUL characters and other sites on an open API are refused before
    # anything else (CSRF, the limiter's account lookup, the views) runs; then signed-out requests are
    # sent to sign in (before CSRF, so they are not told their session expired).
    inputs.register(app)
    security.register_request_checks(app)
    signin.register(app)
    csrf.init_app(app)
    htmx.init_app(app)
    login_manager.init_app(app)
    limiter.init_app(app)
    from app import limits
    limits.init_app(app)

    from app.agent.executor import WorkerHandOff
    from app.agent.llm import Models, model_for
    app.extensions["agents"] = _load_agents(app.config)
    app.extensions["model"] = model_for(app.config)
    app.extensions["models"] = Models(app.config, app.extensions["model"])
    # Web processes execute runs, or (RUN_EXECUTION=workers) hand them to `flask worker` processes.
    app.extensions["run_executor"] = (WorkerHandOff(app) if app.config["RUN_EXECUTION"] == "workers"
                                      else build_run_executor(app))

    from app.api import routes as api
    from app.web import account, admin, approvals, assets, auth, chat, errors
    app.register_blueprint(signin.bp)
    app.register_blueprint(chat.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(approvals.bp)  # /approvals (also JSON for bearer clients), /audit and its exports
    auth.register(app)
    errors.register(app)
    security.register(app)
    assets.register(app)  # content-hashed static files, gzip/brotli
    _register_template_helpers(app)

    with app.app_context():
        if app.config["SEED_WORKSPACE"]:
            from app.workspace import ensure_workspace
            ensure_workspace(db.engines["workspace"])
    from app import sign_ins
    from app.agent import events
    # Wake-ups for streams (in memory, LISTEN/NOTIFY on PostgreSQL, polling), whose listener also tells
    # the remembered sign-ins of changes.
    events.init_app(app, sign_ins.init_app(app))
    if app.config["RUN_SWEEP_SECONDS"] and not cli:
        # Servers only: a `flask` command (say `db upgrade` on a fresh install, before the tables exist)
        # must not sweep runs in the background.
        app.extensions["run_executor"].start()  # recover runs a dead worker left behind
    if not cli and not app.testing:
        from app.memory import IdleTrimmer
        app.extensions["memory_trimmer"] = IdleTrimmer().start()  # a quiet worker returns its peak's memory
        # What start-up made lives as long as the worker: out of the collector's sight, a full collection
        # scans only what requests made (shorter pauses in the middle of a reply).
        gc.collect()
        gc.freeze()
    from app.notify import ApprovalNotifier
    app.extensions["approval_notifier"] = ApprovalNotifier(app)
    if app.config.get("APPROVAL_WEBHOOK_URL") and not cli:
        app.extensions["approval_notifier"].start()  # servers only: announce new pending calls
    return app


def build_run_executor(app: Flask):
    """The executor, wired to the core functions it calls (the one place they are named)."""
    from app.agent import loop, recovery
    from app.agent.executor import RunExecutor, RunSteps
    steps = RunSteps(execute=loop.execute, recover=recovery.recover, renew_leases=recovery.renew_leases)
    return RunExecutor(app, steps, max_workers=app.config["RUN_CONCURRENCY"],
                       sweep_seconds=app.config["RUN_SWEEP_SECONDS"], lease_seconds=app.config["RUN_LEASE_SECONDS"])


def _load_agents(config):
    """The registry of every agent this app serves; a broken agent module stops start-up with one line."""
    from app.agent.registry import AgentLoadError, load_agents
    from app.agents import builtin_agents

    entries = config.get("AGENTS") or []
    if isinstance(entries, str):
        entries = [entry.strip() for entry in entries.split(",") if entry.strip()]
    try:
        registry = load_agents(entries, builtin_agents() if config.get("BUILTIN_AGENTS", True) else [])
    except AgentLoadError as exc:
        print(f"Configuration error: AGENTS: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for agent in registry.all():
        for server in agent.mcp:
            server.default_timeout = config.get("MCP_TIMEOUT") or server.default_timeout
    return registry


def _register_template_helpers(app: Flask) -> None:
    from flask_login import current_user

    from app.markdown import render_markdown, render_streaming_markdown
    from app.workspace import recent_outbox

    app.add_template_filter(render_markdown, "markdown")
    app.add_template_filter(render_streaming_markdown, "streaming_markdown")

    registry = app.extensions["agents"]

    def agent_name(agent_id: str | None) -> str:
        agent = registry.get(agent_id)
        return agent.name if agent else (agent_id or "The agent")

    def agent_initials(agent) -> str:
        """"DM" for the Data Manager; takes an agent or an agent's id."""
        name = agent.name if hasattr(agent, "name") else agent_name(agent)
        words = [w for w in str(name).replace("_", " ").split() if w[:1].isalnum()]
        return "".join(w[0] for w in words[:2]).upper() or "AI"

    app.add_template_global(agent_name, "agent_name")
    app.add_template_global(agent_initials, "agent_initials")
    app.add_template_global(registry.all, "all_agents")

    @app.context_processor
    def outbox():
        def outbox_items():
            if not current_user.is_authenticated:
                return []
            return recent_outbox(db.engines["workspace"], current_user.id)
        return {"outbox_items": outbox_items}


def _size_postgres_pools(config) -> None:
    """Give each PostgreSQL engine (the app's, and the workspace's if it is on PostgreSQL) a pool sized
    for a gevent worker: DATABASE_POOL_SIZE connections kept, up to DATABASE_MAX_OVERFLOW more at a
    peak, and a request that waits DATABASE_POOL_TIMEOUT for one gets a 503 (web/errors.py), while
    background work waits longer, and an idle connection is pinged before use (PatientQueuePool).
    Explicit engine options win. SQLite engines are left as they were."""
    pool = {"poolclass": PatientQueuePool, "pool_size": config["DATABASE_POOL_SIZE"],
            "max_overflow": config["DATABASE_MAX_OVERFLOW"], "pool_timeout": config["DATABASE_POOL_TIMEOUT"],
            # The connection returned last is used next: the rest of a pool a peak opened stay idle,
            # rather than each being idle long enough between uses to be pinged (PING_AFTER_IDLE_SECONDS).
            "pool_use_lifo": True}
    if _is_postgres(config["SQLALCHEMY_DATABASE_URI"]):
        config["SQLALCHEMY_ENGINE_OPTIONS"] = {**pool, **config["SQLALCHEMY_ENGINE_OPTIONS"]}
    binds = {}
    for key, value in config["SQLALCHEMY_BINDS"].items():
        options = dict(value) if isinstance(value, dict) else {"url": value}  # Flask-SQLAlchemy's two forms
        binds[key] = {**pool, **options} if _is_postgres(options["url"]) else value
    config["SQLALCHEMY_BINDS"] = binds


def _is_postgres(url) -> bool:
    return sa.make_url(url).get_backend_name() == "postgresql"


def _instance_secret(app: Flask) -> str:
    """Without SECRET_KEY, keep one in instance/ so sessions survive a restart."""
    path = Path(app.instance_path) / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _configure_sqlite(engines, busy_ms: int) -> None:
    """SQLite with several threads and workers: WAL, a busy timeout (SQLITE_BUSY_TIMEOUT; past it a
    request gets a 503, never a 500), and explicit transactions."""
    def pragmas(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms:d}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    def begin(connection):
        # A deferred transaction that reads and then writes fails with "database is locked" when another
        # writer got in between, whatever the busy timeout; taking the write lock up front waits instead.
        # Readers that never write (`read_only` execution option: streams) use a plain BEGIN on a WAL
        # snapshot and never wait for that lock.
        read_only = connection.get_execution_options().get("read_only")
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    for engine in engines:
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", pragmas)
            sa.event.listen(engine, "begin", begin)


