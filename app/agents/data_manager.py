"""The Data Manager agent and its tools, which act on the sandbox workspace (see app.workspace).

Table names from the model are only ever looked up in an allowlist (DATA_TABLES); the SQL is built
from the matching Table object with bound parameters, never from the string.
"""
from __future__ import annotations

import sqlalchemy as sa

from app.agent.tools import ToolContext, ToolError, tool
from app.agents import Agent
from app.workspace import DATA_TABLES, MAX_DELETE, TABLES, count_rows, outbox

MAX_MESSAGE_CHARS = 2_000
MAX_RECIPIENT_CHARS = 255
_AVAILABLE = ", ".join(DATA_TABLES)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _data_table(table_name: str) -> sa.Table:
    """The data table called `table_name` (case and surrounding spaces ignored), or ToolError."""
    key = table_name.strip().lower() if isinstance(table_name, str) else ""
    if key in DATA_TABLES:
        return TABLES[key]
    if key in TABLES:
        raise ToolError(f"The table '{key}' cannot be used with this tool. Available tables: {_AVAILABLE}.")
    shown = table_name if len(str(table_name)) <= 60 else f"{str(table_name)[:57]}..."
    raise ToolError(f"Unknown table {shown!r}. Available tables: {_AVAILABLE}.")


def _check_count(count: int) -> None:
    if count < 0:
        raise ToolError("count must be 0 or more.")
    if count > MAX_DELETE:
        raise ToolError(f"count must be at most {MAX_DELETE:,}: one call deletes no more than that.")


# -- delete_records -----------------------------------------------------------------------------------------

def _preview_delete(ctx: ToolContext, arguments: dict) -> str | None:
    try:
        table = _data_table(arguments["table_name"])
        count = arguments["count"]
        _check_count(count)
    except (ToolError, KeyError):
        return None
    total = count_rows(ctx.workspace, table)
    if count == 0:
        return f"Deletes nothing (count is 0); {table.name} has {_plural(total, 'row')}."
    if total == 0:
        return f"Deletes nothing: {table.name} is empty."
    if count >= total:
        return f"Deletes all {_plural(total, 'row')} in {table.name}."
    oldest = "the oldest" if count == 1 else f"the {count:,} oldest"
    return f"Deletes {oldest} of {total:,} rows in {table.name}."


@tool(requires_confirmation=True, preview=_preview_delete)
def delete_records(ctx: ToolContext, table_name: str, count: int) -> str:
    """Permanently delete the oldest records (by creation time) from one data table: users, orders
    or events. The user is asked to confirm before it runs. At most 10,000 records per call.

    Args:
        table_name (str): The table to delete from: "users", "orders" or "events".
        count (int): How many of the oldest records to delete, from 0 to 10,000.
    """
    table = _data_table(table_name)
    _check_count(count)
    with ctx.workspace.begin() as conn:
        if count == 0:
            remaining = count_rows(conn, table)
            return f"No records deleted (count was 0). {table.name} has {_plural(remaining, 'record')}."
        oldest = sa.select(table.c.id).order_by(table.c.created_at.asc(), table.c.id.asc()).limit(count)
        deleted = conn.execute(sa.delete(table).where(table.c.id.in_(oldest))).rowcount
        remaining = count_rows(conn, table)
    remain = f"{remaining:,} " + ("remains" if remaining == 1 else "remain")
    if deleted < count:
        return (f"Deleted {_plural(deleted, 'record')} from {table.name} ({count:,} requested, "
                f"but only {deleted:,} existed). {remain}.")
    return f"Deleted {_plural(deleted, 'record')} from {table.name}. {remain}."


# -- send_notification --------------------------------------------------------------------------------------

def _preview_send(ctx: ToolContext, arguments: dict) -> str | None:
    recipient = str(arguments.get("recipient", "")).strip()
    return f"Sends a message to {recipient}." if recipient else None


@tool(requires_confirmation=True, preview=_preview_send)
def send_notification(ctx: ToolContext, recipient: str, message: str) -> str:
    """Send a notification message to a recipient (an email address or a name). The user is asked
    to confirm before it is sent.

    Args:
        recipient (str): Who receives it, e.g. "alice@example.com".
        message (str): The text to send, at most 2,000 characters.
    """
    recipient = recipient.strip()
    if not recipient:
        raise ToolError("recipient must not be empty.")
    if len(recipient) > MAX_RECIPIENT_CHARS:
        raise ToolError(f"recipient is too long (at most {MAX_RECIPIENT_CHARS} characters).")
    if not message.strip():
        raise ToolError("message must not be empty.")
    if len(message) > MAX_MESSAGE_CHARS:
        raise ToolError(f"message is too long: {len(message):,} characters, the limit is {MAX_MESSAGE_CHARS:,}.")
    with ctx.workspace.begin() as conn:
        conn.execute(outbox.insert().values(
            owner_id=ctx.owner_id, run_id=ctx.run_id, recipient=recipient, message=message))
    return f"Notification sent to {recipient}."


# -- read-only tools ----------------------------------------------------------------------------------------

@tool
def list_tables(ctx: ToolContext) -> str:
    """List the data tables (users, orders, events) with how many rows each has."""
    with ctx.workspace.connect() as conn:
        return "\n".join(f"{name}: {_plural(count_rows(conn, TABLES[name]), 'row')}" for name in DATA_TABLES)


@tool
def count_records(ctx: ToolContext, table_name: str) -> str:
    """Count the records in one data table: users, orders or events.

    Args:
        table_name (str): The table to count: "users", "orders" or "events".
    """
    table = _data_table(table_name)
    return f"{table.name} has {_plural(count_rows(ctx.workspace, table), 'record')}."


DATA_MANAGER = Agent(
    id="data_manager",
    name="Data Manager",
    instructions="You help users manage data operations",
    tools=(list_tables, count_records, delete_records, send_notification),
    description="Counts and deletes records in the sample workspace and sends notifications.",
)
