"""Command line: ``nodecache serve | check | guard``. Parses argv and the config file into a
``Config``, installs the signal handlers, runs the ``NodeCache`` and owns the exit codes.

``explain`` and ``tune`` (nodecache.admin.commands) are admin tools with flags of their own.

``guard`` (nodecache.node.guard) takes the same flags as ``serve``, so it removes and installs
exactly what the cache installs.

Exit codes: 0 clean shutdown (SIGTERM or SIGINT); 2 bad flags or config (the message names the
field); 1 a DNS listen address that cannot be bound.

Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the config (file, flags, resolv.conf)
without flushing the cache. The config file is also polled about once a second and reloaded
when it changes. Handlers only queue a command: the main thread does the work.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from kdns import logs
from kdns.kubedns import KubeDnsFollower
from kdns.kubedns_sources import start_source
from kdns.resolver.kubedns import KubeDns, overlay
from nodecache import __version__
from nodecache.admin import commands as admin
from nodecache.config import (
    FLAG_SETTINGS,
    Config,
    ConfigError,
    build_config,
    load_file,
    show_address,
)
from nodecache.node.settings import (
    NodeSettings,
    add_guard_flags,
    add_node_flags,
    describe_node,
    node_settings,
)
from nodecache.searchpath.settings import describe_searchpath
from nodecache.service import ConfigWatcher, NodeCache

logger = logging.getLogger("nodecache")

EXIT_USAGE: Final = 2
EXIT_RUNTIME: Final = 1
POLL_INTERVAL_S: Final = 1.0
"""How often the config file's mtime is checked."""
KUBE_DNS_STARTUP_WAIT_S: Final = 2.0
"""How long start waits for the kube-dns ConfigMap before serving without it."""


class UsageError(Exception):
    """Bad flags: exit 2 with this message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(message)


def _add_flags(parser: argparse.ArgumentParser) -> None:
    # Defaults are None so that only the flags given override the config file.
    add = parser.add_argument
    add(
        "--listen",
        action="append",
        metavar="IP:PORT",
        help="UDP and TCP address to serve (repeatable, required; in production "
        "169.254.20.10:53 and the kube-dns ClusterIP)",
    )
    add(
        "--cluster-zone",
        action="append",
        metavar="ZONE",
        help="zone answered by the cluster DNS (repeatable; default cluster.local)",
    )
    add(
        "--cluster-upstream",
        action="append",
        metavar="HOST:PORT",
        help="the cluster DNS (kdns), asked over TCP for the cluster and reverse zones "
        "(repeatable, required)",
    )
    add(
        "--upstream",
        action="append",
        metavar="HOST:PORT",
        help="server for every other name, over UDP with TCP fallback (repeatable; default: "
        "the nameservers in --host-resolv-conf; 'none' refuses them)",
    )
    add(
        "--host-resolv-conf",
        metavar="PATH",
        help="where the node's nameservers are read from (default /etc/resolv.conf)",
    )
    add(
        "--config",
        metavar="FILE",
        help="YAML file with the flags' settings and more (stub domains, TTLs, cache, "
        "prefetch, serve-stale, timeouts); flags win; reloaded on change and SIGHUP",
    )
    add(
        "--health-listen",
        metavar="IP:PORT",
        help="/health, /ready and /metrics (default 0.0.0.0:8080; 'none' turns it off)",
    )
    add(
        "--metrics-listen",
        metavar="IP:PORT",
        help="/metrics alone, on NodeLocal's port (default 0.0.0.0:9253; 'none' turns it off)",
    )
    add(
        "--max-udp-size",
        type=int,
        metavar="BYTES",
        help="ceiling on the EDNS payload honoured for clients (default 1232)",
    )
    add(
        "--tcp-max-connections",
        type=int,
        metavar="N",
        help="open client TCP connections; at the cap the longest-idle one is evicted "
        "(default 1024)",
    )
    add(
        "--tcp-max-per-client",
        type=int,
        metavar="N",
        help="open TCP connections per client address; more are refused (default 64)",
    )
    add("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    add(
        "--kube-dns-configmap",
        metavar="NS/NAME",
        help="follow stubDomains and upstreamNameservers of this ConfigMap through the API "
        "(e.g. kube-system/kube-dns; off by default)",
    )
    add(
        "--kube-dns-configmap-dir",
        metavar="PATH",
        help="the same, from the ConfigMap mounted at PATH (NodeLocal's /etc/kube-dns), "
        "read every 10 s",
    )
    add("--log-format", choices=("text", "json"), help="log lines as text (default) or JSON")
    _add_route_limit_flags(parser)
    _add_searchpath_flags(parser)


def _add_route_limit_flags(parser: argparse.ArgumentParser) -> None:
    """Each route's own capacity (README "Capacity per route"); every route gets these."""
    add = parser.add_argument
    add(
        "--workers",
        type=int,
        metavar="N",
        help="per route: upstream fetches running at once, one thread each (default 32; "
        "restart to change)",
    )
    add(
        "--max-pending",
        type=int,
        metavar="N",
        help="per route: client queries waiting on its upstream; more are answered SERVFAIL "
        "(or stale) at once (default 1024)",
    )
    add(
        "--max-queue-wait-s",
        metavar="SECONDS",
        help="per route: a query that waited this long for a worker is dropped, not answered "
        "late (default 2; also 500ms, 2s)",
    )
    add(
        "--max-refreshes",
        type=int,
        metavar="N",
        help="per route: prefetches and stale refreshes queued or running at once, always "
        "leaving a worker to clients (default 4; 0 turns background refreshes off)",
    )


