"""The Data Manager agent and its tools, which act on the sandbox workspace (see app.workspace).

Table names from the model are only ever looked up in an allowlist (DATA_TABLES); the SQL is built
from the matching Table object with bound parameters, never from the string.
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import BeforeValidator, Field

from app.agent.definition import Agent
from app.agent.tools import ToolContext, ToolError, tool
from app.workspace import DATA_TABLES, MAX_DELETE, TABLES, count_rows, outbox

MAX_MESSAGE_CHARS = 2_000
MAX_RECIPIENT_CHARS = 255
_AVAILABLE = ", ".join(DATA_TABLES)


def _table_key(value):
    return value.strip().lower() if isinstance(value, str) else value


# Strict arguments: checked before a confirmation card is shown, and part of the model's schema.
DataTable = Annotated[Literal["users", "orders", "events"], BeforeValidator(_table_key)]
DeleteCount = Annotated[int, Field(ge=0, le=MAX_DELETE)]
Recipient = Annotated[str, Field(min_length=1, max_length=MAX_RECIPIENT_CHARS)]
NotificationText = Annotated[str, Field(min_length=1, max_length=MAX_MESSAGE_CHARS)]


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
    return f"Deletes {oldest} of {total:,} rows in {table.name}.\n{_first_to_go(ctx, table, count)}"


PREVIEW_ROWS = 3


def _first_to_go(ctx: ToolContext, table: sa.Table, count: int) -> str:
    """The first few rows a delete would remove, one short line each (read only)."""
    query = (sa.select(table).order_by(table.c.created_at.asc(), table.c.id.asc()).limit(min(count, PREVIEW_ROWS)))
    with ctx.workspace.connect() as conn:
        rows = conn.execute(query).mappings().all()
    shown = [" · ".join(f"{k}={_short(v)}" for k, v in row.items() if k != "created_at") for row in rows]
    more = f" … and {count - len(rows):,} more" if count > len(rows) else ""
    return "First to go: " + "; ".join(shown) + more + "."


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


@tool(requires_confirmation=True, preview=_preview_delete, allow_always=False)  # each deletion asks
def delete_records(ctx: ToolContext, table_name: DataTable, count: DeleteCount) -> str:
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
    if not recipient:
        return None
    message = arguments.get("message")
    return f"Sends a message to {recipient}:\n{message}" if isinstance(message, str) else f"Sends a message to {recipient}."


@tool(requires_confirmation=True, preview=_preview_send)
def send_notification(ctx: ToolContext, recipient: Recipient, message: NotificationText) -> str:
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
def count_records(ctx: ToolContext, table_name: DataTable) -> str:
    """Count the records in one data table: users, orders or events.

    Args:
        table_name (str): The table to count: "users", "orders" or "events".
    """
    table = _data_table(table_name)
    return f"{table.name} has {_plural(count_rows(ctx.workspace, table), 'record')}."


# -- the offline demo model's script ------------------------------------------------------------------------

def demo_script(text: str, available: set[str]):
    """What the demo model (no API key) says to a message, and the call it makes: (reply, call or None)."""
    said = " ".join(text.split())
    lowered = said.lower()
    if match := re.search(r"\bdelete\s+(-?\d+)\b.*?\b(?:from|in)\s+(?:the\s+)?[`'\"]?([\w.;-]+)", lowered):
        count, table = int(match.group(1)), match.group(2)
        if "delete_records" in available:
            return (f"I'll delete the {count} oldest records from **{table}**. "
                    "This needs your confirmation first.\n\n", ("delete_records", {"table_name": table, "count": count}))
    if match := re.search(r"\b(?:notify|message|tell)\s+(\S+?)[,:]?\s+(?:that\s+|saying\s+|:\s*)?(.+)", said, re.I):
        recipient, message = match.group(1), match.group(2).strip()
        if "send_notification" in available:
            return (f"I'll send a notification to **{recipient}**. Please confirm.\n\n",
                    ("send_notification", {"recipient": recipient, "message": message}))
    if match := re.search(r"\bhow many\s+(?:rows|records|entries)?\s*(?:are\s+)?(?:there\s+)?(?:in|does)\s+(?:the\s+)?(\w+)", lowered) \
            or re.search(r"\bcount\s+(?:the\s+)?(?:rows|records)?\s*(?:in\s+)?(?:the\s+)?(\w+)", lowered):
        if "count_records" in available:
            return ("Let me count them.\n\n", ("count_records", {"table_name": match.group(1)}))
    if re.search(r"\b(what|which|list|show)\b.*\btables?\b", lowered) and "list_tables" in available:
        return ("Here are the tables in the workspace.\n\n", ("list_tables", {}))
    return ("I'm the **demo model**, running offline with no API key. I can help with the workspace data:\n\n"
            "- *Delete 50 old records from the users table*\n"
            "- *Notify alice@example.com that the export is ready*\n"
            "- *How many rows in orders?*\n"
            "- *What tables are there?*\n\n"
            "Deleting and notifying ask for your confirmation first. "
            "Set `OPENAI_API_KEY` to talk to a real model.", None)


DATA_MANAGER = Agent(
    id="data_manager",
    name="Data Manager",
    instructions="You help users manage data operations",
    tools=[list_tables, count_records, delete_records, send_notification],
    description="Counts and deletes records in the sample workspace and sends notifications.",
)
DATA_MANAGER.demo = demo_script
DATA_MANAGER.suggestions = ("Delete 50 old records from the users table",
                            "Notify alice@example.com that the export is ready",
                            "How many rows in orders?", "What tables are there?")
