"""CoreDNS's metric families, for kdns and nodecache, through prometheus-client.

Nothing here is on the query path: the collectors read the counters where they are kept (the
transports' tallies, ``kdns.serve.tally``; the resolver's, cache's and upstream clients' stats)
when Prometheus scrapes, and prometheus-client writes the text. The families, names, labels and
label values are CoreDNS's (plugin/metrics, plugin/cache, plugin/forward, plugin/kubernetes), so
its alerts and dashboards work unchanged:

* ``coredns_build_info{version,revision,goversion}`` (goversion is the Python version),
  ``coredns_panics_total`` (internal errors answering a query).
* ``coredns_dns_requests_total{server,zone,view,proto,family,type}``,
  ``coredns_dns_do_requests_total``, ``coredns_dns_responses_total{...,rcode,plugin}``, and the
  histograms ``coredns_dns_request_duration_seconds{...,type}``,
  ``coredns_dns_request_size_bytes`` and ``coredns_dns_response_size_bytes{...,proto}``.
  ``zone`` is ``.`` (kubeadm's Corefile has one server block, ``.:53``), ``view`` is empty.
* With a resolver (kdns forwarding, nodecache): ``coredns_cache_*``,
  ``coredns_proxy_request_duration_seconds{proxy_name="forward",to,rcode}``,
  ``coredns_proxy_healthcheck_failures_total{proxy_name,to}``,
  ``coredns_forward_healthcheck_broken_total``, ``coredns_forward_max_concurrent_rejects_total``.
* ``process_*`` from prometheus-client's ProcessCollector.

Every value is an exact integer count (or a sum); prometheus-client prints every digit.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from kdns.histogram import Histogram
from kdns.querylog import QueryLog
from kdns.resolver.core import Resolver, Router
from kdns.resolver.upstream import TRY_BUCKETS, UpstreamClient
from kdns.serve import tally
from kdns.serve.tcp import TCPServer
from kdns.serve.udp import UDPServer

ZONE: Final = "."
VIEW: Final = ""
PROXY_NAME: Final = "forward"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
_RCODE_NAMES: Final = tally.RCODE_NAMES


@dataclass(frozen=True, slots=True)
class Source:
    """One transport's counts: its CoreDNS ``server`` label, ``proto`` and how to read them."""

    server: str
    proto: str
    read: Callable[[], list[int]]


def transport_sources(udp_servers: Iterable[UDPServer], tcp_server: TCPServer) -> list[Source]:
    """Every transport's counts, labelled with the address it listens on."""
    sources = [
        Source(tally.server_label(*server.address), "udp", server.counts) for server in udp_servers
    ]
    for address, cells in tcp_server.cells.items():
        sources.append(Source(tally.server_label(*address), "tcp", cells.copy))
    return sources


def exposition(registry: CollectorRegistry) -> str:
    """The Prometheus text of every collector in ``registry``."""
    return generate_latest(registry).decode()


