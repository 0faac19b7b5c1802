"""Operator commands: `flask --app app agents list`, `flask --app app runs list [--status paused]`,
`flask --app app runs cancel RUN_ID`. Thin: they read the registry and call the core."""
from __future__ import annotations

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import AppGroup

from app.extensions import db
from app.models import Run, RunStatus

agents_cli = AppGroup("agents", help="The agents this app serves.")
runs_cli = AppGroup("runs", help="Runs of every account.")

STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.COMPLETED, RunStatus.FAILED,
            RunStatus.CANCELLED)


@agents_cli.command("list")
def list_agents():
    """Each agent's id and name, its tools and which of them ask for confirmation."""
    for agent in current_app.extensions["agents"].all():
        click.echo(f"{agent.id}  {agent.name}" + (f"  ({agent.location})" if agent.location else ""))
        for tool in agent.load_tools():
            gate = ("done by a person" if tool.external_execution else "asks for input" if tool.requires_user_input
                    else "asks by its rule" if tool.confirmation_rule else "asks first" if tool.requires_confirmation
                    else "runs at once")
            gate += ", admins decide" if tool.pauses and tool.approvers == "admin" else ""
            origin = "  [mcp, destructive]" if tool.source == "mcp" and tool.destructive else \
                "  [mcp]" if tool.source == "mcp" else ""
            click.echo(f"    {tool.name:<28} {gate}{origin}")
        for server in agent.mcp:
            if server.last_error:
                click.echo(f"    MCP server {server.name}: unavailable: {server.last_error}")


@runs_cli.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only runs in this state.")
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
def list_runs(status, limit):
    """Runs, newest first: id, status, agent, owner account, when, and the message that started it."""
    query = sa.select(Run).order_by(Run.created_at.desc()).limit(limit)
    if status:
        query = query.where(Run.status == status)
    runs = db.session.scalars(query).all()
    if not runs:
        click.echo("No runs.")
    for run in runs:
        text = " ".join((run.input or "").split())
        click.echo(f"{run.id}  {run.status:<9}  {run.agent_id}  account {run.owner_id}  "
                   f"{run.created_at:%Y-%m-%d %H:%M}  {text[:60]}")


@runs_cli.command("cancel")
@click.argument("run_id")
def cancel_run(run_id):
    """Stop a run (queued, running or paused): its pending cards are rejected, nothing more runs."""
    from app.agent.refusals import Refusal
    from app.agent.commands import cancel

    run = db.session.get(Run, run_id)
    if run is None:
        raise click.ClickException(f"No run {run_id}.")
    try:
        run = cancel(run.owner_id, run_id)
    except Refusal as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{run.id} {run.status}.")


def register(app: Flask) -> None:
    app.cli.add_command(agents_cli)
    app.cli.add_command(runs_cli)