def _add_searchpath_flags(parser: argparse.ArgumentParser) -> None:
    """ndots absorption (nodecache.searchpath; README "Search-path absorption")."""
    add = parser.add_argument
    add(
        "--autopath",
        choices=("on", "off"),
        help="walk a ClusterFirst pod's search path on the node and answer its first "
        "expansion with a CNAME to the name that exists (default on)",
    )
    add(
        "--local-nxdomain",
        choices=("on", "off"),
        help="answer NXDOMAIN on the node for cluster-zone names that cannot exist (the "
        "zone's name shape) and names under a missing namespace (RFC 8020 cut) (default on)",
    )
    add(
        "--local-nxdomain-except",
        action="append",
        metavar="NAME",
        help="a kdns custom record name in a cluster zone that the zone's name shape would "
        "deny (legacy.cluster.local): its subtree goes to kdns (repeatable)",
    )
    add(
        "--autopath-clients",
        action="append",
        metavar="CIDR",
        help="trust these source addresses as ClusterFirst pods without asking the API "
        "(repeatable; for clusters where every pod is ClusterFirst, and tests)",
    )
    add(
        "--autopath-namespaces",
        action="append",
        metavar="NS",
        help="autopath only for pods in these namespaces (repeatable; default all)",
    )
    add(
        "--node-name",
        metavar="NAME",
        help="this node, for the Pod watch that tells which clients are ClusterFirst pods "
        "(default $NODE_NAME, from the downward API)",
    )
    add(
        "--kubeconfig",
        metavar="PATH",
        help="cluster for the Pod watch (default: in-cluster when KUBERNETES_SERVICE_HOST is set)",
    )


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nodecache", description="Node-local DNS cache for Kubernetes.")
    parser.add_argument("--version", action="version", version=f"nodecache {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in (
        commands.add_parser("serve", help="serve DNS on the node-local addresses"),
        commands.add_parser("check", help="validate the settings and print them"),
        commands.add_parser(
            "guard",
            help="beside the cache: remove the node plumbing while it does not answer "
            "(give it the cache's flags)",
        ),
    ):
        _add_flags(command)
        add_node_flags(command)
        add_guard_flags(command)
    admin.add_parsers(commands)
    return parser


def load_config(args: argparse.Namespace, kube_dns: KubeDns | None = None) -> Config:
    """The config file's settings, overlaid by the flags that were given, then by the kube-dns
    ConfigMap where the file and flags leave room (``kdns.resolver.kubedns.overlay``)."""
    values: dict[str, Any] = load_file(args.config) if args.config else {}
    for key in FLAG_SETTINGS:
        value = getattr(args, key, None)
        if value is not None:
            values[key] = value
    if kube_dns is not None:
        values = overlay(values, kube_dns)
    return build_config(values, config_file=args.config)


