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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kdns import __version__
from kdns.config import Config, ConfigError, build_config
from kdns.health import HealthServer, probe_udp, render_metrics
from kdns.model import ClusterState, Service
from kdns.resolver import resolvconf
from kdns.resolver.config import ResolverConfig, UpstreamConfig
from kdns.resolver.core import Resolver
from kdns.runtime import Runtime
from kdns.serve.forward import Forwarder
from kdns.serve.protocol import Responder
from kdns.serve.tcp import TCPServer, bind_pair
from kdns.serve.udp import UDPServer
from kdns.source.manifests import ManifestError, Snapshot, SnapshotWatcher, load_snapshot
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
    add("--config", metavar="FILE", help="YAML file with the same keys as the flags; flags win")
    add("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (default INFO)")


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
    serve.add_argument("--tcp-idle-timeout", type=float, metavar="SECONDS",
                       help="close idle TCP connections after this long (default 10)")  # fmt: skip
    serve.add_argument("--kubeconfig", metavar="PATH",
                       help="without --manifests: the cluster to watch (else in-cluster, "
                       "$KUBECONFIG, ~/.kube/config)")  # fmt: skip
    serve.add_argument("--context", metavar="NAME", help="kubeconfig context to use")
    serve.add_argument("--health-listen", metavar="HOST:PORT",
                       help="/health, /ready, /metrics (0.0.0.0:8080; 'none': off)")  # fmt: skip
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
    check = commands.add_parser("check", help="validate a snapshot and summarize it")
    _add_zone_flags(check)
    zonefile = commands.add_parser("zonefile", help="print the zone as an RFC 1035 master file")
    _add_zone_flags(zonefile)
    return parser


SETTINGS = (
    "manifests", "zone", "ttl", "pods", "endpoint_pod_names", "namespaces", "dns_service",
    "log_level", "listen", "max_udp_size", "tcp_idle_timeout", "upstream", "resolv_conf",
    "kubeconfig", "context", "health_listen", "startup_timeout", "forward_workers",
    "forward_max_pending", "forward_max_queue_wait", "forward_max_refreshes",
)  # fmt: skip


