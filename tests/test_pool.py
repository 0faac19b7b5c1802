"""PostgreSQL's connection pools: sized from the configuration."""
from __future__ import annotations

from app import create_app
from app.extensions import db
from tests.conftest import stop_app


def test_postgres_engines_get_the_configured_pool_and_sqlite_keeps_its_own(app_config, databases):
    app = create_app({**app_config, "DATABASE_POOL_SIZE": 7, "DATABASE_MAX_OVERFLOW": 3, "DATABASE_POOL_TIMEOUT": 4})
    try:
        with app.app_context():
            for engine in (db.engine, db.engines["workspace"]):
                pool = engine.pool
                sized = (pool.size(), pool._max_overflow, pool.timeout())
                if databases.backend == "postgresql":
                    assert sized == (7, 3, 4) and pool._pre_ping
                else:
                    assert sized == (5, 10, 30.0), "SQLite keeps SQLAlchemy's defaults"
    finally:
        stop_app(app)
