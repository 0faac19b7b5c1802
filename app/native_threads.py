"""CPU-bound work that releases the GIL (a password hash), kept off a gevent worker's event loop.

A scrypt password hash takes ~130 ms of CPU. Run in a greenlet it never yields, so for that long
nothing else in the worker runs: every reply it streams stalls, and every request holding a pooled
connection keeps it. A burst of sign-ups stalled a worker for seconds and emptied the PostgreSQL pool
(503s). `hashlib.scrypt` releases the GIL, so in a real OS thread it computes while the event loop
goes on serving. Outside gevent (the CLI, the tests, threaded servers) the caller's own thread is
already one of many, and the work runs where it is called.
"""
from __future__ import annotations

import os
from typing import Callable, TypeVar

T = TypeVar("T")

# One thread a process: hashes wait in line for it instead of taking a core each (and 32 MiB each),
# so a burst of sign-ins costs a worker at most one core's share while its streams keep the rest.
_pool = None
_pool_pid = None


def run_in_native_thread(work: Callable[..., T], *args) -> T:
    if not _gevent_patched():
        return work(*args)
    return _native_pool().apply(work, args)


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("threading")


def _native_pool():
    """Made in the process that uses it: a pool made before gunicorn forks has no threads after."""
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        from gevent.threadpool import ThreadPool

        _pool, _pool_pid = ThreadPool(1), os.getpid()
    return _pool
