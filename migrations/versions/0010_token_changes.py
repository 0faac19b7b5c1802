"""PostgreSQL announces a revoked or deleted personal API token too (NOTIFY sign_ins_changed), so each
process can remember which account a token names (app/accounts.account_for_api_token) and forget it
the moment the token is revoked. Only those changes: recording a token's last use (an UPDATE of
last_used_at, at most once a minute) is not one. SQLite: nothing (its processes read every time).

Revision ID: 0010_token_changes
Revises: 0009_sign_in_changes
Create Date: 2026-12-06 11:10:00

"""
from alembic import op


revision = '0010_token_changes'
down_revision = '0009_sign_in_changes'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    # notify_sign_ins_changed() is migration 0009's.
    op.execute("CREATE TRIGGER api_tokens_sign_ins_changed AFTER UPDATE OF revoked_at, token_hash, account_id "
               "OR DELETE OR TRUNCATE ON api_tokens "
               "FOR EACH STATEMENT EXECUTE PROCEDURE notify_sign_ins_changed()")


def downgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute("DROP TRIGGER api_tokens_sign_ins_changed ON api_tokens")
