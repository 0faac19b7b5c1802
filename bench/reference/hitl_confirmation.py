"""The reference's documented example (Agno AgentOS, "Human-in-the-Loop Example",
docs.agno.com/agent-os/usage/hitl), as measured in ../../../shared/research/agno-anchor.md.

Two changes only, so the bench can run it next to our app: the database URL and the port come from
the environment (REFERENCE_DB_URL, REFERENCE_PORT), defaulting to the documented ones. The model is
found through OPENAI_BASE_URL like any OpenAI client; telemetry is switched off by AGNO_TELEMETRY=false.
"""
import os

from agno.agent import Agent
from agno.db.postgres import PostgresDb
from agno.models.openai import OpenAIResponses
from agno.os import AgentOS
from agno.tools import tool

# Database connection
db_url = os.environ.get("REFERENCE_DB_URL", "postgresql+psycopg://ai:ai@localhost:5532/ai")
db = PostgresDb(db_url=db_url)


@tool(requires_confirmation=True)
def delete_records(table_name: str, count: int) -> str:
    """Delete records from a database table.

    Args:
        table_name: Name of the table
        count: Number of records to delete

    Returns:
        str: Confirmation message
    """
    return f"Deleted {count} records from {table_name}"


@tool(requires_confirmation=True)
def send_notification(recipient: str, message: str) -> str:
    """Send a notification to a user.

    Args:
        recipient: Email or username of the recipient
        message: Notification message

    Returns:
        str: Confirmation message
    """
    return f"Sent notification to {recipient}: {message}"


# Create agent with HITL tools
agent = Agent(
    name="Data Manager",
    id="data_manager",
    model=OpenAIResponses(id="gpt-5.2"),
    db=db,
    tools=[delete_records, send_notification],
    instructions=["You help users manage data operations"],
    markdown=True,
)

agent_os = AgentOS(
    id="agentos-hitl",
    agents=[agent],
)

app = agent_os.get_app()

if __name__ == "__main__":
    agent_os.serve(app="hitl_confirmation:app", port=int(os.environ.get("REFERENCE_PORT", "7777")))
