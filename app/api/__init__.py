"""The AgentOS-compatible REST API's shapes (`serialize`) and its OpenAPI document (`openapi`).

Nothing here knows of Flask requests; the blueprint in `app.web.api` parses, calls the core, and hands
the rows to these functions.
"""
