"""In a gevent worker a model request leaves before its greenlet gives way to the others (the POST
rendering its answer, streams): otherwise every other ready greenlet runs first, and that is time to
first token (app/agent/sdk_gevent.py)."""
from __future__ import annotations

from tests.fake_openai import Turn
from tests.unit.test_llm_imports import run_python

# Two turns on one pooled connection; before the second, another greenlet becomes ready to run. The
# order in which the request's bytes are written and that greenlet runs is what a worker sees.
ORDER_OF_SEND_AND_OTHER = """
import gevent.monkey; gevent.monkey.patch_all()
import gevent
from app.agent.llm import ContextItem, model_for
from httpcore2._backends.sync import SyncStream

order = []
write = SyncStream.write
def recorded_write(self, buffer, timeout=None):
    if "request sent" not in order:  # its head; the body may follow in a write of its own
        order.append("request sent")
    return write(self, buffer, timeout)
SyncStream.write = recorded_write

model = model_for({"OPENAI_BASE_URL": FAKE_MODEL_URL, "OPENAI_API_KEY": "k", "OPENAI_API": "responses",
                   "OPENAI_MODEL": "m", "OPENAI_TIMEOUT": 30.0})
list(model.stream("", [ContextItem("user", "hi")], []))  # opens the connection the pool keeps
order.clear()
gevent.spawn(order.append, "other greenlet ran")
list(model.stream("", [ContextItem("user", "hi again")], []))
print(order)
"""


def test_a_model_request_is_sent_before_other_greenlets_run(fake_model):
    fake_model.script(Turn(text="One."), Turn(text="Two."))
    out = run_python(ORDER_OF_SEND_AND_OTHER.replace("FAKE_MODEL_URL", repr(fake_model.base_url)))
    assert out == "['request sent', 'other greenlet ran']"
    assert [r.last_user_text() for r in fake_model.requests] == ["hi", "hi again"]
