"""The Ops Desk agent: every kind of pause a tool call can make, on the sample workspace, so a newcomer
can try each one with the offline demo model (its suggested prompts are on its empty chat):

- confirm, with a live preview: `delete_records` and `send_notification` (from the Data Manager);
- edit, then approve: a delete of far more rows than anyone would want ("Delete 5000 ... events");
- ask for input: `schedule_maintenance` asks the person for the window (requires_user_input);
- hand over: `restart_service` is done by the person, who hands back what happened (external_execution);
- a rule: `archive_events` asks only above 100 events (requires_confirmation=callable), offers "Always
  allow" and expires after 5 minutes (approval_timeout);
- an admin's approval: `reset_password` (approvers="admin").
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import Field

from app.agent.definition import Agent
from app.agent.tools import ToolContext, tool
from app.agents.data_manager import DataTable, delete_records, list_tables, send_notification
from app.workspace import MAX_DELETE, count_rows, events, outbox

MaintenanceWindow = Literal["tonight 22:00", "Saturday 06:00", "Sunday 02:00"]
Service = Literal["web", "worker", "database"]


@tool(requires_user_input=True, user_input_fields=["window"])
def schedule_maintenance(ctx: ToolContext, table_name: DataTable, window: MaintenanceWindow, note: str = "") -> str:
    """Schedule a maintenance window for one data table; the person picks the window.

    Args:
        table_name (str): The table to maintain: "users", "orders" or "events".
        window (str): When: "tonight 22:00", "Saturday 06:00" or "Sunday 02:00".
        note (str): What the maintenance is for (optional).
    """
    text = f"Maintenance of {table_name} scheduled for {window}." + (f" {note.strip()}" if note.strip() else "")
    with ctx.workspace.begin() as conn:
        conn.execute(outbox.insert().values(owner_id=ctx.owner_id, run_id=ctx.run_id, recipient="ops-team",
                                            message=text))
    return text + " The ops team was told."


@tool(external_execution=True)
def restart_service(ctx: ToolContext, service: Service, reason: str) -> str:
    """Restart one of the production services. A person does it (the agent has no access) and hands
    back what happened.

    Args:
        service (str): "web", "worker" or "database".
        reason (str): Why it needs a restart.
    """
    raise RuntimeError("restart_service is run by a person, never on the server")  # external_execution


def _many(arguments: dict, run_context: ToolContext) -> bool:
    """archive_events' rule: a small archive runs at once; over 100 events asks first."""
    return arguments["count"] > 100


def _preview_archive(ctx: ToolContext, arguments: dict) -> str | None:
    total = count_rows(ctx.workspace, events)
    count = min(arguments.get("count", 0), total)
    return f"Archives (removes) the {count:,} oldest of {total:,} events."


@tool(requires_confirmation=_many, approval_timeout=300, preview=_preview_archive)
def archive_events(ctx: ToolContext, count: Annotated[int, Field(ge=1, le=MAX_DELETE)]) -> str:
    """Archive the oldest events: they leave the events table. Asks first only above 100 events.

    Args:
        count (int): How many of the oldest events to archive, 1 to 10,000.
    """
    with ctx.workspace.begin() as conn:
        oldest = sa.select(events.c.id).order_by(events.c.created_at.asc(), events.c.id.asc()).limit(count)
        archived = conn.execute(sa.delete(events).where(events.c.id.in_(oldest))).rowcount
        remaining = count_rows(conn, events)
    return f"Archived {archived:,} events; {remaining:,} remain."


@tool(requires_confirmation=True, approvers="admin")
def reset_password(ctx: ToolContext, email: Annotated[str, Field(min_length=3, max_length=255)]) -> str:
    """Send a user a password-reset link. Only an admin may approve it.

    Args:
        email (str): The user's email address.
    """
    with ctx.workspace.begin() as conn:
        conn.execute(outbox.insert().values(owner_id=ctx.owner_id, run_id=ctx.run_id, recipient=email,
                                            message="Someone asked to reset your password: use the link in this message."))
    return f"A password-reset link was sent to {email}."


