"""Rules, grants and expiry of approvals: each call keeps the approval options it was made with (who
may decide it, until when, whether "Always allow" may be offered, the grant that allowed it), and the
people's standing "Always allow" grants.

Revision ID: 0008_rules_grants
Revises: 0007_call_kinds
Create Date: 2026-12-03 16:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0008_rules_grants'
down_revision = '0007_call_kinds'
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMN (as in 0003/0005): SQLite's batch mode would recreate `tool_calls`.
    op.add_column('tool_calls', sa.Column('approvers', sa.String(length=20), nullable=True))
    op.add_column('tool_calls', sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('tool_calls', sa.Column('allow_always', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column('tool_calls', sa.Column('grant_id', sa.Integer(), nullable=True))
    op.create_index('ix_tool_calls_expires_at', 'tool_calls', ['expires_at'])
    op.create_table(
        'approval_grants',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('account_id', sa.Integer(), sa.ForeignKey('accounts.id', ondelete='CASCADE'), nullable=False),
        sa.Column('agent_id', sa.String(length=80), nullable=False),
        sa.Column('tool_name', sa.String(length=120), nullable=False),
        sa.Column('session_id', sa.String(length=40), sa.ForeignKey('chat_sessions.id', ondelete='CASCADE'),
                  nullable=True),
        sa.Column('arguments', sa.JSON(), nullable=True),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_from_call_id', sa.String(length=40), sa.ForeignKey('tool_calls.id', ondelete='SET NULL'),
                  nullable=True),
    )
    op.create_index('ix_approval_grants_account_id', 'approval_grants', ['account_id'])


def downgrade():
    op.drop_index('ix_approval_grants_account_id', table_name='approval_grants')
    op.drop_table('approval_grants')
    op.drop_index('ix_tool_calls_expires_at', table_name='tool_calls')
    for column in ('grant_id', 'allow_always', 'expires_at', 'approvers'):
        op.drop_column('tool_calls', column)
