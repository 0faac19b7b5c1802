"""`/health` is liveness (the process answers); `/ready` is readiness: 503 while the database is
unreachable or migrations are pending, and a web worker still never imports Alembic for it."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade

from app import create_app
from app.extensions import db
from tests.conftest import stop_app


def test_ready_when_migrated(app):
    client = app.test_client()
    assert client.get("/ready").get_json() == {"status": "ready"}
    assert client.get("/health").status_code == 200


def test_not_ready_while_migrations_are_pending(app):
    with app.app_context():
        downgrade(revision="0001_initial")
    response = app.test_client().get("/ready")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert "flask --app app db upgrade" in response.get_json()["detail"]
    assert app.test_client().get("/health").status_code == 200, "still alive"


def test_not_ready_on_an_empty_database(app_config, tmp_path):
    fresh = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'empty.db'}"})
    try:
        response = fresh.test_client().get("/ready")
        assert response.status_code == 503 and "not up to date (at nothing" in response.get_json()["detail"]
    finally:
        stop_app(fresh)


def test_not_ready_while_the_database_is_unreachable(app, monkeypatch):
    def refuse(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    with app.app_context():
        monkeypatch.setattr(db.engine, "connect", refuse)
        response = app.test_client().get("/ready")
    assert response.status_code == 503 and response.get_json() == {"detail": "The database is not available."}
    assert app.test_client().get("/health").status_code == 200


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
def test_a_worker_answers_ready_without_importing_alembic(databases, tmp_path):
    import subprocess
    import sys

    from tests.test_worker_footprint import sqlite_env
    from tests.live import ROOT
    env = sqlite_env(tmp_path)
    subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=120)
    probe = ("from app import create_app; import sys; app = create_app(cli=False); "
             "r = app.test_client().get('/ready'); print(r.status_code, 'alembic' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["200", "False"], result.stderr[-2000:]
