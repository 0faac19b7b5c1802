"""The SDK's HTTP stack (httpx2 over httpcore2) in a gevent worker: a model request goes out before its
greenlet lets the others run.

Before it reuses a pooled keep-alive connection, httpcore asks whether the server has closed it, with
`select.poll().poll(0)`. gevent's patched `poll` waits on the hub even for a zero timeout, so the greenlet
sending a model request gave way to every other ready greenlet before a byte left: the POST rendering
its answer, the page's stream opening (12 ms between calling the SDK and the model receiving the
request, at one stream; more the busier the worker). The operating system's own `poll` answers a
zero-timeout question at once and never blocks, so asking it needs no switch. Nothing changes outside
gevent.
"""
from __future__ import annotations

import select


def install() -> None:
    """After `openai` (and so httpcore2) is imported; harmless to call again."""
    try:
        from gevent import monkey
    except ImportError:
        return
    if not monkey.is_module_patched("select"):
        return
    from httpcore2._backends import sync

    if getattr(sync.is_socket_readable, "without_switch", False):
        return
    os_poll = monkey.get_original("select", "poll")

    def is_socket_readable(sock) -> bool:
        """httpcore's check (a socket that is gone reads as readable: its next read ends it), asked of
        the operating system directly."""
        fd = None if sock is None else sock.fileno()
        if fd is None or fd < 0:
            return True
        poller = os_poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))

    is_socket_readable.without_switch = True
    sync.is_socket_readable = is_socket_readable
