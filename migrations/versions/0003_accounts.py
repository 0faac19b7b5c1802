"""Sign-in: accounts with email, password and role; login sessions, personal API tokens, invites; who
decided a call.

Existing accounts keep their chats: browser guests (no email, no external_id) stay as they are until the
first admin is created, who then receives their chats (app.accounts.create_first_admin).

Revision ID: 0003_accounts
Revises: 0002_api_users
Create Date: 2026-12-03 10:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0003_accounts'
down_revision = '0002_api_users'
branch_labels = None
depends_on = None


def upgrade():
    # Plain ALTER TABLE ... ADD COLUMN and a unique index: SQLite's batch mode would recreate `accounts`,
    # which the rows of every other table reference (foreign keys are on), and the upgrade would fail on
    # any installation that has chats.
    op.add_column('accounts', sa.Column('email', sa.String(length=254), nullable=True))
    op.add_column('accounts', sa.Column('password_hash', sa.String(length=255), nullable=True))
    op.add_column('accounts', sa.Column('role', sa.String(length=20), server_default='member', nullable=False))
    op.add_column('accounts', sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f('ix_accounts_email'), 'accounts', ['email'], unique=True)

    op.create_table(
        'login_sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('user_agent', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_login_sessions_account_id_accounts'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_login_sessions')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_login_sessions_token_hash')),
    )
    op.create_index(op.f('ix_login_sessions_account_id'), 'login_sessions', ['account_id'])

    op.create_table(
        'api_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=80), nullable=False),
        sa.Column('prefix', sa.String(length=20), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_api_tokens_account_id_accounts'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash')),
    )
    op.create_index(op.f('ix_api_tokens_account_id'), 'api_tokens', ['account_id'])

    op.create_table(
        'invites',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('role', sa.String(length=20), nullable=False),
        sa.Column('note', sa.String(length=200), nullable=True),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('used_by_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['created_by_id'], ['accounts.id'], name=op.f('fk_invites_created_by_id_accounts'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['used_by_id'], ['accounts.id'], name=op.f('fk_invites_used_by_id_accounts'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_invites')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_invites_token_hash')),
    )

    with op.batch_alter_table('tool_calls', schema=None) as batch_op:  # nothing references tool_calls
        batch_op.add_column(sa.Column('decider_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_tool_calls_decider_id_accounts'), 'accounts',
                                    ['decider_id'], ['id'], ondelete='SET NULL')


def downgrade():
    with op.batch_alter_table('tool_calls', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_tool_calls_decider_id_accounts'), type_='foreignkey')
        batch_op.drop_column('decider_id')
    op.drop_table('invites')
    op.drop_index(op.f('ix_api_tokens_account_id'), table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_index(op.f('ix_login_sessions_account_id'), table_name='login_sessions')
    op.drop_table('login_sessions')
    op.drop_index(op.f('ix_accounts_email'), table_name='accounts')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_column('disabled_at')
        batch_op.drop_column('role')
        batch_op.drop_column('password_hash')
        batch_op.drop_column('email')
