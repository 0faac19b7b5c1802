"""The approvals inbox's webhook: one delivery row per pending call (attempts, next attempt, claim), so a
restart neither loses nor repeats a notification; and indexes the audit filters and sorts by.

Revision ID: 0006_approvals
Revises: 0005_chat_ux
Create Date: 2026-12-03 13:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0006_approvals'
down_revision = '0005_chat_ux'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'approval_notifications',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('call_id', sa.String(length=40), sa.ForeignKey('tool_calls.id', ondelete='CASCADE'),
                  nullable=False, unique=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_approval_notifications_due', 'approval_notifications', ['status', 'next_attempt_at'])
    op.create_index('ix_tool_calls_created_at', 'tool_calls', ['created_at'])


def downgrade():
    op.drop_index('ix_tool_calls_created_at', table_name='tool_calls')
    op.drop_index('ix_approval_notifications_due', table_name='approval_notifications')
    op.drop_table('approval_notifications')
