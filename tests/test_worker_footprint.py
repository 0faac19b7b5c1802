"""What a web worker loads: the app as gunicorn.conf.py builds it leaves out what only the `flask db`
commands need (Flask-Migrate, Alembic), Flask-Login's test client and, on SQLite, the PostgreSQL
driver; `flask db upgrade` (the Procfile's release step) still works, and so does the test client."""
from __future__ import annotations

import os
import subprocess
import sys

import sqlalchemy as sa

from tests.live import ROOT

NOT_IN_A_WORKER = ("flask_migrate", "alembic", "psycopg", "sqlalchemy.dialects.postgresql",
                   "mcp",  # the mcp SDK runs in helper processes only
                   "flask.testing", "pdb")  # Flask-Login's test client (app.lean_imports)

# Loads the app exactly as a gunicorn worker does: gevent first, then gunicorn.conf.py's `wsgi_app`.
LOAD_LIKE_A_WORKER = """
from gevent import monkey; monkey.patch_all()
import runpy, sys
from gunicorn.util import import_app
import_app(runpy.run_path("gunicorn.conf.py")["wsgi_app"])
print(" ".join(name for name in sys.argv[1:] if name in sys.modules))
"""


def sqlite_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DATABASE_", "WORKSPACE_"))}
    return {**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            "WORKSPACE_DATABASE_URL": f"sqlite:///{tmp_path / 'workspace.db'}", "SECRET_KEY": "test"}


def test_flask_db_upgrade_migrates_and_a_sqlite_worker_loads_no_migration_or_postgres_code(tmp_path):
    env = sqlite_env(tmp_path)
    migrated = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    engine = sa.create_engine(env["DATABASE_URL"])
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
        assert conn.scalar(sa.text("SELECT count(*) FROM runs")) == 0
    engine.dispose()

    worker = subprocess.run([sys.executable, "-c", LOAD_LIKE_A_WORKER, *NOT_IN_A_WORKER], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout.split() == [], f"a web worker imported {worker.stdout.strip()}"


def test_flask_logins_test_client_still_works_when_first_used(tmp_path):
    code = ("import sys\nfrom app import create_app\nimport flask_login\n"
            "before = 'flask.testing' in sys.modules\n"
            "app = create_app(cli=False)\napp.test_client_class = flask_login.FlaskLoginClient\n"
            "client = app.test_client()\n"
            "from flask.testing import FlaskClient\n"
            "print(before, isinstance(client, FlaskClient), type(client).__name__, client.get('/health').status_code,"
            " flask_login.FlaskLoginClient.__module__)\n"
            "app.extensions['run_executor'].shutdown()")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=sqlite_env(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "FlaskLoginClient", "200", "flask_login.test_client"]
