"""Two indexes on runs that keep a message's checks flat however many runs an account has: the count
of the account's active runs (owner_id, status) and the chat's newest run (session_id, created_at,
id). With the single-column indexes they replace, SQLite read every run of the account and sorted
every run of the chat on each message, so a long-lived account's messages grew slower with its
history (bench/README.md, "Issue 11 now", per-turn cost).

Revision ID: 0011_run_indexes
Revises: 0010_token_changes
Create Date: 2026-12-07 00:40:00

"""
from alembic import op


revision = '0011_run_indexes'
down_revision = '0010_token_changes'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_runs_owner_id_status', 'runs', ['owner_id', 'status'])
    op.create_index('ix_runs_session_id_created_at', 'runs', ['session_id', 'created_at', 'id'])
    # Their first columns do what these did (and serve the foreign keys).
    op.drop_index('ix_runs_owner_id', table_name='runs')
    op.drop_index('ix_runs_session_id', table_name='runs')


def downgrade():
    op.create_index('ix_runs_session_id', 'runs', ['session_id'])
    op.create_index('ix_runs_owner_id', 'runs', ['owner_id'])
    op.drop_index('ix_runs_session_id_created_at', table_name='runs')
    op.drop_index('ix_runs_owner_id_status', table_name='runs')
