"""A server process gives the memory its busiest moment needed back to the system once it is quiet.

CPython hands its own empty arenas back, but glibc's malloc keeps what larger objects freed (response
bodies, rendered pages, result rows, greenlet stacks) for reuse, so without this a worker stays at the
size of its peak. Once a second the trimmer looks at the process: if it used almost no CPU over that
second and its resident size grew since the last trim, `malloc_trim(0)` returns the free pages. No-op
where the C library has no `malloc_trim` (musl, macOS).
"""
from __future__ import annotations

import ctypes
import logging
import os
import threading
import time

log = logging.getLogger(__name__)

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library this process already runs on
    except (OSError, AttributeError):
        return None


class IdleTrimmer:
    def __init__(self, interval: float = 1.0, quiet_cpu_share: float = 0.02, min_growth: int = 2 << 20):
        self.interval, self.quiet_cpu_share, self.min_growth = interval, quiet_cpu_share, min_growth
        self._stopped = threading.Event()

    def start(self) -> "IdleTrimmer":
        trim = _malloc_trim()
        if trim is not None and os.path.exists("/proc/self/statm"):
            threading.Thread(target=self._run, args=(trim,), name="memory-trim", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def _run(self, trim) -> None:
        floor = resident_bytes()
        cpu = time.process_time()
        while not self._stopped.wait(self.interval):
            used, cpu = time.process_time() - cpu, time.process_time()
            if used < self.quiet_cpu_share * self.interval and resident_bytes() > floor + self.min_growth:
                trim(0)
                floor = resident_bytes()
