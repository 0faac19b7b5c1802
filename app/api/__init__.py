"""The AgentOS-compatible REST API, all of it (see README, "API"):

- `routes`: the blueprint; thin views.
- `request_models`, `response_models`: pydantic models of what it accepts and answers.
- `openapi`: the OpenAPI 3.1 document, generated from those models.
- `serialize`: rows as the reference's JSON shapes and stream events.
- `errors`: every refusal as `{"detail": ...}`.
- `core`: every name it takes from the core, in one place.
"""
