"""The ``explain`` command's flags and inputs, shared by ``kdns explain`` and ``nodecache
explain``: which resolv.conf, which libc, offline (``--manifests``) or live (``--server``),
and the output. Errors raise ``ExplainError`` with a message naming the flag; the CLIs turn it
into exit code 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kdns.admin import explain, libc, lookup, render
from kdns.admin.libc import ResolverOptions
from kdns.admin.live import LiveError, LiveServer
from kdns.admin.outside import Outside, OutsideZoneError
from kdns.admin.podconf import DEFAULT_CLUSTER_DNS, PodConfError, for_pod, resolv_conf
from kdns.admin.snapshot import DEFAULT_LATENCY, Latency
from kdns.resolver.config import Address, parse_address
from kdns.source.manifests import ManifestError, Snapshot, load_snapshot


class ExplainError(ValueError):
    """Bad explain flags (the message names the flag)."""


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The flags both CLIs share (each adds its own ``--manifests`` and zone flags)."""
    add = parser.add_argument
    add("name", metavar="NAME", help="the name the application looks up (getaddrinfo)")
    add("--libc", choices=libc.LIBCS, default=libc.GLIBC, help="the pod's libc (default glibc)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--resolv-conf", metavar="FILE", help="the pod's /etc/resolv.conf")
    where.add_argument("--namespace", metavar="NS",
                       help="a ClusterFirst pod in NS, with the kubelet's defaults")  # fmt: skip
    where.add_argument("--pod", metavar="NS/NAME",
                       help="that Pod (its dnsPolicy and dnsConfig.searches), from the "
                       "snapshot, or from the API with --kubeconfig or without "
                       "--manifests")  # fmt: skip
    add("--host-search", action="append", metavar="DOMAIN", default=[],
        help="with --namespace/--pod: the node's search domains, which the kubelet appends "
        "(repeatable)")  # fmt: skip
    add("--cluster-dns", metavar="IP", default=DEFAULT_CLUSTER_DNS,
        help="with --namespace/--pod: the pod's nameserver "
        f"(default {DEFAULT_CLUSTER_DNS})")  # fmt: skip
    add("--server", metavar="HOST:PORT",
        help="ask this live server instead of answering offline from --manifests")  # fmt: skip
    add("--metrics", metavar="URL",
        help="with --server: nodecache's /metrics, read around each query to say how it was "
        "answered")  # fmt: skip
    add("--outside-zone", action="append", metavar="FILE", default=[],
        help="offline: a master file answering names outside the cluster (repeatable)")  # fmt: skip
    add("--rtt-kdns-ms", type=float, default=DEFAULT_LATENCY.kdns_ms,
        help="latency estimate: a round trip to kdns "
        f"(default {DEFAULT_LATENCY.kdns_ms})")  # fmt: skip
    add("--rtt-upstream-ms", type=float, default=DEFAULT_LATENCY.upstream_ms,
        help="latency estimate: a round trip upstream "
        f"(default {DEFAULT_LATENCY.upstream_ms})")  # fmt: skip
    add("--kubeconfig", metavar="PATH",
        help="--pod from the API: the cluster (else in-cluster, $KUBECONFIG, "
        "~/.kube/config)")  # fmt: skip
    add("--context", metavar="NAME", help="--pod from the API: the kubeconfig context")
    add("--json", action="store_true", help="print JSON instead of the table")


@dataclass(frozen=True, slots=True)
class Inputs:
    name: str
    libc: str
    options: ResolverOptions
    latency: Latency
    server: Address | None
    metrics: str | None


