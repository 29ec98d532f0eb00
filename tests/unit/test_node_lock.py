"""The cache and the guard never reconcile the rules at the same time (nodecache.node.lock).

Without the lock, two writers that both read iptables-save before either commits both add
every rule (seen in a real run: 48 rules for 24). The fake iptables here holds each commit until
the other writer has read; the lock makes the result exactly the wanted rules, and a holder killed with
SIGKILL releases it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from nodecache.node.commands import Result
from nodecache.node.lock import plumbing_lock
from nodecache.node.plumbing import Plumbing
from tests.unit.node_fakes import FakeNode

LISTEN = [("169.254.20.10", 53), ("10.96.0.10", 53)]


@contextlib.contextmanager
def no_lock() -> Iterator[bool]:
    yield True


def commits_after_both_read(barrier: threading.Barrier) -> Callable[[list[str]], Result | None]:
    """Hold each commit until the other writer has read too (or 0.3 s: with the lock it
    never will, it is waiting for the lock)."""

    def hook(argv: list[str]) -> Result | None:
        if argv[0].endswith("-restore"):
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(0.3)
        return None

    return hook


@pytest.mark.parametrize(
    ("locked", "copies"),
    [
        pytest.param(False, 2, id="without-the-lock-every-rule-twice"),
        pytest.param(True, 1, id="with-the-lock-every-rule-once"),
    ],
)
def test_two_writers(locked: bool, copies: int) -> None:
    name = b"\0kdns-test-" + uuid.uuid4().hex.encode()
    lock: Callable[[], contextlib.AbstractContextManager[bool]] = (
        (lambda: plumbing_lock(name)) if locked else no_lock
    )
    fake = FakeNode(fail=commits_after_both_read(threading.Barrier(2)))
    writers = [Plumbing(LISTEN, 8080, fake, lock=lock) for _ in range(2)]  # type: ignore[arg-type]
    threads = [threading.Thread(target=w.ensure_rules) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(fake.rules()) == copies * len(writers[0].rules)


def test_a_holder_killed_with_sigkill_releases_the_lock() -> None:
    name = b"\0kdns-test-" + uuid.uuid4().hex.encode()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import socket, sys, time\n"
         "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
         f"s.bind({name!r})\nprint('held', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with plumbing_lock(name, wait_s=0.2) as acquired:
            assert not acquired  # held by the other process
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(5)
        with plumbing_lock(name, wait_s=2.0) as acquired:
            assert acquired
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(5)
