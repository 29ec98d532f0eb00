"""``nodecache guard``'s process: signals, the probe target, the loop (nodecache.node.guard)
and its liveness endpoint (nodecache.node.liveness)."""

from __future__ import annotations

import logging
import signal
import threading

from nodecache.config import Config, show_address
from nodecache.node.commands import Run, run_command
from nodecache.node.guard import Guard, run_guard
from nodecache.node.liveness import Heartbeat, start_endpoint
from nodecache.node.plumbing import Plumbing
from nodecache.node.probe import nodecache_answers
from nodecache.node.settings import NodeSettings, plumbing_for, probe_address, probe_note

logger = logging.getLogger("nodecache.guard")

EXIT_USAGE = 2


class ProbedPlumbing:
    """The guard's ``Installer``: the plumbing, bypassed keeping the address it probes."""

    def __init__(self, plumbing: Plumbing, probe_ip: str) -> None:
        self.plumbing = plumbing
        self.probe_ip = probe_ip

    def install(self) -> bool:
        return self.plumbing.install()

    def bypass(self) -> bool:
        return self.plumbing.bypass(keep=self.probe_ip)


def guard_main(config: Config, node: NodeSettings, run: Run = run_command) -> int:
    """Guard until SIGTERM/SIGINT; exits 0 (leaving the plumbing as it is: the cache, or the
    next guard, owns it), 2 when there is nothing to probe."""
    host, port = probe_address(config, node)
    if port == 0:
        logger.error("guard_probe: the first --listen has port 0; give --guard-probe IP:PORT")
        return EXIT_USAGE
    plumbing = plumbing_for(config, node, run)
    if not plumbing.active:
        logger.warning("no node plumbing to guard (no non-loopback listen IP, or both off)")
    note = probe_note(config, node)
    if note is not None:
        logger.warning("%s", note)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # A SIGHUP meant for the cache (reload) must not kill the guard: it has nothing to reload
    # (its rule data are the flags), so it keeps guarding.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    timeout = node.guard_timeout_s
    guard = Guard(
        ProbedPlumbing(plumbing, host),
        lambda: nodecache_answers(host, port, timeout),
        node.guard_failures,
    )
    logger.info(
        "guarding %s: probe every %g s (timeout %g s); %d failures remove %d rules%s",
        show_address(host, port),
        node.guard_interval_s,
        timeout,
        node.guard_failures,
        len(plumbing.rules) if plumbing.setup_iptables else 0,
        f" and the other addresses of interface {plumbing.interface}"
        if plumbing.setup_interface
        else "",
    )
    heartbeat = Heartbeat(node.guard_stall_s)
    endpoint = None
    if node.guard_listen is not None:
        endpoint = start_endpoint(node.guard_listen, guard, heartbeat)
    try:
        run_guard(guard, node.guard_interval_s, stop, beat=heartbeat.beat)
    finally:
        if endpoint is not None:
            endpoint.stop()
    logger.info("guard stopped (%d removals, %d installs)", guard.removals, guard.installs)
    return 0