def load_settings(args: argparse.Namespace) -> Config:
    """Config file values, overlaid by the flags that were given."""
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
    try:
        return build_config(values)
    except ConfigError as error:
        raise UsageError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
        config = load_settings(args)
        logging.basicConfig(
            level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if args.command == "serve" and not config.manifests:
            return serve(config, live_source(config), None)
        if not config.manifests:
            raise UsageError(f"{args.command} needs --manifests PATH (a snapshot to read)")
        # Watch from before the first load, so an edit made during it is not missed.
        watcher = SnapshotWatcher(config.manifests, on_change=lambda snap: None)
        try:
            snapshot = load_snapshot(config.manifests)
        except ManifestError as error:
            raise UsageError(f"manifests: {error}") from None
    except UsageError as error:
        print(f"kdns: error: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    if snapshot.skipped:
        logger.info(
            "skipped objects of unused kinds: %s",
            ", ".join(f"{kind}={n}" for kind, n in sorted(snapshot.skipped.items())),
        )
    if args.command == "serve":
        return serve(config, None, (snapshot, watcher))
    runtime = Runtime(config.zone, Responder(config.max_udp_size))
    runtime.replace(snapshot.state.objects())
    table = runtime.table
    assert table is not None
    if args.command == "zonefile":
        for zone in config.zone.zones:
            sys.stdout.write(render(table.index, zone))
        return 0
    sys.stdout.write(summary(snapshot.state, count_by_type(table.index), snapshot.skipped))
    return 0


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
    config: Config, api_client: Any, snapshot: tuple[Snapshot, SnapshotWatcher] | None
) -> int:
    """Serve from a snapshot (with its file watcher) or from the live cluster (``api_client``)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    responder = Responder(config.max_udp_size)
    runtime = Runtime(config.zone, responder, synced=snapshot is not None)
    forwarder = make_forwarder(config)
    if forwarder is not None:
        responder.forwarder = forwarder
        runtime.builder.chase_external = True
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
    udp_servers = [UDPServer(udp, responder.answer) for udp, _ in pairs]
    tcp_server = TCPServer(
        [tcp for _, tcp in pairs],
        lambda packet: responder.answer(packet, tcp=True),
        config.tcp_idle_timeout_s,
    )
    for server in udp_servers:
        server.start()
    tcp_server.start()
    for server in udp_servers:
        logger.info("serving on %s:%d (udp+tcp)", *server.address)
    health = start_health(config, runtime, udp_servers[0].address, source)
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
    if source is not None:
        source.stop()
        api_client.close()
    if health is not None:
        health.stop()
    tcp_server.stop()
    for server in udp_servers:
        server.stop()
    runtime.stop()
    if forwarder is not None:
        forwarder.resolver.close()
    return 0


def start_health(
    config: Config, runtime: Runtime, udp_address: tuple[str, int], source: Any
) -> HealthServer | None:
    """``/health``, ``/ready`` and ``/metrics``; a port already in use is logged, not fatal,
    because DNS matters more than the probe endpoint (the kubelet's probes will say so)."""
    if config.health_listen is None:
        return None
    zone = config.zone.primary_zone

    def alive() -> bool:
        return probe_udp(udp_address[0], udp_address[1], zone)

    def ready() -> tuple[bool, str]:
        if runtime.table is None:
            return False, "no answer table published yet"
        if source is not None and not source.synced():
            return False, "initial lists not complete"
        return True, "ready"

    def metrics() -> str:
        table = runtime.table
        values = {
            "kdns_table_records": float(len(table.records)) if table else 0.0,
            "kdns_table_names": float(len(table.names)) if table else 0.0,
            "kdns_table_generation": float(table.generation) if table else 0.0,
            "kdns_last_publish_seconds": runtime.last_publish_s,
            "kdns_internal_errors": float(runtime.responder.errors),
            "kdns_synced": 1.0 if ready()[0] else 0.0,
        }
        labelled: dict[str, dict[str, float]] = {}
        if source is not None:
            labelled["resource:kdns_watch_staleness_seconds"] = dict(source.staleness())
        return render_metrics(values, labelled)

    host, port = config.health_listen
    try:
        server = HealthServer(host, port, alive, ready, metrics)
    except OSError as error:
        logger.error("health endpoint disabled: cannot bind %s:%d: %s", host, port, error.strerror)
        return None
    server.start()
    logger.info("health on http://%s:%d (/health, /ready, /metrics)", *server.address)
    return server


def make_forwarder(config: Config) -> Forwarder | None:
    """The upstream path for names outside our zones, or None (``--upstream none``)."""
    servers = config.upstream
    if servers is None:
        servers = tuple((ip, 53) for ip in resolvconf.read(config.resolv_conf).nameservers)
    # Forwarding to ourselves would loop until the timeout.
    own = {(host, port) for host, port in config.listen}
    kept = tuple(server for server in servers if server not in own)
    if len(kept) != len(servers):
        logger.warning("ignoring upstreams that are our own listen addresses: %s", own)
    if not kept:
        logger.info("forwarding disabled: names outside the zones are answered REFUSED")
        return None
    resolver = Resolver.from_config(
        ResolverConfig(
            cluster_zones=tuple(".".join(zone) for zone in config.zone.zones),
            cluster_upstream=None,
            reverse_zones=(),
            upstream=UpstreamConfig(kept),
            workers=config.forward_workers,
            max_pending=config.forward_max_pending,
            max_queue_wait_s=config.forward_max_queue_wait_s,
            max_refreshes=config.forward_max_refreshes,
        )
    )
    resolver.start()
    logger.info("forwarding other names to %s", ", ".join(f"{h}:{p}" for h, p in kept))
    return Forwarder(resolver)
