"""The running nodecache: listeners, resolver, health endpoint, reloads and the drain on exit.

``NodeCache`` wires kdns's pieces together and owns their lifecycle; it reads no argv and
installs no signal handler (``cli`` does). Its jobs:

* ``start``: bind every ``--listen`` address (UDP, then TCP on the same port, so port 0 works as
  in kdns), start the resolver (health probers, prefetch thread), the UDP loops
  (``kdns.serve.udp``), the TCP server (``kdns.serve.tcp``) and the health endpoint
  (``kdns.health``). A DNS address that cannot be bound is fatal (``OSError``); a health address
  that cannot be bound is logged and serving goes on, as kdns does: DNS on the node matters more
  than the probe port, and a liveness probe that cannot connect restarts us anyway (the usual
  cause, another process on :8080, is kops#9245).
* ``reload``: rebuild the config (file + flags + resolv.conf) and apply it with
  ``Resolver.reconfigure``, which keeps every cache entry. An invalid config is rejected with a
  log line naming the field, and the running one stays. Restart-only settings are kept as they
  are, with a warning.
* ``shutdown``: stop taking queries (the handler drops new ones), give queries waiting on an
  upstream up to ``drain_timeout_s`` to get their replies, then close the listeners. With a
  successor bound to our addresses (an upgrade), hand over first (nodecache.node.handover) and
  leave the node plumbing to it; without one, remove the rules before draining and the
  interface after.
* node plumbing (``nodecache.node``): the interface before binding, the rules from a
  ``NodeSync`` thread once our listener answers; listeners bind with SO_REUSEPORT.
* ``/health``: the UDP loop answers a real query (``probe_udp`` against our first listener; the
  handler answers the probe name locally, so upstream trouble never fails liveness).
* ``/ready``: listeners bound and upstream groups configured, and not draining. It does not
  require the upstreams to be reachable: with serve-stale a node cache is still useful while the
  cluster DNS is down, and a readiness gate on a shared dependency would mark every node's cache
  unready at once. The body and ``/metrics`` show each upstream server's health.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from kdns.config import ConfigError
from kdns.health import HealthServer, Route, probe_udp
from kdns.metrics import upstream_groups
from kdns.querylog import QueryLog, http_route
from kdns.resolver.core import Resolver
from kdns.serve.tcp import TCPServer, bind_tcp
from kdns.serve.udp import UDPServer, bind_udp
from nodecache.config import Config, show_address
from nodecache.handler import PROBE_ZONE, QueryHandler
from nodecache.metrics import Metrics
from nodecache.node.commands import Run, run_command
from nodecache.node.handover import ensure_tcp_migrate, hand_over, successor_bound
from nodecache.node.probe import nodecache_answers
from nodecache.node.settings import NodeSettings, plumbing_for, probe_address, probe_note
from nodecache.node.sync import NodeSync
from nodecache.searchpath.service import SearchPathService

logger = logging.getLogger(__name__)


class NodeCache:
    """One nodecache process's serving state. ``load`` rebuilds the config for a reload."""

    def __init__(
        self,
        config: Config,
        load: Callable[[], Config],
        node: NodeSettings | None = None,
        run: Run = run_command,
    ) -> None:
        """``node``: the interface and iptables plumbing (nodecache.node); None for none."""
        self.config = config
        self._load = load
        self.searchpath = SearchPathService.build(config.searchpath, config.resolver.cluster_zones)
        self.resolver = Resolver.from_config(
            config.resolver, policy=None if self.searchpath is None else self.searchpath.policy
        )
        self.handler = QueryHandler(self.resolver, config.max_udp_size)
        self.query_log = QueryLog("nodecache", config.query_log)
        self.metrics = Metrics(self.resolver, self.handler)
        self.metrics.query_log = self.query_log
        if self.searchpath is not None:
            self.metrics.extra = self.searchpath.render
        self.udp_servers: list[UDPServer] = []
        self.tcp_server: TCPServer | None = None
        self.health: HealthServer | None = None
        self.metrics_server: HealthServer | None = None
        """``/metrics`` alone on ``metrics_listen`` (NodeLocal's 9253)."""
        self.serving = False
        self._reload_lock = threading.Lock()
        self.node = node
        self.plumbing = plumbing_for(config, node, run) if node is not None else None
        if self.plumbing is not None and self.plumbing.active:
            self.metrics.node = self.plumbing.render
        self.node_sync: NodeSync | None = None
        self.handed_over = False

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve; raises OSError (nothing left running) if a DNS address is taken."""
        udp_socks: list[socket.socket] = []
        tcp_socks: list[socket.socket] = []
        if self.plumbing is not None and self.plumbing.active:
            self.plumbing.ensure_interface()  # our listen IPs must be local before we bind them
            ensure_tcp_migrate()
        try:
            for host, port in self.config.listen:
                udp, tcp = _bind_pair(host, port)
                udp_socks.append(udp)
                tcp_socks.append(tcp)
        except OSError:
            for sock in udp_socks + tcp_socks:
                sock.close()
            raise
        self.resolver.start()
        if self.searchpath is not None:
            self.searchpath.start(self.resolver)
        self.udp_servers = [
            UDPServer(
                sock,
                peer_answer=self.handler.udp,
                query_log=self.query_log,
                fast_path=self.handler.fast_path,
            )
            for sock in udp_socks
        ]
        self.tcp_server = TCPServer(
            tcp_socks,
            None,
            self.config.tcp,
            peer_answer=self.handler.tcp,
            query_log=self.query_log,
        )
        self.metrics.udp_servers = self.udp_servers
        self.metrics.tcp_server = self.tcp_server
        for server in self.udp_servers:
            server.start()
        self.tcp_server.start()
        self.serving = True
        for server in self.udp_servers:
            logger.info("serving on %s (udp+tcp)", show_address(*server.address))
        self._start_health()
        self._start_metrics()
        if self.plumbing is not None and self.plumbing.active and self.node is not None:
            # The rules go in from this thread once our listener answers (nodecache.node.sync).
            note = probe_note(self.config, self.node)
            if note is not None:
                logger.warning("%s", note)
            self.node_sync = NodeSync(self.plumbing, self.answers, self.node.sync_interval_s)
            self.node_sync.start()

    def answers(self) -> bool:
        """Whether nodecache answers on the probe address (the guard's; the first listener)."""
        host, port = probe_address(self.config, self.node)
        if port == 0 and self.udp_servers:
            port = self.udp_servers[0].address[1]
        timeout = self.node.guard_timeout_s if self.node is not None else 0.5
        return nodecache_answers(host, port, timeout)

    def _start_health(self) -> None:
        if self.config.health_listen is None:
            logger.info("health endpoint off (--health-listen none)")
            return
        host, port = self.config.health_listen
        try:
            # SO_REUSEPORT, as the DNS listeners: in a DaemonSet surge update the new pod binds
            # the same port on the node while the old one hands over (nodecache.node.handover);
            # without it the new pod would run with no /health once the old one exits.
            self.health = HealthServer(
                host, port, self.alive, self.ready, self.metrics.render, reuse_port=True,
                routes=self._routes(),
            )  # fmt: skip
        except OSError as error:
            logger.error(
                "cannot bind the health endpoint %s: %s; serving DNS without /health, "
                "/ready and /metrics",
                show_address(host, port),
                error.strerror,
            )
            return
        self.health.start()
        logger.info("health on %s (/health, /ready, /metrics)", show_address(*self.health.address))

    def _routes(self) -> dict[str, Route]:
        return {"/querylog": http_route(self.query_log)}

    def _start_metrics(self) -> None:
        if self.config.metrics_listen is None:
            return
        host, port = self.config.metrics_listen
        try:
            # SO_REUSEPORT for the same reason as the health endpoint (surge updates).
            self.metrics_server = HealthServer(
                host, port, None, None, self.metrics.render, reuse_port=True,
                routes=self._routes(),
            )  # fmt: skip
        except OSError as error:
            logger.error(
                "cannot bind the metrics endpoint %s: %s; /metrics stays on the health port",
                show_address(host, port),
                error.strerror,
            )
            return
        self.metrics_server.start()
        logger.info("metrics on %s (/metrics)", show_address(*self.metrics_server.address))

    def shutdown(self) -> bool:
        """Stop taking queries, let queries in flight finish (bounded), close everything.
        Returns whether every query in flight got its reply.

        With a successor on our addresses (an upgrade: nodecache.node.handover) we step aside,
        answer what is queued, drain, and leave the node plumbing to it; a bound successor that
        does not answer our probe in time (still starting) owns the plumbing all the same, so
        we serve on and drain, but remove nothing. Without one the rules go first (retried
        while the xtables lock is busy, for up to ``drain_timeout_s``), so new queries take the
        Service path to kdns at once while ours drain; the interface goes last, once no reply
        of ours needs its addresses, and only if the rules are gone: a NOTRACK rule left for an
        address that is no longer local would send the node's DNS off the node."""
        if self.node_sync is not None:
            self.node_sync.stop()  # nothing may reinstall the rules from here on
        successor = successor_bound(self.udp_servers)
        self.handed_over = hand_over(self.udp_servers, self.answers, successor=successor)
        teardown = (
            self.plumbing is not None
            and self.node is not None
            and not self.node.skip_teardown
            and not successor
        )
        if successor and not self.handed_over:
            logger.warning("a successor is bound to our addresses: leaving the node plumbing to it")
        rules_gone = True
        if self.handed_over:
            if self.tcp_server is not None:
                # Connections still being accepted by our listener at close are reset unless
                # net.ipv4.tcp_migrate_req=1 moves them to the successor (README).
                self.tcp_server.stop_accepting()
            drained = all(server.wait_drained() for server in self.udp_servers)
            logger.info("handed over; receive queues %s", "empty" if drained else "not empty")
        elif teardown:
            assert self.plumbing is not None
            rules_gone = self.plumbing.remove_rules_within(self.config.drain_timeout_s)
        logger.info("shutting down: no new queries; %d in flight", self.handler.inflight)
        self.handler.drain()
        finished = self.handler.wait_idle(self.config.drain_timeout_s)
        if not finished:
            logger.warning(
                "%d queries still waiting after %.1f s; closing anyway",
                self.handler.inflight,
                self.config.drain_timeout_s,
            )
        for server in self.udp_servers:
            server.stop()
        if self.tcp_server is not None:
            self.tcp_server.stop()
        if self.health is not None:
            self.health.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.query_log.close()
        if self.searchpath is not None:
            self.searchpath.stop()
        self.resolver.close()
        self.serving = False
        if teardown and rules_gone:
            assert self.plumbing is not None
            self.plumbing.remove_interface()
        elif teardown:
            assert self.plumbing is not None
            logger.error(
                "our iptables rules are still in: keeping interface %s, so the addresses they "
                "match stay local (without it the node's DNS queries would leave the node)",
                self.plumbing.interface,
            )
        logger.info("stopped")
        return finished

    # --- reload --------------------------------------------------------------------------------

    def reload(self, why: str) -> str:
        """Re-read the config and apply it, keeping the cache. Returns applied, unchanged or
        rejected (also counted in ``nodecache_reloads_total``)."""
        with self._reload_lock:
            try:
                return self._reload(why)
            except ConfigError as error:
                logger.error(
                    "config reload (%s) rejected: %s; keeping the previous config", why, error
                )
            except Exception:
                # Never let a reload take the server down: the running config keeps serving.
                logger.exception("config reload (%s) failed; keeping the previous config", why)
            self.metrics.count_reload("rejected")
            return "rejected"

    def _reload(self, why: str) -> str:
        """The reload itself; raises ConfigError for an invalid config."""
        new = self._load()
        for note in new.notes:
            logger.warning("%s", note)
        kept = self.config.restart_only_changes(new)
        if kept:
            logger.warning(
                "config reload (%s): %s changed, which needs a restart; keeping the running values",
                why,
                ", ".join(kept),
            )
        applied = self.config.keeping_restart_only(new)
        if applied == self.config:
            logger.info("config reload (%s): nothing changed", why)
            self.metrics.count_reload("unchanged")
            return "unchanged"
        if applied.query_log != self.config.query_log:
            # First: an output that cannot be opened rejects the reload before anything changed.
            self.query_log.configure(applied.query_log)
        if applied.resolver != self.config.resolver:
            old_router = self.resolver.router
            self.resolver.reconfigure(applied.resolver)  # and the per-route limits
            self.metrics.retire(old_router)
        if applied.log_level != self.config.log_level:
            logging.getLogger().setLevel(applied.log_level)
        self.config = applied
        logger.info("config reloaded (%s); cache kept (%d entries)", why, len(self.resolver.cache))
        self.metrics.count_reload("applied")
        return "applied"

    # --- health callbacks ----------------------------------------------------------------------

    def alive(self) -> bool:
        """The UDP loop answers: one real query to our first listener, answered locally."""
        if not self.serving or not self.udp_servers:
            return False
        host, port = self.udp_servers[0].address
        return probe_udp(host, port, PROBE_ZONE)

    def ready(self) -> tuple[bool, str]:
        if not self.serving:
            return False, "not serving yet"
        if self.handler.draining:
            return False, "shutting down"
        lines = ["ready"]
        for label, client in sorted(upstream_groups(self.resolver.router).items()):
            states = []
            for index, (host, port) in enumerate(client.config.servers):
                state = "down" if client.health.is_down(index) else "up"
                states.append(f"{show_address(host, port)} {state}")
            transport = client.config.transport.value
            lines.append(f"upstream {label} ({transport}): {', '.join(states)}")
        if self.config.resolver.upstream is None:
            lines.append("upstream default: none (names outside the routes are REFUSED)")
        return True, "\n".join(lines)


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on the same address. Port 0 binds a random UDP port and TCP takes
    the same one; if another process holds that TCP port, another random port is tried."""
    for _attempt in range(20 if port == 0 else 1):
        # SO_REUSEPORT: a new nodecache binds beside us during an upgrade (nodecache.node.handover).
        udp = bind_udp(host, port, reuse_port=True)
        try:
            return udp, bind_tcp(host, udp.getsockname()[1], reuse_port=True)
        except OSError:
            udp.close()
            if port != 0:
                raise
    raise OSError(f"no port free for both UDP and TCP on {host}")


class ConfigWatcher:
    """Notices a changed config file by polling its stat (mtime, size, inode: a Kubernetes
    ConfigMap update swaps a symlink, which changes the inode)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen = self._signature()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None  # mid-swap or deleted: wait for it to come back
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def changed(self) -> bool:
        current = self._signature()
        if current is None or current == self._seen:
            return False
        self._seen = current
        return True