def new_registry(*collectors: Collector) -> CollectorRegistry:
    """A registry with ``collectors`` and the process metrics (``process_*``)."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    for collector in collectors:
        registry.register(collector)
    return registry


class Families(Collector):
    """A collector made of a function that yields metric families at each scrape."""

    def __init__(self, produce: Callable[[], Iterable[Metric]]) -> None:
        self.produce = produce

    def collect(self) -> Iterator[Metric]:
        yield from self.produce()


def build_info(version: str, revision: str = "") -> Metric:
    family = GaugeMetricFamily(
        "coredns_build_info",
        "A metric with a constant '1' value labeled by version, revision, and goversion from "
        "which CoreDNS was built.",
        labels=["version", "revision", "goversion"],
    )
    family.add_metric([version, revision, f"python{platform.python_version()}"], 1)
    return family


def panics(count: int) -> Metric:
    return CounterMetricFamily(
        "coredns_panics_total", "A metrics that counts the number of panics.", value=count
    )


def _histogram(
    family: HistogramMetricFamily,
    labels: list[str],
    bounds: Sequence[float],
    counts: Sequence[int],
    total: float,
) -> None:
    """Add one series from per-bucket counts (the last is +Inf), made cumulative here."""
    running = 0
    buckets: list[tuple[str, float]] = []
    for bound, n in zip((*bounds, float("inf")), counts, strict=True):
        running += n
        buckets.append((_bound_text(bound), running))
    family.add_metric(labels, buckets, total)


def _bound_text(bound: float) -> str:
    """A bucket bound as Go's strconv prints it (what CoreDNS's ``le`` labels read)."""
    if bound == float("inf"):
        return "+Inf"
    return str(int(bound)) if bound == int(bound) else repr(bound)


def dns_families(sources: Iterable[Source]) -> Iterator[Metric]:
    """CoreDNS's plugin/metrics families from the transports' tallies (summed per server and
    proto: a listen address has a UDP loop per socket and one TCP loop)."""
    summed: dict[tuple[str, str], list[int]] = {}
    for source in sources:
        cells = summed.setdefault((source.server, source.proto), tally.new_cells())
        tally.add(cells, source.read())
    requests = CounterMetricFamily(
        "coredns_dns_requests_total",
        "Counter of DNS requests made per zone, protocol and family.",
        labels=["server", "zone", "view", "proto", "family", "type"],
    )
    do_requests = CounterMetricFamily(
        "coredns_dns_do_requests_total",
        "Counter of DNS requests with DO bit set per zone.",
        labels=["server", "view", "zone"],
    )
    responses = CounterMetricFamily(
        "coredns_dns_responses_total",
        "Counter of response status codes.",
        labels=["server", "zone", "view", "rcode", "plugin"],
    )
    duration = HistogramMetricFamily(
        "coredns_dns_request_duration_seconds",
        "Histogram of the time (in seconds) each request took per zone.",
        labels=["server", "zone", "view", "type"],
    )
    request_size = HistogramMetricFamily(
        "coredns_dns_request_size_bytes",
        "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
        labels=["server", "zone", "view", "proto"],
    )
    response_size = HistogramMetricFamily(
        "coredns_dns_response_size_bytes",
        "Size of the returned response in bytes.",
        labels=["server", "zone", "view", "proto"],
    )
    do_totals: dict[str, int] = {}
    response_totals: dict[tuple[str, str, str], int] = {}
    duration_totals: dict[tuple[str, str], tuple[list[int], int]] = {}
    for (server, proto), cells in sorted(summed.items()):
        counts = tally.read_counts(cells)
        for (family, qtype), n in counts.requests.items():
            requests.add_metric([server, ZONE, VIEW, proto, family, qtype], n)
        do_totals[server] = do_totals.get(server, 0) + counts.do_requests
        for (rcode, plugin), n in counts.responses.items():
            key = (server, rcode, plugin)
            response_totals[key] = response_totals.get(key, 0) + n
        for qtype, (buckets, total_ns) in counts.duration.items():
            previous = duration_totals.get((server, qtype))
            if previous is not None:
                buckets = tally.add(list(buckets), previous[0])
                total_ns += previous[1]
            duration_totals[(server, qtype)] = (buckets, total_ns)
        labels = [server, ZONE, VIEW, proto]
        _histogram(request_size, labels, tally.SIZE_BOUNDS, *counts.request_size)
        _histogram(response_size, labels, tally.SIZE_BOUNDS, *counts.response_size)
    for server, n in sorted(do_totals.items()):
        do_requests.add_metric([server, VIEW, ZONE], n)
    for (server, rcode, plugin), n in sorted(response_totals.items()):
        responses.add_metric([server, ZONE, VIEW, rcode, plugin], n)
    for (server, qtype), (buckets, total_ns) in sorted(duration_totals.items()):
        _histogram(
            duration, [server, ZONE, VIEW, qtype], tally.DURATION_BOUNDS, buckets, total_ns / 1e9
        )
    yield from (requests, do_requests, responses, duration, request_size, response_size)


def programming_duration(histograms: dict[str, Histogram]) -> Metric:
    """CoreDNS's kubernetes plugin DNS programming latency, per service kind."""
    family = HistogramMetricFamily(
        "coredns_kubernetes_dns_programming_duration_seconds",
        "Histogram of the time (in seconds) it took to program a dns instance.",
        labels=["service_kind"],
    )
    for kind, histogram in histograms.items():
        counts, total = histogram.read()
        _histogram(family, [kind], histogram.bounds, counts, total)
    return family


def query_log_family(log: QueryLog) -> Metric:
    """What the query log did with each query offered to it while on (kdns.querylog)."""
    family = CounterMetricFamily(
        f"{log.server}_query_log_total",
        "Queries offered to the query log while it was on, by outcome: written, filtered, "
        "sampled_out, rate_limited, queue_full (a written line pushed out unwritten).",
        labels=["outcome"],
    )
    for outcome, n in log.stats.outcomes.items():
        family.add_metric([outcome], n)
    return family