def demo_script(text: str, available: set[str]):
    """What the demo model says to a message and the call it makes: (reply, (tool, args) or None)."""
    said = " ".join(text.split())
    lowered = said.lower()
    if match := re.search(r"\bdelete\s+(\d+)\b.*?\b(?:from|in)\s+(?:the\s+)?(\w+)", lowered):
        count, table = int(match.group(1)), match.group(2)
        hint = " That is a lot: press **Edit…** to change the count before approving." if count > 1000 else ""
        return (f"I'll delete the {count:,} oldest records from **{table}**; the card shows which rows go.{hint}\n\n",
                ("delete_records", {"table_name": table, "count": count}))
    if match := re.search(r"\b(?:notify|tell)\s+(\S+?)[,:]?\s+(?:that\s+)?(.+)", said, re.I):
        return (f"I'll notify **{match.group(1)}**; the card shows the message exactly as it will be sent.\n\n",
                ("send_notification", {"recipient": match.group(1), "message": match.group(2).strip()}))
    if match := re.search(r"\bschedule\s+maintenance\s+(?:for|of|on)\s+(?:the\s+)?(\w+)", lowered):
        return ("I'll schedule it; pick the window on the card.\n\n",
                ("schedule_maintenance", {"table_name": match.group(1), "note": "Requested in the Ops Desk."}))
    if match := re.search(r"\brestart\s+(?:the\s+)?(\w+)", lowered):
        return (f"I cannot restart **{match.group(1)}** myself: the card says what to do; tell me how it went.\n\n",
                ("restart_service", {"service": match.group(1), "reason": "Requested in the Ops Desk."}))
    if match := re.search(r"\barchive\s+(\d+)\b", lowered):
        count = int(match.group(1))
        how = "That is few enough to run at once, by the tool's rule." if count <= 100 else \
            "Over 100 asks first; the card offers **Always allow** and expires in 5 minutes."
        return (f"I'll archive the {count:,} oldest events. {how}\n\n", ("archive_events", {"count": count}))
    if match := re.search(r"\breset\s+(?:the\s+)?password\s+(?:of|for)\s+(\S+@\S+?)[.!?]?$", lowered):
        return (f"I'll send **{match.group(1)}** a reset link. Only an admin may approve that.\n\n",
                ("reset_password", {"email": match.group(1)}))
    if re.search(r"\b(what|which|list|show)\b.*\btables?\b", lowered):
        return ("Here are the tables.\n\n", ("list_tables", {}))
    return ("I'm the **Ops Desk** on the offline demo model. Each of these stops for you in a different way:\n\n"
            + "\n".join(f"- *{prompt}*" for prompt in SUGGESTIONS) + "\n\nSet `OPENAI_API_KEY` to talk to a real model.",
            None)


SUGGESTIONS = ("Delete 50 old records from the users table",
               "Delete 5000 old records from the events table",
               "Notify alice@example.com that the export is ready",
               "Schedule maintenance for the orders table",
               "Restart the worker service",
               "Archive 50 old events",
               "Archive 500 old events",
               "Reset the password of alice@example.com")

OPS_DESK = Agent(
    id="ops_desk",
    name="Ops Desk",
    instructions="You help run the workspace. Deleting and notifying need approval; scheduling maintenance "
                 "needs the person's window; restarting a service is done by the person; archiving over 100 "
                 "events needs approval; a password reset needs an admin's.",
    tools=[list_tables, delete_records, send_notification, schedule_maintenance, restart_service, archive_events,
           reset_password],
    description="Shows every kind of pause: approve, edit, fill in, hand over, a rule, an admin's approval.",
)
OPS_DESK.demo = demo_script
OPS_DESK.suggestions = SUGGESTIONS
