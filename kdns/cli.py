"""Command line: ``kdns serve | check | zonefile``. Parses argv and the config file into a
``Config``, wires the source, the runtime and the transports together, and owns exit codes.

Exit codes: 0 clean shutdown; 2 bad flags, config or snapshot (the message names the field);
1 a runtime failure such as a port that cannot be bound.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import yaml
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from kdns import __version__, logs, metrics
from kdns.admin import command as admin
from kdns.admin.snapshot import ClusterDNS, KdnsAlone
from kdns.config import TCP_KEYS, Config, ConfigError, build_config
from kdns.forwarding import KubeDnsForwarding, make_forwarder
from kdns.health import HealthServer, Route, probe_udp
from kdns.model import ClusterState, Service
from kdns.names import name_to_text
from kdns.querylog import QueryLog, http_route
from kdns.resolver.kubedns import KubeDns, overlay
from kdns.runtime import Runtime
from kdns.serve import tally
from kdns.serve.forward import Forwarder
from kdns.serve.protocol import Responder
from kdns.serve.tcp import TCPServer, bind_pair
from kdns.serve.tcplimits import TCPLimits
from kdns.serve.transfer import ZoneTransfer
from kdns.serve.udp import UDPServer
from kdns.source.manifests import ManifestError, Snapshot, SnapshotWatcher, load_snapshot
from kdns.synth.resolve import custom_names_off_grammar
from kdns.zonefile import count_by_type, render

logger = logging.getLogger("kdns")

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad flags, config or snapshot: exit 2 with this message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(message)


def _add_zone_flags(parser: argparse.ArgumentParser) -> None:
    # Defaults are None so that only flags the user passed override the config file.
    add = parser.add_argument
    add(
        "--manifests",
        action="append",
        metavar="PATH",
        help="snapshot file or directory of .yaml/.yml/.json (repeatable)",
    )
    add(
        "--zone",
        action="append",
        metavar="ZONE",
        help="cluster zone (repeatable; default cluster.local)",
    )
    add("--ttl", type=int, metavar="SECONDS", help="TTL of synthesized records (default 5)")
    add(
        "--pods",
        choices=("disabled", "insecure", "verified"),
        help="pod records (default insecure)",
    )
    add(
        "--endpoint-pod-names",
        action="store_const",
        const=True,
        default=None,
        help="name endpoints without a hostname after their pod",
    )
    add(
        "--ignore-empty-service",
        action="store_const",
        const=True,
        default=None,
        help="NXDOMAIN for ClusterIP Services without ready endpoints (CoreDNS)",
    )
    add(
        "--noendpoints",
        action="store_const",
        const=True,
        default=None,
        help="serve no endpoint records and do not watch EndpointSlices (CoreDNS)",
    )
    add(
        "--namespaces",
        action="append",
        metavar="NS",
        help="serve only these namespaces (repeatable)",
    )
    add(
        "--dns-service",
        metavar="NS/NAME",
        help="Service named as the zone's NS (default kube-system/kube-dns)",
    )
    add(
        "--loadbalance",
        choices=("round_robin", "off"),
        help="rotate the order of several A/AAAA/SRV records per query (default round_robin)",
    )
    add(
        "--hosts-file",
        metavar="PATH",
        help="hosts-file lines served as custom A/AAAA records with their PTRs",
    )
    add("--config", metavar="FILE", help="YAML file with the same keys as the flags; flags win")
    add("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    add("--log-format", choices=("text", "json"), help="log lines as text (default) or JSON")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kdns", description="Cluster DNS for Kubernetes.")
    parser.add_argument("--version", action="version", version=f"kdns {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = commands.add_parser("serve", help="answer DNS queries")
    _add_zone_flags(serve)
    serve.add_argument("--listen", action="append", metavar="HOST:PORT",
                       help="UDP and TCP address (repeatable; default 0.0.0.0:53)")  # fmt: skip
    serve.add_argument("--max-udp-size", type=int, metavar="BYTES",
                       help="ceiling on the EDNS payload honoured (default 1232)")  # fmt: skip
    _add_tcp_flags(serve)
    serve.add_argument("--kubeconfig", metavar="PATH",
                       help="without --manifests: the cluster to watch (else in-cluster, "
                       "$KUBECONFIG, ~/.kube/config)")  # fmt: skip
    serve.add_argument("--context", metavar="NAME", help="kubeconfig context to use")
    serve.add_argument("--health-listen", metavar="HOST:PORT",
                       help="/health, /ready, /metrics (0.0.0.0:8080; 'none': off)")  # fmt: skip
    serve.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help="/metrics alone (0.0.0.0:9153; 'none': off)")  # fmt: skip
    serve.add_argument("--startup-timeout", type=float, metavar="SECONDS",
                       help="serve anyway after this long if the sync is slow (5)")  # fmt: skip
    serve.add_argument("--upstream", action="append", metavar="HOST[:PORT]",
                       help="forward names outside the zones here (repeatable; default: the "
                       "nameservers in --resolv-conf; 'none' answers them REFUSED)")  # fmt: skip
    serve.add_argument("--resolv-conf", metavar="PATH",
                       help="source of the default upstreams (/etc/resolv.conf)")  # fmt: skip
    serve.add_argument("--forward-workers", type=int, metavar="N",
                       help="forwarded names: upstream fetches at once (32)")  # fmt: skip
    serve.add_argument("--forward-max-pending", type=int, metavar="N",
                       help="forwarded queries waiting; more: SERVFAIL at once (1024)")  # fmt: skip
    serve.add_argument("--forward-max-queue-wait", type=float, metavar="SECONDS",
                       help="a forwarded query queued this long is dropped, not answered "
                       "late (2)")  # fmt: skip
    serve.add_argument("--forward-max-refreshes", type=int, metavar="N",
                       help="prefetches and stale refreshes of forwarded names at once "
                       "(4; 0: off)")  # fmt: skip
    serve.add_argument("--kube-dns-configmap", metavar="NS/NAME",
                       help="follow this kube-dns ConfigMap's stubDomains and "
                       "upstreamNameservers through the API (kube-system/kube-dns)")  # fmt: skip
    serve.add_argument("--kube-dns-configmap-dir", metavar="DIR",
                       help="follow the kube-dns ConfigMap mounted here "
                       "(polled every 10 s)")  # fmt: skip
    check = commands.add_parser("check", help="validate a snapshot and summarize it")
    _add_zone_flags(check)
    zonefile = commands.add_parser("zonefile", help="print the zone as an RFC 1035 master file")
    _add_zone_flags(zonefile)
    explain = commands.add_parser(
        "explain", help="a pod's lookup of NAME query by query, asking kdns directly"
    )
    _add_zone_flags(explain)
    admin.add_flags(explain)
    return parser


TCP_FLAGS: Final = (
    ("tcp_idle_timeout", float, "SECONDS", "close a TCP connection idle this long"),
    ("tcp_write_timeout", float, "SECONDS", "abort a TCP connection not reading for this long"),
    ("tcp_max_connections", int, "N", "open TCP connections; at the cap the longest-idle goes"),
    ("tcp_max_per_client", int, "N", "open TCP connections per client address; more are refused"),
    ("tcp_max_queued_bytes", int, "BYTES", "reply bytes queued per TCP connection before it "
     "waits for the client to read"),
    ("tcp_max_buffer_bytes", int, "BYTES", "bytes held by all TCP connections before the largest "
     "holders are closed"),
    ("tcp_socket_buffer_bytes", int, "BYTES", "SO_SNDBUF and SO_RCVBUF of every TCP connection"),
)  # fmt: skip
"""The TCP limit flags (README option table): setting name, type, metavar, help."""


def _add_tcp_flags(parser: argparse.ArgumentParser) -> None:
    defaults = TCPLimits()
    for key, kind, metavar, text in TCP_FLAGS:
        default = getattr(defaults, TCP_KEYS[key])
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        parser.add_argument(
            "--" + key.replace("_", "-"), type=kind, metavar=metavar, help=f"{text} ({shown})"
        )


SETTINGS = (
    "manifests", "zone", "ttl", "pods", "endpoint_pod_names", "namespaces", "dns_service",
    "log_level", "listen", "max_udp_size", "upstream", "resolv_conf",
    "kubeconfig", "context", "health_listen", "startup_timeout", "loadbalance", "hosts_file",
    "ignore_empty_service", "noendpoints", "metrics_listen", "log_format", *TCP_KEYS,
    "forward_workers", "forward_max_pending", "forward_max_queue_wait", "forward_max_refreshes",
    "kube_dns_configmap", "kube_dns_configmap_dir",
)  # fmt: skip


def load_settings(args: argparse.Namespace) -> Config:
    """Config file values, overlaid by the flags that were given."""
    try:
        return build_config(load_values(args))
    except ConfigError as error:
        raise UsageError(str(error)) from None


def load_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings as written: the config file's, overlaid by the flags that were given."""
    values: dict[str, Any] = {}
    if args.config:
        try:
            loaded = yaml.safe_load(Path(args.config).read_text())
        except OSError as error:
            raise UsageError(f"config: cannot read {args.config}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise UsageError(f"config: {args.config} is not valid YAML: {error}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UsageError(f"config: {args.config} must hold a mapping of settings")
        values.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
    for key in SETTINGS:
        value = getattr(args, key, None)
        if value is not None:
            values[key] = value
    return values


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
        config = load_settings(args)
        logs.configure(config.log_level, config.log_format, "kdns")
        values = load_values(args)

        def load(kube_dns: KubeDns) -> Config:
            return build_config(overlay(values, kube_dns))

        if args.command == "serve" and not config.manifests:
            return serve(config, live_source(config), None, load)
        if args.command == "explain":
            sys.stdout.write(explain(args, config))
            return 0
        if not config.manifests:
            raise UsageError(f"{args.command} needs --manifests PATH (a snapshot to read)")
        # Watch from before the first load, so an edit made during it is not missed.
        watcher = SnapshotWatcher(config.manifests, on_change=lambda snap: None)
        try:
            snapshot = load_snapshot(config.manifests)
        except ManifestError as error:
            raise UsageError(f"manifests: {error}") from None
    except (UsageError, admin.ExplainError) as error:
        print(f"kdns: error: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    if snapshot.skipped:
        logger.info(
            "skipped objects of unused kinds: %s",
            ", ".join(f"{kind}={n}" for kind, n in sorted(snapshot.skipped.items())),
        )
    if args.command == "serve":
        return serve(config, None, (snapshot, watcher), load)
    runtime = Runtime(config.zone, Responder(config.max_udp_size))
    runtime.replace(snapshot.state.objects())
    table = runtime.table
    assert table is not None
    if args.command == "zonefile":
        for zone in config.zone.zones:
            sys.stdout.write(render(table.index, zone))
        return 0
    sys.stdout.write(summary(snapshot.state, count_by_type(table.index), snapshot.skipped))
    if runtime.collisions:
        names = ", ".join(name_to_text(name) for name in runtime.collisions)
        sys.stdout.write(f"custom records shadowing cluster names (custom wins): {names}\n")
    off_grammar = custom_names_off_grammar(table.index)
    if off_grammar:
        names = " ".join(name_to_text(name) for name in off_grammar)
        sys.stdout.write(
            f"custom records outside the cluster name grammar: {names}\n"
            f"  (a nodecache in front denies them on the node unless given "
            f"local_nxdomain_except: [{names.replace(' ', ', ')}])\n"
        )
    return 0


def explain(args: argparse.Namespace, config: Config) -> str:
    """``kdns explain``: offline from the snapshot, or asking ``--server``."""

    def offline(given: admin.Inputs, snapshot: Snapshot) -> str:
        dns = ClusterDNS(snapshot, config.zone, admin.outside(args, given.options))
        # kdns alone keeps no cache for the pod: a second lookup would be the same.
        answerer = lambda: KdnsAlone(dns, given.latency)  # noqa: E731
        return admin.run(given, "kdns", answerer, {}, args.json, warm=False)

    zone = ".".join(config.zone.primary_zone)
    return admin.explain_main(args, zone, config.manifests, offline, every_query_to="kdns")


def live_source(config: Config) -> Any:
    """The API client for the live source; UsageError (exit 2) when no cluster is configured.

    ``kdns.watch`` is imported only here: it pulls in the kubernetes client (about 33 MB).
    """
    from kdns.watch import ClusterConfigError, load_api_client

    try:
        return load_api_client(config.kubeconfig, config.context, os.environ)
    except ClusterConfigError as error:
        raise UsageError(str(error)) from None


def summary(state: ClusterState, records: Counter[str], skipped: Any) -> str:
    def service_kind(service: Service) -> str:
        if service.type == "ExternalName":
            return "ExternalName"
        return "headless" if service.headless else service.type

    kinds = Counter(service_kind(s) for s in state.services.values())
    ready = not_ready = 0
    for piece in state.slices.values():
        for endpoint in piece.endpoints:
            if endpoint.ready is False:
                not_ready += len(endpoint.addresses)
            else:
                ready += len(endpoint.addresses)
    lines = [
        f"namespaces: {len(state.namespaces)}",
        f"services: {len(state.services)} ("
        + ", ".join(f"{k}={n}" for k, n in sorted(kinds.items()))
        + ")",
        f"endpointslices: {len(state.slices)}",
        f"endpoints: {ready + not_ready} (ready={ready}, not-ready={not_ready})",
        f"pods: {len(state.pods)}",
        "records: " + ", ".join(f"{k}={n}" for k, n in sorted(records.items())),
    ]
    if skipped:
        lines.append("skipped: " + ", ".join(f"{k}={n}" for k, n in sorted(skipped.items())))
    return "\n".join(lines) + "\n"


def serve(
    config: Config,
    api_client: Any,
    snapshot: tuple[Snapshot, SnapshotWatcher] | None,
    load: Callable[[KubeDns], Config] | None = None,
) -> int:
    """Serve from a snapshot (with its file watcher) or from the live cluster (``api_client``).
    ``load`` rebuilds the config with a kube-dns ConfigMap overlaid (``kdns.forwarding``)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    responder = Responder(config.max_udp_size)
    runtime = Runtime(config.zone, responder, synced=snapshot is not None)
    forwarder = make_forwarder(config)
    if forwarder is not None:
        responder.forwarder = forwarder
        runtime.builder.chase_external = True
    kube_dns = None
    if forwarder is not None and load is not None and config.kube_dns.enabled:
        kube_dns = KubeDnsForwarding(load, forwarder)
        kube_dns.start(config)
    source: Any = None
    if snapshot is not None:
        runtime.replace(snapshot[0].state.objects())
    else:
        from kdns.watch import WatchSource

        runtime.replace([])  # an empty, unsynced table: would-be NXDOMAIN is SERVFAIL (R8.2)
        source = WatchSource(
            api_client,
            runtime,
            namespaces=config.zone.namespaces,
            pods=config.zone.pods == "verified",
            endpoints=not config.zone.noendpoints,
        )
        source.start()
        if source.wait_synced(config.startup_timeout_s):
            logger.info("initial lists complete; serving")
        else:
            logger.warning(
                "not synced after %.1f s; serving anyway: names that would be NXDOMAIN are "
                "answered SERVFAIL until every initial list has completed",
                config.startup_timeout_s,
            )
    try:
        pairs = [bind_pair(host, port) for host, port in config.listen]
    except OSError as error:
        logger.error("cannot bind %s: %s", config.listen, error.strerror)
        return 1
    try:
        query_log = QueryLog("kdns", config.query_log)
    except ConfigError as error:  # an output file that cannot be opened
        logger.error("%s", error)
        return EXIT_USAGE
    udp_servers = [
        UDPServer(udp, responder.answer, query_log=query_log, fast_path=responder.fast_path)
        for udp, _ in pairs
    ]
    tcp_sockets = [tcp for _, tcp in pairs]
    if config.transfer_to:
        transfer = ZoneTransfer(responder, config.transfer_to)
        tcp_server = TCPServer(
            tcp_sockets,
            None,
            config.tcp,
            peer_answer=transfer.answer,
            query_log=query_log,
        )
        logger.info("zone transfers allowed to %s", ", ".join(map(str, config.transfer_to)))
    else:
        tcp_server = TCPServer(
            tcp_sockets,
            lambda packet: responder.answer(packet, tcp=True),
            config.tcp,
            query_log=query_log,
        )
    for server in udp_servers:
        server.start()
    tcp_server.start()
    for server in udp_servers:
        logger.info("serving on %s:%d (udp+tcp)", *server.address)
    registry = metrics.new_registry(
        metrics.Families(lambda: kdns_families(runtime, source, udp_servers, tcp_server)),
        metrics.Families(lambda: [metrics.query_log_family(query_log)]),
    )
    routes = {"/querylog": http_route(query_log)}
    health = start_health(config, runtime, udp_servers[0].address, registry, routes)
    metrics_server = start_metrics(config, registry, routes)
    watcher = None
    if snapshot is not None:
        watcher = snapshot[1]

        def on_change(new: Snapshot) -> None:
            runtime.replace(new.state.objects())
            logger.info("snapshot reloaded: %d objects", len(new.state.objects()))

        watcher.on_change = on_change
        watcher.start()
    stop.wait()
    logger.info("shutting down")
    if watcher is not None:
        watcher.stop()
    if kube_dns is not None:
        kube_dns.stop()
    if source is not None:
        source.stop()
        api_client.close()
    if health is not None:
        health.stop()
    if metrics_server is not None:
        metrics_server.stop()
    tcp_server.stop()
    for server in udp_servers:
        server.stop()
    query_log.close()
    runtime.stop()
    if forwarder is not None:
        forwarder.resolver.close()
    return 0


def kdns_families(
    runtime: Runtime, source: Any, udp_servers: list[UDPServer], tcp_server: TCPServer
) -> Iterator[Metric]:
    """Every family of ``/metrics``: CoreDNS's (kdns.metrics), then kdns's own."""
    responder = runtime.responder
    yield metrics.build_info(__version__)
    yield metrics.panics(responder.errors)
    yield from metrics.dns_families(metrics.transport_sources(udp_servers, tcp_server))
    yield metrics.programming_duration(runtime.programming)
    forwarder = responder.forwarder
    if isinstance(forwarder, Forwarder):
        server = tally.server_label(*udp_servers[0].address)
        yield from metrics.resolver_families(forwarder.resolver, server)
    table = runtime.table
    yield metrics.gauge(
        "kdns_table_records",
        "(name, type) answers in the table.",
        len(table.records) if table else 0,
    )
    yield metrics.gauge("kdns_table_names", "Names in the table.", len(table.names) if table else 0)
    yield metrics.gauge(
        "kdns_table_generation",
        "Generation of the published table (also the SOA serial).",
        table.generation if table else 0,
    )
    yield metrics.gauge(
        "kdns_last_publish_seconds", "Seconds the last table publish took.", runtime.last_publish_s
    )
    yield metrics.counter(
        "kdns_internal_errors_total",
        "Queries dropped by an internal error (also coredns_panics_total).",
        responder.errors,
    )
    synced = table is not None and table.index.synced
    yield metrics.gauge(
        "kdns_synced", "1 once every initial list has completed and a table is published.",
        1 if synced else 0,
    )  # fmt: skip
    if source is not None:
        staleness = GaugeMetricFamily(
            "kdns_watch_staleness_seconds",
            "Seconds since the last watch event or bookmark, per resource.",
            labels=["resource"],
        )
        for resource, seconds in sorted(source.staleness().items()):
            staleness.add_metric([resource], seconds)
        yield staleness


def start_metrics(
    config: Config, registry: CollectorRegistry, routes: dict[str, Route]
) -> HealthServer | None:
    """``/metrics`` alone on ``--metrics-listen`` (CoreDNS's 9153); a busy port is logged, as
    for the health endpoint."""
    if config.metrics_listen is None:
        return None
    address = config.metrics_listen
    return _http_endpoint("metrics", address, None, None, registry, routes, "/metrics")


def _http_endpoint(
    name: str,
    address: tuple[str, int],
    alive: Callable[[], bool] | None,
    ready: Callable[[], tuple[bool, str]] | None,
    registry: CollectorRegistry,
    routes: dict[str, Route],
    paths: str,
) -> HealthServer | None:
    """Bind and start one HTTP endpoint, or log why not (a busy port is not fatal)."""
    host, port = address
    try:
        server = HealthServer(
            host, port, alive, ready, lambda: metrics.exposition(registry), routes=routes
        )
    except OSError as error:
        why = error.strerror
        logger.error("%s endpoint disabled: cannot bind %s:%d: %s", name, host, port, why)
        return None
    server.start()
    logger.info("%s on http://%s:%d%s", name, *server.address, paths)
    return server


def start_health(
    config: Config,
    runtime: Runtime,
    udp_address: tuple[str, int],
    registry: CollectorRegistry,
    routes: dict[str, Route],
) -> HealthServer | None:
    """``/health``, ``/ready`` and ``/metrics``; a port already in use is logged, not fatal,
    because DNS matters more than the probe endpoint (the kubelet's probes will say so)."""
    if config.health_listen is None:
        return None
    zone = config.zone.primary_zone

    def alive() -> bool:
        return probe_udp(udp_address[0], udp_address[1], zone)

    def ready() -> tuple[bool, str]:
        table = runtime.table
        if table is None:
            return False, "no answer table published yet"
        # The published table's flag, not the source's: the source says synced as soon as its
        # mark is queued behind the lists, a moment before a table holding them is served (a
        # snapshot's tables are synced from the first).
        if not table.index.synced:
            return False, "initial lists not complete"
        return True, "ready"

    return _http_endpoint(
        "health", config.health_listen, alive, ready, registry, routes,
        " (/health, /ready, /metrics)",
    )  # fmt: skip
