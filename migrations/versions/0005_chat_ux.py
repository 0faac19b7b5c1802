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
    with op.batch_alter_table('chat_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('chat_sessions', schema=None) as batch_op:
        batch_op.drop_column('deleted_at')
