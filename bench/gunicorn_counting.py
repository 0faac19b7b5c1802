"""gunicorn.conf.py, unchanged, plus a hook that counts SQL statements in each worker.

Only the database-writes and cost-growth phases of the benchmark use it (`bench/server.py`,
CountingServer); every other measurement runs the production config itself.
"""
import os
import runpy

_production = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gunicorn.conf.py"))
globals().update({k: v for k, v in _production.items() if not k.startswith("__")})


def post_worker_init(worker):  # runs in the worker after gevent has patched the standard library
    from bench.dbcount import install
    install(os.environ["BENCH_COUNT_DIR"], os.environ["DATABASE_URL"])