def inputs(args: argparse.Namespace, zone: str, snapshot: Snapshot | None) -> Inputs:
    """The lookup to explain, from the flags (module docstring)."""
    if args.resolv_conf:
        try:
            text = Path(args.resolv_conf).read_text()
        except OSError as error:
            raise ExplainError(f"--resolv-conf: cannot read {args.resolv_conf}: "
                               f"{error.strerror}") from None  # fmt: skip
    elif args.namespace:
        text = resolv_conf(args.namespace, zone, args.host_search, cluster_dns=args.cluster_dns)
    elif args.pod:
        text = _pod_resolv_conf(args, zone, snapshot)
    else:
        raise ExplainError("explain needs --resolv-conf FILE, --namespace NS or --pod NS/NAME")
    server = None
    if args.server:
        try:
            server = parse_address(args.server)
        except ValueError as error:
            raise ExplainError(f"--server: {error}") from None
    elif args.metrics:
        raise ExplainError("--metrics: only with --server")
    for flag in ("rtt_kdns_ms", "rtt_upstream_ms"):
        if getattr(args, flag) < 0:
            raise ExplainError(f"--{flag.replace('_', '-')}: must be >= 0")
    if not args.name.strip(". "):
        raise ExplainError("NAME: empty")
    latency = Latency(kdns_ms=args.rtt_kdns_ms, upstream_ms=args.rtt_upstream_ms)
    return Inputs(
        args.name.strip(), args.libc, libc.read_options(text), latency, server, args.metrics
    )


def _pod_resolv_conf(args: argparse.Namespace, zone: str, snapshot: Snapshot | None) -> str:
    namespace, sep, name = args.pod.partition("/")
    if not sep or not namespace or not name:
        raise ExplainError(f"--pod: expected NS/NAME, got {args.pod!r}")
    if snapshot is None or args.kubeconfig:
        # Only here: the kubernetes client is loaded for this lookup alone.
        from kdns.admin.podapi import PodFetchError, fetch_pod

        try:
            pod = fetch_pod(namespace, name, args.kubeconfig, args.context)
        except PodFetchError as error:
            raise ExplainError(f"--pod: {error}") from None
    else:
        found = snapshot.state.pods.get((namespace, name))
        if found is None:
            raise ExplainError(f"--pod: no Pod {namespace}/{name} in the snapshot")
        pod = found
    try:
        return for_pod(pod, zone, args.host_search, args.cluster_dns)
    except PodConfError as error:
        raise ExplainError(f"--pod: {error}") from None


def explain_main(
    args: argparse.Namespace,
    zone: str,
    manifests: Sequence[str] | None,
    offline: Callable[[Inputs, Snapshot], str],
    every_query_to: str = "",
) -> str:
    """The command: live with ``--server``, else ``offline(inputs, snapshot)``."""
    snapshot = None
    if manifests:
        try:
            snapshot = load_snapshot(manifests)
        except ManifestError as error:
            raise ExplainError(f"--manifests: {error}") from None
    given = inputs(args, zone, snapshot)
    if given.server is not None:
        return run_live(given, args.json, every_query_to)
    if snapshot is None:
        raise ExplainError("explain needs --manifests PATH (offline) or --server HOST:PORT")
    return offline(given, snapshot)


def outside(args: argparse.Namespace, options: libc.ResolverOptions) -> Outside:
    """The offline outside world: the ``--outside-zone`` files, and the pod's search domains
    outside the cluster assumed missing."""
    zones = []
    for path in args.outside_zone:
        try:
            zones.append((path, Path(path).read_text()))
        except OSError as error:
            raise ExplainError(f"--outside-zone: cannot read {path}: {error.strerror}") from None
    try:
        return Outside(zones, missing=options.search)
    except OutsideZoneError as error:
        raise ExplainError(f"--outside-zone: {error}") from None


def run(
    given: Inputs,
    server_label: str,
    answerer: Callable[[], lookup.Answerer],
    variants: Mapping[str, Callable[[], lookup.Answerer]],
    as_json: bool,
    warm: bool = True,
) -> str:
    """Explain and render."""
    explanation = explain.explain(
        given.name, given.options, given.libc, server_label, answerer, variants, warm
    )
    return render.as_json(explanation) if as_json else render.text(explanation)


def run_live(given: Inputs, as_json: bool, every_query_to: str = "") -> str:
    """``--server``: the lookup as typed and with a trailing dot, asked of the server now.
    ``every_query_to``: the server is not on the node (``kdns``), so every query leaves it."""
    assert given.server is not None
    host, port = given.server
    server = LiveServer(given.server, given.metrics, every_query_to)
    try:
        label = f"{host}:{port} {render.LIVE}"
        return run(given, label, lambda: server, {}, as_json, warm=False)
    except LiveError as error:
        raise ExplainError(f"--server: {error}") from None
