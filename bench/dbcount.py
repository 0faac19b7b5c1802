"""Statement counters for the benchmark's counting server (see bench/gunicorn_counting.py).

Every statement the app sends is counted by database (app / workspace) and verb (SELECT, INSERT,
UPDATE, DELETE, BEGIN...), plus commits and rollbacks, and the app database's statements by what
issued them (`kind.<method> <route>` for a request or the stream it returns, `kind.background` for
the executor); each worker writes its totals to <dir>/<pid>.json four times a second, which the
benchmark sums.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path


def install(directory: str, app_url: str) -> None:
    import sqlalchemy as sa

    app_db = Path(sa.make_url(app_url).database or "").name
    counts: Counter = Counter()

    def which(conn) -> str:
        return "app" if Path(conn.engine.url.database or "").name == app_db else "workspace"

    def kind() -> str:
        from flask import has_request_context, request
        if not has_request_context():
            return "background"
        rule = request.url_rule.rule if request.url_rule is not None else "?"
        return f"{request.method} {rule}"

    @sa.event.listens_for(sa.engine.Engine, "before_cursor_execute")
    def _statement(conn, cursor, statement, parameters, context, executemany):
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        counts[f"{which(conn)}.{verb}"] += 1
        if which(conn) == "app" and verb not in ("BEGIN", "SAVEPOINT", "RELEASE"):
            counts[f"kind.{kind()}"] += 1
            if os.environ.get("BENCH_COUNT_SQL"):  # which statements, to see what a change removed
                counts[f"sql.{kind()}: {' '.join(statement.split())[:110]}"] += 1
        if executemany and parameters:
            counts[f"{which(conn)}.{verb}.rows"] += len(parameters)

    @sa.event.listens_for(sa.engine.Engine, "commit")
    def _commit(conn):
        counts[f"{which(conn)}.COMMIT"] += 1

    @sa.event.listens_for(sa.engine.Engine, "rollback")
    def _rollback(conn):
        counts[f"{which(conn)}.ROLLBACK"] += 1

    path = Path(directory) / f"{os.getpid()}.json"

    def dump() -> None:
        while True:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(dict(counts)))
            tmp.replace(path)
            time.sleep(0.25)

    threading.Thread(target=dump, name="bench-dbcount", daemon=True).start()
