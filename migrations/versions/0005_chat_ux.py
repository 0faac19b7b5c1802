"""Chats deleted in the browser go to the trash first (deleted_at), so "Undo" can bring them back; a
trashed chat is purged for good later (app.chats.trash_chat).

Revision ID: 0005_chat_ux
Revises: 0003_accounts
Create Date: 2026-12-03 10:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0005_chat_ux'
down_revision = '0003_accounts'
branch_labels = None
depends_on = None


def upgrade():
    # Plain ALTER TABLE ... ADD COLUMN (as in 0003): SQLite's batch mode could recreate `chat_sessions`,
    # which messages and runs reference (foreign keys are on).
    op.add_column('chat_sessions', sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    op.drop_column('chat_sessions', 'deleted_at')
