"""A progress bar on stderr for long replays: ``[#####.....]  48%  1.2M/2.5M queries  3.1 s``.

Redrawn in place (carriage return) at most ``REDRAW_S`` apart, and finished with a newline.
It writes only to its own stream (stderr), so stdout stays clean for ``--json``; whether it is
shown at all is the caller's choice (``nodecache tune``: a TTY and no ``--json``, or
``--progress on``). The clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TextIO

WIDTH: Final = 30
REDRAW_S: Final = 0.1


def _count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    return str(n)


class Progress:
    def __init__(
        self, total: int, stream: TextIO, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total = max(1, total)
        self.done = 0
        self.stream = stream
        self.clock = clock
        self.started = clock()
        self._drawn = -REDRAW_S

    def line(self) -> str:
        fraction = min(1.0, self.done / self.total)
        filled = int(fraction * WIDTH)
        return (
            f"[{'#' * filled}{'.' * (WIDTH - filled)}] {fraction:4.0%}  "
            f"{_count(self.done)}/{_count(self.total)} queries  {self.clock() - self.started:.1f} s"
        )

    def advance(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if now - self._drawn >= REDRAW_S:
            self._drawn = now
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\r" + self.line() + "\n")
        self.stream.flush()
