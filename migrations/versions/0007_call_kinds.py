"""Every kind of pause a tool call can be: what kind it is (confirm, input, external) and the arguments
the model proposed when the person edited or completed them (shown original -> edited, and told to the model).

Revision ID: 0007_call_kinds
Revises: 0006_approvals
Create Date: 2026-12-03 16:15:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0007_call_kinds'
down_revision = '0006_approvals'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('tool_calls') as batch:
        batch.add_column(sa.Column('kind', sa.String(length=20), nullable=False, server_default='confirm'))
        batch.add_column(sa.Column('original_arguments', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('tool_calls') as batch:
        batch.drop_column('original_arguments')
        batch.drop_column('kind')