def describe(config: Config) -> str:
    """A readable summary of the effective settings (``nodecache check``)."""
    resolver = config.resolver

    def servers(group: Any) -> str:
        listed = ", ".join(show_address(host, port) for host, port in group.servers)
        return f"{listed} ({group.transport.value})"

    lines = [
        "listen: " + ", ".join(show_address(host, port) for host, port in config.listen),
        "health: "
        + ("off" if config.health_listen is None else show_address(*config.health_listen)),
        "metrics: "
        + ("off" if config.metrics_listen is None else show_address(*config.metrics_listen)),
        f"cluster zones: {', '.join(resolver.cluster_zones)}; reverse zones: "
        f"{', '.join(resolver.reverse_zones)}",
    ]
    if resolver.cluster_upstream is not None:
        lines.append(f"cluster upstream: {servers(resolver.cluster_upstream)}")
    for zone, group in resolver.stub_domains:
        lines.append(f"stub domain {zone}: {servers(group)}")
    if resolver.upstream is None:
        lines.append("upstream: none (other names are REFUSED)")
    else:
        lines.append(f"upstream: {servers(resolver.upstream)} from {config.upstream_source}")
    for zone, ttl in resolver.zone_ttls():
        lines.append(
            f"ttl {zone}: success {ttl.success_min_s}-{ttl.success_max_s} s, "
            f"denial {ttl.denial_min_s}-{ttl.denial_max_s} s"
        )
    ttl = resolver.cache.default_ttl
    lines.append(
        f"ttl (other): success {ttl.success_min_s}-{ttl.success_max_s} s, "
        f"denial {ttl.denial_min_s}-{ttl.denial_max_s} s"
    )
    cache, prefetch, stale = resolver.cache, resolver.prefetch, resolver.stale
    lines += [
        f"cache: {cache.max_entries} entries, {cache.max_bytes} bytes, "
        f"SERVFAIL cached {cache.servfail_s} s",
        f"prefetch: {'on' if prefetch.enabled else 'off'} (min_hits {prefetch.min_hits}, "
        f"lead {prefetch.lead_percent}%, keep_warm_ttls {prefetch.keep_warm_ttls})",
        f"serve_stale: {stale.mode.value}, max {stale.max_stale_s:g} s, ttl {stale.ttl_s} s, "
        f"verify_timeout {stale.verify_timeout_s:g} s",
    ]
    if resolver.cluster_upstream is not None:
        group = resolver.cluster_upstream
        lines.append(
            f"upstream timeouts: {group.try_timeout_s:g} s per try, {group.overall_timeout_s:g} s "
            f"per query, max_concurrent {group.max_concurrent}"
        )
    lines.append(
        f"per route: {resolver.workers} workers, max_pending {resolver.max_pending}, "
        f"max_queue_wait {resolver.max_queue_wait_s:g} s, max_refreshes {resolver.max_refreshes}"
    )
    tcp = config.tcp
    lines.append(
        f"tcp clients: {tcp.max_connections} connections ({tcp.max_per_client} per address), "
        f"idle {tcp.idle_timeout_s:g} s, write {tcp.write_timeout_s:g} s, "
        f"{tcp.max_queued_bytes} bytes queued each, {tcp.max_buffer_bytes} bytes in all"
    )
    lines.extend(describe_searchpath(config.searchpath))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
        if args.command in ("explain", "tune"):
            return admin.main(args)
        # Watch from before the first load, so an edit made during it is not missed.
        watcher = ConfigWatcher(args.config) if args.config else None
        config = load_config(args)
        node = node_settings(args)
    except (UsageError, ConfigError) as error:
        sys.stderr.write(f"nodecache: error: {error}\n")
        return EXIT_USAGE
    logs.configure(config.log_level, config.log_format, "nodecache")
    for note in config.notes:
        logger.warning("%s", note)
    if args.command == "check":
        sys.stdout.write(describe(config) + describe_node(config, node))
        return 0
    if args.command == "guard":
        from nodecache.node.run import guard_main

        return guard_main(config, node)
    return serve(config, lambda kube_dns: load_config(args, kube_dns), watcher, node)


def serve(
    config: Config,
    load: Callable[[KubeDns | None], Config],
    watcher: ConfigWatcher | None,
    settings: NodeSettings | None = None,
) -> int:
    commands: queue.SimpleQueue[str] = queue.SimpleQueue()
    # SimpleQueue.put is reentrant, so a handler may run in the middle of the main loop's get.
    signal.signal(signal.SIGTERM, lambda *_: commands.put("stop"))
    signal.signal(signal.SIGINT, lambda *_: commands.put("stop"))
    signal.signal(signal.SIGHUP, lambda *_: commands.put("reload"))
    follower = KubeDnsFollower(load, lambda: commands.put("kube-dns"))
    source = None
    if config.kube_dns.enabled:
        source = start_source(config.kube_dns, follower, config.searchpath.kubeconfig)
        # Start with the ConfigMap if it comes quickly; else it applies by reload when it does.
        if follower.seen.wait(KUBE_DNS_STARTUP_WAIT_S):
            config = load(follower.current)
    node = NodeCache(config, lambda: load(follower.current), node=settings or NodeSettings())
    try:
        node.start()
    except OSError as error:
        where = ", ".join(show_address(host, port) for host, port in config.listen)
        logger.error("cannot bind %s: %s", where, error.strerror or error)
        node.resolver.close()
        return EXIT_RUNTIME
    logger.info(
        "nodecache %s: cluster zones %s; upstream from %s",
        __version__,
        ", ".join(config.resolver.cluster_zones),
        config.upstream_source,
    )
    while True:
        try:
            command = commands.get(timeout=POLL_INTERVAL_S)
        except queue.Empty:
            command = "poll"
        if command == "stop":
            break
        if command == "reload":
            if watcher is not None:
                watcher.changed()  # this reload reads the file too: one reload, not two
            node.reload("SIGHUP")
        elif command == "kube-dns":
            node.reload("kube-dns ConfigMap changed")
        elif watcher is not None and watcher.changed():
            node.reload(f"{watcher.path} changed")
    if source is not None:
        source.stop()
    node.shutdown()
    return 0
