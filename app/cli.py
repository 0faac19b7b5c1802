"""`flask --app app users …`: accounts from the shell (the first admin on a server without a browser,
scripts, tests)."""
from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from app import accounts
from app.accounts import AccountError
from app.models import Role

users = AppGroup("users", help="Create and manage accounts.")


@users.command("create")
@click.argument("email")
@click.option("--admin", is_flag=True, help="Make the account an admin.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (for scripts).")
def create(email, admin, password_stdin):
    """Create an account; prompts for its password (hidden) unless --password-stdin."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    account = _do(lambda: accounts.create_account(email, password, Role.ADMIN if admin else Role.MEMBER))
    click.echo(f"Created {account.role} {account.email}.")


@users.command("list")
def list_():
    """Every account that can sign in."""
    for account in accounts.list_accounts():
        state = "disabled" if account.disabled_at else "active"
        click.echo(f"{account.email}\t{account.role}\t{state}")


@users.command("set-role")
@click.argument("email")
@click.argument("role", type=click.Choice(Role.ALL))
def set_role(email, role):
    """Make an account an admin or a member."""
    account = _do(lambda: accounts.set_role(_account(email).id, role))
    click.echo(f"{account.email} is now {account.role}.")


@users.command("disable")
@click.argument("email")
def disable(email):
    """Sign an account out everywhere and refuse its sign-ins and API tokens (its chats stay)."""
    account = _do(lambda: accounts.set_disabled(_account(email).id, True))
    click.echo(f"{account.email} is disabled.")


@users.command("enable")
@click.argument("email")
def enable(email):
    """Let a disabled account sign in again."""
    account = _do(lambda: accounts.set_disabled(_account(email).id, False))
    click.echo(f"{account.email} is enabled.")


def _account(email):
    return accounts.find_by_email(email) or _fail(f"No account with the email {email}.")


def _do(action):
    try:
        return action()
    except AccountError as exc:
        _fail(str(exc))


def _fail(message):
    raise click.ClickException(message)
