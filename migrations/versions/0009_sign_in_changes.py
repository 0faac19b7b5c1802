"""PostgreSQL announces every change to accounts and login sessions (NOTIFY sign_ins_changed), so each
process can remember who a request's credentials name and forget it the moment it changes
(app/sign_ins.py). SQLite: nothing (its processes read every time).

Revision ID: 0009_sign_in_changes
Revises: 0008_rules_grants
Create Date: 2026-12-06 04:20:00

"""
from alembic import op


revision = '0009_sign_in_changes'
down_revision = '0008_rules_grants'
branch_labels = None
depends_on = None

# One notification per statement (PostgreSQL also folds repeats within a transaction); its payload is
# empty: a process forgets everything it remembers, so it need not say what changed. A new login
# session changes nothing remembered (only found sign-ins are); a new account can change which
# account an API user_id names.
TRIGGERS = {
    'accounts': 'INSERT OR UPDATE OR DELETE OR TRUNCATE',
    'login_sessions': 'UPDATE OR DELETE OR TRUNCATE',
}


def upgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute("""
        CREATE FUNCTION notify_sign_ins_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('sign_ins_changed', '');
            RETURN NULL;
        END $$""")
    for table, events in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {table}_sign_ins_changed AFTER {events} ON {table} "
                   "FOR EACH STATEMENT EXECUTE PROCEDURE notify_sign_ins_changed()")


def downgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table in TRIGGERS:
        op.execute(f"DROP TRIGGER {table}_sign_ins_changed ON {table}")
    op.execute("DROP FUNCTION notify_sign_ins_changed()")
