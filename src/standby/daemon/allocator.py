"""glibc malloc thresholds for a process that streams replication logs (``standby serve`` sets them at start).

A log moves through the daemon as short-lived buffers of 64 KiB to a few MiB: TLS records joined by
asyncio's SSL protocol, HTTP body pieces, zstd frames, NBD requests. glibc serves an allocation above its
mmap threshold (128 KiB at start, raised to the largest freed mmapped chunk, at most 32 MiB) with freshly
mmapped pages, and trims the heap top back to the system once more than twice that threshold is free. So
most of these buffers cost page faults and kernel page zeroing when first touched and again after every
trim: half of the peer listener's CPU per received GiB (``bench/receive_alone.py``: 3.9 → 1.8 s/GiB with
fixed thresholds; the sending side halves too). Fixed thresholds keep such buffers in the heap and its
pages mapped; the cost is up to ``TRIM_THRESHOLD`` of freed memory kept per arena.

Other C libraries (musl) have no such settings: ``tune`` then does nothing.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Protocol

log = logging.getLogger("standby.daemon")

#: mallopt parameter numbers (glibc's <malloc.h>).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Allocations up to this size come from the heap (glibc accepts at most 32 MiB on 64-bit).
MMAP_THRESHOLD = 16 << 20
#: Freed memory at the heap top kept for reuse before it is given back.
TRIM_THRESHOLD = 64 << 20


class _Libc(Protocol):
    def mallopt(self, param: int, value: int) -> int: ...


def tune(libc: _Libc | None = None) -> bool:
    """Set the thresholds above; False (and nothing changed) when the C library has no ``mallopt``."""
    if libc is None:
        try:
            own = ctypes.CDLL(None)  # the symbols of the process itself, its C library among them
        except OSError:
            return False
        if not hasattr(own, "mallopt"):
            return False
        libc = own
    done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not done:
        log.debug("malloc thresholds not set (mallopt refused them)")
    return done