def upstream_groups(router: Router) -> dict[str, UpstreamClient]:
    """Each upstream client of ``router`` by group label: ``cluster``, ``default``,
    ``stub:ZONE`` (the cluster group serves several routes; it is one group)."""
    groups: dict[str, UpstreamClient] = {}
    for route in router.routes():
        if isinstance(route.upstream, UpstreamClient):
            label = "cluster" if route.name.startswith("cluster:") else route.name
            groups.setdefault(label, route.upstream)
    return groups


def _to(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolver_families(
    resolver: Resolver, server: str, retired: dict[str, int] | None = None
) -> Iterator[Metric]:
    """CoreDNS's cache and forward families from the resolver core. ``retired``: counts of
    upstream clients a reload replaced (``UpstreamStats`` field -> total), so the counters
    never go backwards; the per-server series start again with the new clients."""
    retired = retired or {}
    cache_stats = resolver.cache.stats
    common = [server, ZONE, VIEW]
    label_names = ["server", "zones", "view"]

    def counter(name: str, help_text: str, value: int) -> Metric:
        family = CounterMetricFamily(name, help_text, labels=label_names)
        family.add_metric(common, value)
        return family

    def by_type(
        kind: type[CounterMetricFamily | GaugeMetricFamily],
        name: str,
        help_text: str,
        success: int,
        denial: int,
    ) -> Metric:
        family = kind(name, help_text, labels=["server", "type", "zones", "view"])
        family.add_metric([server, "success", ZONE, VIEW], success)
        family.add_metric([server, "denial", ZONE, VIEW], denial)
        return family

    positive, negative = resolver.cache.entries_by_kind()
    yield by_type(
        GaugeMetricFamily, "coredns_cache_entries", "The number of elements in the cache.",
        positive, negative,
    )  # fmt: skip
    yield by_type(
        CounterMetricFamily, "coredns_cache_hits_total", "The count of cache hits.",
        cache_stats.hits - cache_stats.denial_hits, cache_stats.denial_hits,
    )  # fmt: skip
    yield counter(
        "coredns_cache_misses_total",
        "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.",
        cache_stats.misses,
    )
    yield counter(
        "coredns_cache_requests_total",
        "The count of cache requests.",
        cache_stats.hits + cache_stats.misses,
    )
    yield counter(
        "coredns_cache_prefetch_total",
        "The number of times the cache has prefetched a cached item.",
        resolver.stats.prefetches,
    )
    yield counter(
        "coredns_cache_served_stale_total",
        "The number of requests served from stale cache entries.",
        resolver.stats.stale_served,
    )
    yield by_type(
        CounterMetricFamily, "coredns_cache_evictions_total", "The count of cache evictions.",
        cache_stats.evictions - cache_stats.denial_evictions, cache_stats.denial_evictions,
    )  # fmt: skip

    duration = HistogramMetricFamily(
        "coredns_proxy_request_duration_seconds",
        "Histogram of the time each request took.",
        labels=["proxy_name", "to", "rcode"],
    )
    failures = CounterMetricFamily(
        "coredns_proxy_healthcheck_failures_total",
        "Count of failed health checks per upstream.",
        labels=["proxy_name", "to"],
    )
    broken = retired.get("all_down", 0)
    rejects = retired.get("overloaded", 0)
    for client in upstream_groups(resolver.router).values():
        broken += client.stats.all_down
        rejects += client.stats.overloaded
        servers = client.config.servers
        for index, (host, port) in enumerate(servers):
            failures.add_metric([PROXY_NAME, _to(host, port)], client.health.failures[index])
        for (index, rcode), (buckets, seconds) in sorted(client.latency.read().items()):
            to = _to(*servers[index])
            name = _RCODE_NAMES[rcode] if rcode < len(_RCODE_NAMES) else str(rcode)
            _histogram(duration, [PROXY_NAME, to, name], TRY_BUCKETS, buckets, seconds)
    yield duration
    yield failures
    yield CounterMetricFamily(
        "coredns_forward_healthcheck_broken_total",
        "Counter of the number of complete failures of the healthchecks.",
        value=broken,
    )
    yield CounterMetricFamily(
        "coredns_forward_max_concurrent_rejects_total",
        "Counter of the number of queries rejected because the concurrent queries were at maximum.",
        value=rejects,
    )


def gauge(name: str, help_text: str, value: float) -> Metric:
    return GaugeMetricFamily(name, help_text, value=value)


def counter(name: str, help_text: str, value: int) -> Metric:
    return CounterMetricFamily(name, help_text, value=value)
