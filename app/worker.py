"""`flask --app app worker`: a process that executes runs and serves no HTTP (see docs/scaling.md)."""
from __future__ import annotations

import logging
import os

import click
from flask import current_app


@click.command("worker")
@click.option("--grace", type=float, default=None, metavar="SECONDS",
              help="On SIGTERM, how long runs in flight may take to finish (default 25).")
def worker(grace):
    """Execute queued runs (with RUN_EXECUTION=workers, the only processes that do) until SIGTERM."""
    from app import build_run_executor
    from app.agent.executor import STOP_GRACE_SECONDS, serve_forever
    app = current_app._get_current_object()
    executor = app.extensions["run_executor"] = build_run_executor(app)
    finished = serve_forever(app, executor, STOP_GRACE_SECONDS if grace is None else grace)
    app.extensions["run_events"].stop()
    if not finished:
        # The pool's threads would hold the exit until their runs end; their leases hand them over.
        logging.shutdown()
        os._exit(1)
