"""``nodecache guard``: the node plumbing never outlives a cache that stopped answering.

NodeLocal's rules stay behind when node-cache is SIGKILLed, OOM-killed or hangs: the kube-dns IP
is then a local address with nobody answering, and DNS on the node is down until the container
restarts (kubernetes/dns#438; ../shared/docs/nodecache.md §1.4). The guard runs beside the cache
(a second container in the DaemonSet, with NET_ADMIN) and asks it a real DNS question every
``--guard-interval`` (1 s), each probe waiting at most ``--guard-timeout``. After
``--guard-failures`` (3) failures in a row it removes the rules and, from the interface, every
listen IP but the probe's (``Plumbing.bypass``), so pod queries to the kube-dns IP take the
normal Service path (kube-proxy's DNAT) to kdns. The interface and the probe address stay: the
probe must still reach a cache that was only hung (and the cache's own /health asks the same
address), so the guard reinstalls within a probe of the cache answering again, instead of
waiting for the cache's next ``--sync-interval`` to re-create an interface it had deleted.

What it removes and installs comes from the same flags as the cache's (``Plumbing`` built from
the same config), never from anything the dead process held. Both sides reconcile the same data
idempotently from ``iptables-save``, so the guard's install after the cache's own (a restarted
cache installs once its listener answers) is a no-op, not a second copy. The guard acts on
changes only: one removal when the failures reach N, one install at the next answer, so a cache
that is merely slow for a probe or two (fewer than N) loses nothing, and while the plumbing is
down the guard does not keep deleting what a recovering cache puts back.

Probes and clock are injected (``Guard.step``), so the state machine is unit-tested without
sockets, sleeps or root. The loop's own liveness (a heartbeat and ``/health``, for the kubelet)
is ``nodecache.node.liveness``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)


class Installer(Protocol):
    def install(self) -> bool: ...

    def bypass(self) -> bool: ...


class State(enum.Enum):
    UNKNOWN = "unknown"
    """Just started: nothing decided yet."""
    INSTALLED = "installed"
    """The cache answers; the plumbing is in."""
    REMOVED = "removed"
    """The cache stopped answering; the plumbing is out (kube-dns fallback)."""


class Guard:
    """The state machine: ``step`` runs one probe and acts on the result."""

    def __init__(self, installer: Installer, answers: Callable[[], bool], failures: int) -> None:
        self.installer = installer
        self.answers = answers
        self.failures_to_remove = failures
        self.state = State.UNKNOWN
        self.failures = 0
        """Consecutive failed probes."""
        self.removals = 0
        self.installs = 0
        self.answered = 0
        self.failed = 0
        """Probes by result, since start."""

    def step(self) -> str | None:
        """One probe; returns ``"installed"`` or ``"removed"`` when it changed the node."""
        if self.answers():
            self.answered += 1
            if self.failures >= self.failures_to_remove:
                logger.info("the cache answers again after %d failed probes", self.failures)
            self.failures = 0
            if self.state is State.INSTALLED:
                return None
            # A failed install (iptables busy) leaves the state as it was: the next answered
            # probe tries again.
            if self.installer.install():
                self.state = State.INSTALLED
                self.installs += 1
                logger.info("cache answers: node plumbing installed")
                return "installed"
            return None
        self.failed += 1
        self.failures += 1
        if self.failures < self.failures_to_remove or self.state is State.REMOVED:
            return None
        logger.warning(
            "the cache failed %d probes in a row: removing the node plumbing "
            "(queries to the kube-dns IP fall back to the cluster DNS)",
            self.failures,
        )
        if self.installer.bypass():
            self.state = State.REMOVED
            self.removals += 1
            return "removed"
        return None


def run_guard(
    guard: Guard,
    interval_s: float,
    stop: threading.Event,
    clock: Callable[[], float] = time.monotonic,
    beat: Callable[[], None] = lambda: None,
) -> None:
    """Step every ``interval_s`` (measured from each step's start) until ``stop`` is set;
    ``beat`` (``nodecache.node.liveness.Heartbeat.beat``) before and after each step, so a
    step that never returns stops the beats."""
    next_at = clock()
    while not stop.is_set():
        beat()
        try:
            guard.step()
        except Exception:  # keep guarding whatever one step hit
            logger.exception("guard step failed")
        beat()
        next_at += interval_s
        now = clock()
        if next_at < now:  # a slow step (iptables lock): do not burst to catch up
            next_at = now
        stop.wait(next_at - now)
