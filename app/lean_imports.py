"""A module every process would import for nothing, left out (`app.agent.sdk_imports` does the same for
the `openai` SDK, when a model is first called).

Flask-Login's package imports its test client only to export `FlaskLoginClient`, and with it
`flask.testing`, `click.testing` and `pdb` (0.5 MiB in every process: the master and each worker). This
app does not use that client, but `install()` keeps it working: its stand-in module holds a
`FlaskLoginClient` that loads the real module the first time it is called, and returns the real client.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

TEST_CLIENT = "flask_login.test_client"


class FlaskLoginClient:
    """Stands in for `flask_login.FlaskLoginClient`: calling it makes the real one."""

    def __new__(cls, *args, **kwargs):
        return _real_test_client().FlaskLoginClient(*args, **kwargs)


def _real_test_client() -> types.ModuleType:
    import flask_login

    module = sys.modules[TEST_CLIENT]
    if getattr(module, "FlaskLoginClient", None) is FlaskLoginClient:  # still the stand-in: load it
        spec = importlib.machinery.PathFinder.find_spec(TEST_CLIENT, flask_login.__path__)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[TEST_CLIENT] = flask_login.test_client = module
        flask_login.FlaskLoginClient = module.FlaskLoginClient
    return module


def install() -> None:
    """Before `flask_login` is first imported (once it is, this changes nothing)."""
    if "flask_login" in sys.modules or TEST_CLIENT in sys.modules:
        return
    stand_in = types.ModuleType(TEST_CLIENT, "Flask-Login's test client, loaded when first used (app.lean_imports).")
    stand_in.FlaskLoginClient = FlaskLoginClient
    sys.modules[TEST_CLIENT] = stand_in
