"""The guard's own liveness: a heartbeat its probe loop beats, and the HTTP endpoint that says
whether the loop still runs (``/health``) and what the guard has done (``/metrics``).

A hung guard (a probe or an ``iptables`` call that never returns, a deadlock) leaves the node
without its fallback and says nothing. ``run_guard`` beats the ``Heartbeat`` before and after
every step; ``/health`` is 200 while the last beat is at most ``--guard-stall`` seconds old and
503 after, so the kubelet's liveness probe restarts a guard whose loop stopped. The stall bound
must cover one slow step: a probe (``--guard-timeout``) plus the plumbing's commands, each of
which waits at most 5 s for the xtables lock (``iptables -w 5``).

The endpoint listens on ``--guard-listen`` (off by default; the DaemonSet gives it a port of its
own, 9254, beside the cache's 9253). With hostNetwork the port is the node's, and during a
rolling update the old and the new pod's guards run on the same node at once, so it binds with
SO_REUSEPORT, as the cache's health port does: until the old pod is gone, a probe may be
answered by either guard. A busy port is logged, not fatal: the guard's job is the fallback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kdns.health import HealthServer
from nodecache.node.guard import Guard, State

logger = logging.getLogger(__name__)


class Heartbeat:
    """When the probe loop last made progress; ``alive`` while that is recent enough."""

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.clock = clock
        self.last = clock()

    def beat(self) -> None:
        self.last = self.clock()

    def age(self) -> float:
        return max(0.0, self.clock() - self.last)

    def alive(self) -> bool:
        return self.age() <= self.stall_s


def health(heartbeat: Heartbeat) -> tuple[bool, str]:
    """``/health``'s verdict and body."""
    age = heartbeat.age()
    if heartbeat.alive():
        return True, "ok"
    return False, (
        f"guard loop stalled: no probe step for {age:.0f} s (--guard-stall {heartbeat.stall_s:g})"
    )


def render_metrics(guard: Guard, heartbeat: Heartbeat) -> str:
    """The guard's series, Prometheus text format (integers printed exactly)."""
    series = [
        ("nodecache_guard_fallback_active", "gauge",
         "1 while the guard has removed the node plumbing (queries fall back to kube-dns).",
         [("", int(guard.state is State.REMOVED))]),
        ("nodecache_guard_consecutive_failures", "gauge",
         "Failed probes of the cache in a row.", [("", guard.failures)]),
        ("nodecache_guard_probes_total", "counter", "Probes of the cache, by result.",
         [('{result="answered"}', guard.answered), ('{result="failed"}', guard.failed)]),
        ("nodecache_guard_removals_total", "counter",
         "Times the guard removed the node plumbing.", [("", guard.removals)]),
        ("nodecache_guard_installs_total", "counter",
         "Times the guard installed the node plumbing.", [("", guard.installs)]),
    ]  # fmt: skip
    lines: list[str] = []
    for name, kind, help_text, values in series:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{labels} {value:d}" for labels, value in values]
    name = "nodecache_guard_last_step_age_seconds"
    lines += [
        f"# HELP {name} Seconds since the probe loop last made progress (/health fails past "
        "--guard-stall).",
        f"# TYPE {name} gauge",
        f"{name} {heartbeat.age():.3f}",
    ]
    return "\n".join(lines) + "\n"


def start_endpoint(
    address: tuple[str, int], guard: Guard, heartbeat: Heartbeat
) -> HealthServer | None:
    """Serve ``/health``, ``/ready`` (the same verdict) and ``/metrics`` on ``address``; None
    when the port cannot be bound."""
    host, port = address
    try:
        server = HealthServer(
            host,
            port,
            lambda: heartbeat.alive(),
            lambda: health(heartbeat),
            lambda: render_metrics(guard, heartbeat),
            reuse_port=True,
        )
    except OSError as error:
        logger.error("guard endpoint disabled: cannot bind %s:%d: %s", host, port, error.strerror)
        return None
    server.start()
    logger.info("guard liveness on http://%s:%d (/health, /metrics)", *server.address)
    return server
