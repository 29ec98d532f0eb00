"""A thread-safe histogram of observed values, for the slow paths (upstream tries, table
programming): counts per bucket and the sum, under a lock. The per-query hot path does not use
it: its histograms are cells of ``kdns.serve.tally``, written by one thread without a lock."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence


def exponential(start: float, factor: float, count: int) -> tuple[float, ...]:
    """Prometheus's ExponentialBuckets(start, factor, count): the upper bounds."""
    return tuple(start * factor**i for i in range(count))


class Histogram:
    """Values observed into ``bounds`` (upper bounds, ascending; one more bucket is +Inf)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        bucket = bisect.bisect_left(self.bounds, value)  # the first bound >= value
        with self._lock:
            self._counts[bucket] += 1
            self._sum += value

    def read(self) -> tuple[list[int], float]:
        """(count per bucket, not cumulative, the last +Inf; the sum of the values)."""
        with self._lock:
            return list(self._counts), self._sum
