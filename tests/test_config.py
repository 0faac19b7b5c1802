"""Configuration from the environment: sane defaults, normalised URLs, and one-line errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

from app import config
from tests.live import ROOT


def test_defaults_are_sqlite_files_under_instance(tmp_path):
    settings = config.load(str(tmp_path), {})
    assert settings["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'app.db'}"
    assert settings["SQLALCHEMY_BINDS"]["workspace"] == f"sqlite:///{tmp_path / 'workspace.db'}"
    assert (settings["OPENAI_MODEL"], settings["OPENAI_API"], settings["OPENAI_API_KEY"]) == ("gpt-5.2", "responses", None)


def test_web_processes_execute_runs_unless_workers_are_asked_for(tmp_path):
    assert config.load(str(tmp_path), {})["RUN_EXECUTION"] == "web"
    assert config.load(str(tmp_path), {"RUN_EXECUTION": "Workers"})["RUN_EXECUTION"] == "workers"


def test_postgres_pools_default_to_what_a_gevent_worker_admits(tmp_path):
    settings = config.load(str(tmp_path), {})
    assert (settings["DATABASE_POOL_SIZE"], settings["DATABASE_MAX_OVERFLOW"], settings["DATABASE_POOL_TIMEOUT"]) == \
        (20, 0, 10)
    settings = config.load(str(tmp_path), {"DATABASE_POOL_SIZE": "5", "DATABASE_MAX_OVERFLOW": "0",
                                           "DATABASE_POOL_TIMEOUT": "3"})
    assert (settings["DATABASE_POOL_SIZE"], settings["DATABASE_MAX_OVERFLOW"], settings["DATABASE_POOL_TIMEOUT"]) == \
        (5, 0, 3)


@pytest.mark.parametrize("url", ["postgres://u:p@db:5432/app", "postgresql://u:p@db:5432/app",
                                 "postgresql+psycopg://u:p@db:5432/app"])
def test_postgres_urls_always_use_psycopg_3(tmp_path, url):
    assert config.load(str(tmp_path), {"DATABASE_URL": url})["SQLALCHEMY_DATABASE_URI"] == \
        "postgresql+psycopg://u:p@db:5432/app"


@pytest.mark.parametrize("env, variable", [
    ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
    ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql+psycopg2://u@h/d"}, "DATABASE_URL"),
    ({"WORKSPACE_DATABASE_URL": "oracle://x"}, "WORKSPACE_DATABASE_URL"),
    ({"OPENAI_API": "completions"}, "OPENAI_API"),
    ({"OPENAI_BASE_URL": "localhost:11434"}, "OPENAI_BASE_URL"),
    ({"OPENAI_TIMEOUT": "soon"}, "OPENAI_TIMEOUT"),
    ({"DATABASE_POOL_SIZE": "0"}, "DATABASE_POOL_SIZE"),
    ({"DATABASE_POOL_SIZE": "lots"}, "DATABASE_POOL_SIZE"),
    ({"DATABASE_MAX_OVERFLOW": "-1"}, "DATABASE_MAX_OVERFLOW"),
    ({"DATABASE_MAX_OVERFLOW": "2.5"}, "DATABASE_MAX_OVERFLOW"),
    ({"DATABASE_POOL_TIMEOUT": "0"}, "DATABASE_POOL_TIMEOUT"),
    ({"DATABASE_POOL_TIMEOUT": "0.5"}, "DATABASE_POOL_TIMEOUT"),
    ({"RATELIMIT_MESSAGES": "lots"}, "RATELIMIT_MESSAGES"),
    ({"RATELIMIT_COMMANDS": "5 per fortnight"}, "RATELIMIT_COMMANDS"),
    ({"MAX_ACTIVE_RUNS": "0"}, "MAX_ACTIVE_RUNS"),
    ({"MAX_STREAMS_PER_ACCOUNT": "many"}, "MAX_STREAMS_PER_ACCOUNT"),
    ({"MAX_CONTENT_LENGTH": "1k"}, "MAX_CONTENT_LENGTH"),
    ({"PROXY_FIX": "-1"}, "PROXY_FIX"),
    ({"OS_SECURITY_KEY": "short"}, "OS_SECURITY_KEY"),
    ({"RATELIMIT_STORAGE_URI": "carrier-pigeon://coop"}, "RATELIMIT_STORAGE_URI"),
    ({"RUN_EXECUTION": "elsewhere"}, "RUN_EXECUTION"),
])
def test_a_wrong_value_names_the_variable(tmp_path, env, variable):
    with pytest.raises(config.ConfigError, match=variable):
        config.load(str(tmp_path), env)


def test_the_app_stops_with_one_line_not_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "from app import create_app; create_app()"], cwd=ROOT, capture_output=True,
        text=True, env={"PATH": "/usr/bin:/bin", "OPENAI_API": "bogus", "HOME": str(tmp_path)}, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "Configuration error: OPENAI_API must be one of responses, chat, got 'bogus'"


def test_limits_default_to_what_one_person_never_reaches(tmp_path):
    settings = config.load(str(tmp_path), {})
    assert (settings["RATELIMIT_MESSAGES"], settings["RATELIMIT_COMMANDS"], settings["MAX_ACTIVE_RUNS"],
            settings["MAX_STREAMS_PER_ACCOUNT"], settings["MAX_CONTENT_LENGTH"]) == \
        ("20 per minute", "120 per minute", 3, 30, 1024 * 1024)
    assert settings["WTF_CSRF_TIME_LIMIT"] is None, "a card left open for hours can still be decided"


def test_a_short_api_key_stops_the_app_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "from app import create_app; create_app()"], cwd=ROOT, capture_output=True,
        text=True, env={"PATH": "/usr/bin:/bin", "OS_SECURITY_KEY": "changeme", "HOME": str(tmp_path)}, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("Configuration error: OS_SECURITY_KEY must be at least 32 characters long")
