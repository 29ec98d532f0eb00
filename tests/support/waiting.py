"""Deadline-bounded polling for tests: wait for a condition instead of sleeping a fixed time.

This module owns ``wait_until`` (and its ``WaitTimeoutError``).  A test step never sleeps for a
fixed time; it states the condition it needs and how long it may take at most. ``reap`` and
``stop_process`` bound the wait for a child process to exit the same way.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["WaitTimeoutError", "reap", "stop_process", "wait_until"]


class WaitTimeoutError(AssertionError):
    """The condition did not hold before the deadline (an AssertionError, so pytest shows it)."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    *,
    interval: float = 0.01,
    message: str | None = None,
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Polls every ``interval`` seconds until ``timeout`` seconds have passed, then raises
    ``WaitTimeoutError``.  A predicate may also assert: an ``AssertionError`` counts as
    "not yet", and the last one is chained to the timeout error, so its message is shown.
    The predicate is always called at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    last_error: AssertionError | None = None
    while True:
        expired = time.monotonic() >= deadline
        try:
            result = predicate()
        except AssertionError as err:
            last_error = err
        else:
            if result:
                return result
            last_error = None
        if expired:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise WaitTimeoutError(f"not true within {timeout:g} s: {what}") from last_error
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


def reap(process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float) -> int | None:
    """Wait up to ``timeout`` for ``process`` to exit; past it, kill it and reap it. Returns
    its exit code, or None if it had to be killed."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
        return None


def stop_process(
    process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 5.0
) -> int | None:
    """SIGTERM ``process`` (if it still runs), then ``reap`` it."""
    if process.poll() is None:
        process.terminate()
    return reap(process, timeout)
