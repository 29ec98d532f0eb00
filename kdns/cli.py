"""Command line: ``kdns serve | check | zonefile``. Parses argv and the config file into a
``Config``, wires the source, the runtime and the transports together, and owns exit codes.

Exit codes: 0 clean shutdown; 2 bad flags, config or snapshot (the message names the field);
1 a runtime failure such as a port that cannot be bound.
"""

from __future__ import annotations

import argparse
import logging
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
    serve.add_argument("--upstream", action="append", metavar="HOST[:PORT]",
                       help="forward names outside the zones here (repeatable; default: the "
                       "nameservers in --resolv-conf; 'none' answers them REFUSED)")  # fmt: skip
    serve.add_argument("--resolv-conf", metavar="PATH",
                       help="source of the default upstreams (/etc/resolv.conf)")  # fmt: skip
    check = commands.add_parser("check", help="validate a snapshot and summarize it")
    _add_zone_flags(check)
    zonefile = commands.add_parser("zonefile", help="print the zone as an RFC 1035 master file")
    _add_zone_flags(zonefile)
    return parser


SETTINGS = (
    "manifests", "zone", "ttl", "pods", "endpoint_pod_names", "namespaces", "dns_service",
    "log_level", "listen", "max_udp_size", "tcp_idle_timeout", "upstream", "resolv_conf",
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
        if not config.manifests:
            raise UsageError(
                "no source: pass --manifests PATH to serve a snapshot of Kubernetes objects"
            )
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
        return serve(config, snapshot.state, watcher)
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


def serve(config: Config, state: ClusterState, watcher: SnapshotWatcher) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    responder = Responder(config.max_udp_size)
    runtime = Runtime(config.zone, responder)
    forwarder = make_forwarder(config)
    if forwarder is not None:
        responder.forwarder = forwarder
        runtime.builder.chase_external = True
    runtime.replace(state.objects())
    try:
        pairs = [bind_pair(host, port) for host, port in config.listen]
        udp_socks = [udp for udp, _ in pairs]
        tcp_socks = [tcp for _, tcp in pairs]
    except OSError as error:
        logger.error("cannot bind %s: %s", config.listen, error.strerror)
        return 1
    udp_servers = [UDPServer(sock, responder.answer) for sock in udp_socks]
    tcp_server = TCPServer(
        tcp_socks, lambda packet: responder.answer(packet, tcp=True), config.tcp_idle_timeout_s
    )
    for server in udp_servers:
        server.start()
    tcp_server.start()
    for server in udp_servers:
        logger.info("serving on %s:%d (udp+tcp)", *server.address)

    def on_change(snapshot: Snapshot) -> None:
        runtime.replace(snapshot.state.objects())
        logger.info("snapshot reloaded: %d objects", len(snapshot.state.objects()))

    watcher.on_change = on_change
    watcher.start()
    stop.wait()
    logger.info("shutting down")
    watcher.stop()
    tcp_server.stop()
    for server in udp_servers:
        server.stop()
    if forwarder is not None:
        forwarder.resolver.close()
    return 0


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
        )
    )
    resolver.start()
    logger.info("forwarding other names to %s", ", ".join(f"{h}:{p}" for h, p in kept))
    return Forwarder(resolver)
