"""Fixtures for the REST API: the app and the real server with an API key, and a client for it."""
from __future__ import annotations

import pytest

from tests.api.apiclient import KEY, Api


@pytest.fixture
def app_config(app_config):
    return {**app_config, "OS_SECURITY_KEY": KEY, "API_AUTH": "on", "API_WAIT_SECONDS": 20.0}


@pytest.fixture
def server_env(server_env):
    return {**server_env, "OS_SECURITY_KEY": KEY}


@pytest.fixture
def api(app):
    return Api(app)
