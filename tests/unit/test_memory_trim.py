"""A quiet server process gives back the memory its peak needed (app/memory.py)."""
from __future__ import annotations

import time

import pytest

from app.memory import IdleTrimmer, _malloc_trim, resident_bytes

MiB = 1 << 20


def peak_then_free() -> bytearray:
    """Grow the C heap by ~64 MiB of mid-sized blocks, then free them all but one allocated above them,
    which keeps glibc from shrinking the heap by itself: only a trim gives those pages back."""
    blocks = [bytearray(100_000) for _ in range(670)]  # zero-filled, so every page is touched
    pin = bytearray(100_000)
    del blocks
    return pin


@pytest.mark.skipif(_malloc_trim() is None, reason="no malloc_trim in this C library")
def test_a_quiet_process_returns_the_memory_of_its_peak():
    trimmer = IdleTrimmer(interval=0.2).start()
    try:
        pin = peak_then_free()
        kept = resident_bytes()
        deadline = time.monotonic() + 10
        while resident_bytes() > kept - 32 * MiB and time.monotonic() < deadline:
            time.sleep(0.1)
        assert resident_bytes() <= kept - 32 * MiB, f"still {resident_bytes() / MiB:.0f} MiB (was {kept / MiB:.0f})"
        assert pin
    finally:
        trimmer.stop()
