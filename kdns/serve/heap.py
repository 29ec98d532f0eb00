"""Giving freed heap memory back to the operating system after a burst of TCP buffers.

CPython allocates bytes objects over 512 bytes (read buffers, queued replies) with malloc. When
a thousand connections that held 16-80 KiB each close, glibc keeps most of the freed memory in
its heap (fragmented by the small objects still alive between the chunks), and the RSS stays up
for the life of the process: the issue measured +78 MB kept by kdns after 1,024 non-reading
pipeliners closed. ``malloc_trim(0)`` returns the free pages in the middle of the heap too
(``madvise(MADV_DONTNEED)``, glibc 2.8+), which no setting of ``M_TRIM_THRESHOLD`` does.

``HeapTrimmer`` decides when: after enough connection memory has been freed since the last
trim, at most once per interval (a trim walks the whole heap: a few milliseconds for ~100 MB,
with the GIL released, as ctypes releases it for foreign calls). Where malloc_trim does not
exist (musl, macOS), ``trim`` is a no-op that says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from typing import Final

TRIM_AFTER_FREED_BYTES: Final = 4 * 1024 * 1024
"""Connection memory (buffers, plus ``CONNECTION_OVERHEAD_BYTES`` each) freed before a trim."""
CONNECTION_OVERHEAD_BYTES: Final = 16 * 1024
"""What one connection's Python objects (transport, protocol, timers) take, measured roughly."""
TRIM_INTERVAL_S: Final = 5.0


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    trim: Callable[[int], int] = function
    return trim


def trim() -> bool:
    """Return free heap pages to the OS; whether malloc_trim exists here (glibc)."""
    function = _malloc_trim()
    if function is None:
        return False
    function(0)
    return True


class HeapTrimmer:
    """Counts freed connection memory and says when a trim is due; the caller's clock."""

    def __init__(self, now: Callable[[], float], release: Callable[[], bool] = trim) -> None:
        self._now = now
        self._release = release
        self._freed = 0
        self._last = now()
        self.trims = 0

    def freed(self, buffer_bytes: int) -> None:
        """A connection closed holding ``buffer_bytes``."""
        self._freed += buffer_bytes + CONNECTION_OVERHEAD_BYTES

    def due(self) -> bool:
        return self._freed >= TRIM_AFTER_FREED_BYTES and self._now() - self._last >= TRIM_INTERVAL_S

    def maybe_trim(self) -> bool:
        """Trim if due; whether it did."""
        if not self.due():
            return False
        self._freed = 0
        self._last = self._now()
        self._release()
        self.trims += 1
        return True
