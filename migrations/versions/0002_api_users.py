"""API user ids and client-named sessions

accounts.external_id is the `user_id` an API client names an account by; chat_sessions.external_id is
a `session_id` the client chose, unique per owner.

Revision ID: 0002_api_users
Revises: 0001_initial
Create Date: 2026-11-26 13:50:54.034653

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002_api_users'
down_revision = '0001_initial'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('external_id', sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_accounts_external_id'), ['external_id'])

    with op.batch_alter_table('chat_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('external_id', sa.String(length=200), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_chat_sessions_owner_id'), ['owner_id', 'external_id'])



def downgrade():
    with op.batch_alter_table('chat_sessions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_chat_sessions_owner_id'), type_='unique')
        batch_op.drop_column('external_id')

    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_accounts_external_id'), type_='unique')
        batch_op.drop_column('external_id')

