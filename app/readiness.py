"""Whether this server can serve requests: its database answers, and its schema is the one this code
expects (every Alembic migration applied). Read without importing Alembic, which a web worker does
not load (tests/test_worker_footprint.py): the migration files name their revisions, and the database
names the one it is at."""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import sqlalchemy as sa

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


@cache
def expected_heads(directory: Path = MIGRATIONS) -> frozenset[str]:
    """The newest revisions of the migration files: those no other revision builds on."""
    revisions, parents = set(), set()
    for path in directory.glob("*.py"):
        values = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and node.value:
                        values[target.id] = ast.literal_eval(node.value)
        if "revision" in values:
            revisions.add(values["revision"])
            down = values.get("down_revision")
            parents.update(down if isinstance(down, (tuple, list)) else [down] if down else [])
    return frozenset(revisions - parents)


def problem(connection: sa.Connection) -> str | None:
    """None when ready; else what is wrong, for the operator. Database errors propagate (not ready)."""
    inspector = sa.inspect(connection)
    applied = set()
    if inspector.has_table("alembic_version"):
        applied = set(connection.scalars(sa.text("SELECT version_num FROM alembic_version")))
    missing = expected_heads() - applied
    if missing:
        return (f"The database schema is not up to date (at {', '.join(sorted(applied)) or 'nothing'}, "
                f"expected {', '.join(sorted(expected_heads()))}): run `flask --app app db upgrade`.")
    return None
