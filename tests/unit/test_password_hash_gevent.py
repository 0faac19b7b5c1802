"""In a gevent worker a password hash (~130 ms of CPU) runs in a native thread: meanwhile the worker's
other greenlets (its streaming replies, requests holding pooled connections) keep running
(app/native_threads.py)."""
from __future__ import annotations

from tests.unit.test_llm_imports import run_python

# A greenlet ticks every millisecond while sign-up's hash and sign-in's check run; inline on the event
# loop it could not run once until each had finished.
TICKS_DURING_HASHES = """
import gevent.monkey; gevent.monkey.patch_all()
import gevent
from app import accounts

ticks = []
def tick():
    while True:
        ticks.append(1)
        gevent.sleep(0.001)
ticker = gevent.spawn(tick)
gevent.sleep(0.01)
before = len(ticks)
stored = accounts.hash_password("a long enough password")
during_hash = len(ticks) - before
before = len(ticks)
right = accounts.password_matches(stored, "a long enough password")
wrong = accounts.password_matches(stored, "another password")
during_checks = len(ticks) - before
ticker.kill()
print(during_hash > 0, during_checks > 0, right, wrong, stored.startswith("scrypt:"))
"""


def test_other_greenlets_run_while_a_password_is_hashed():
    assert run_python(TICKS_DURING_HASHES) == "True True True False True"


def test_outside_gevent_a_password_is_hashed_where_it_is_asked():
    code = ("import threading\nfrom werkzeug.security import check_password_hash\nfrom app import accounts\n"
            "stored = accounts.hash_password('a long enough password')\n"
            "print(check_password_hash(stored, 'a long enough password'), threading.active_count())")
    assert run_python(code) == "True 1"
