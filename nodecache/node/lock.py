"""One writer of the node's rules at a time, across processes: the cache and its guard.

Both reconcile the rules by reading ``iptables-save`` and committing the difference with
``iptables-restore``; the xtables lock covers each command, not the read-then-write between
them, so a cache and a guard starting together both saw no rules and both added 24 (a real
run: 48 rules). ``plumbing_lock`` makes the read-then-write one critical section.

The mutex is an abstract Unix socket (Linux: a name in the network namespace, no file): binding
it succeeds for one process at a time, and the kernel releases it when its holder exits,
however it exits (``kill -9`` included), so a dead cache can never leave the guard locked out.
The cache and the guard share the node's network namespace (``hostNetwork``), and so they share
the name; a test's network namespace has its own.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from typing import Final

logger = logging.getLogger(__name__)

LOCK_NAME: Final = b"\0nodecache-node-plumbing"
WAIT_S: Final = 10.0
"""How long to wait for the other writer. Past it the work goes ahead unlocked (with a
warning): at worst a rule is added twice, which the next reconcile deletes; never no rules."""


@contextlib.contextmanager
def plumbing_lock(name: bytes = LOCK_NAME, wait_s: float = WAIT_S) -> Iterator[bool]:
    """Hold the node's plumbing mutex for the block; yields whether it was acquired."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + wait_s
    acquired = False
    try:
        while True:
            try:
                sock.bind(name)
                acquired = True
                break
            except OSError:
                if time.monotonic() >= deadline:
                    logger.warning(
                        "node plumbing lock still held after %.0f s; going ahead without it",
                        wait_s,
                    )
                    break
                time.sleep(0.02)
        yield acquired
    finally:
        sock.close()
