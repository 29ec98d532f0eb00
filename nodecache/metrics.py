"""Every nodecache metric, declared once, collected for ``/metrics`` through prometheus-client.

CoreDNS's families (NodeLocal is CoreDNS: ``kdns.metrics``) come first, then nodecache's own.
The numbers live where they are counted (the transports' tallies, ``ResolverStats``,
``CacheStats``, ``UpstreamStats``, ``HandlerStats``: plain ints, no locks on the hot path); this
module only reads them. Counters end in ``_total``; every labelled series is present from the
start (pre-initialised to 0). The search path's and the node plumbing's series come through
the same ``Metric`` writer; a family written twice is one family (one HELP, one TYPE).

A reload replaces the upstream clients (``Resolver.reconfigure``), and with them their
counters; ``retire`` folds the old clients' counts into a running total per upstream group so
the exported counters never go backwards.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.core import Metric as Family

from kdns import metrics
from kdns.metrics import upstream_groups
from kdns.querylog import QueryLog
from kdns.resolver.core import Resolver, Router
from kdns.resolver.upstream import UpstreamStats
from kdns.serve import tally
from kdns.serve.tcp import TCPServer
from kdns.serve.udp import UDPServer
from nodecache import __version__
from nodecache.config import show_address
from nodecache.handler import QueryHandler

RELOAD_RESULTS: Final = ("applied", "unchanged", "rejected")

Metric = Callable[[str, str, str, Iterable[tuple[str, float]]], None]
"""``metric(name, type, help, [(labels, value)...])``: writes one metric's lines."""

_UPSTREAM_HELP: Final = {
    "queries": "Queries sent to the group (each may try several servers).",
    "replies": "Queries answered with NOERROR or NXDOMAIN.",
    "failures": "Queries that ended without a usable reply (answered SERVFAIL or stale).",
    "timeouts": "Tries that timed out.",
    "unreachable": "Tries refused or failed at the socket.",
    "mismatched": "Replies dropped for a wrong ID, QR, opcode or question (spoofing attempts).",
    "garbage": "Replies dropped because they did not parse.",
    "truncated": "UDP replies with TC=1, retried over TCP.",
    "failovers": "Tries that went to another server after one failed.",
    "overloaded": "Queries refused locally: max_concurrent in flight.",
    "tcp_connects": "TCP connections opened.",
    "marked_down": "Times a server was marked down.",
    "recovered": "Times a down server came back.",
    "probes": "Health probes sent to down servers.",
}

_RESOLVER: Final = (
    # (metric, ResolverStats field, help)
    ("nodecache_queries_total", "queries", "Client queries that reached the resolver."),
    ("nodecache_cache_hits_total", "hits", "Queries answered from a fresh cache entry."),
    ("nodecache_cache_misses_total", "misses", "Queries with no usable cache entry."),
    ("nodecache_cache_stale_served_total", "stale_served", "Stale answers served (RFC 8767)."),
    ("nodecache_cache_prefetches_total", "prefetches", "Entries refreshed before expiry."),
    ("nodecache_fetches_total", "fetches", "Upstream fetches started (misses, refreshes)."),
    ("nodecache_coalesced_total", "coalesced", "Misses that joined a fetch in flight."),
    ("nodecache_refreshes_total", "refreshes", "Refreshes of expired entries."),
    ("nodecache_fetch_failures_total", "failures", "Fetches that got no usable answer."),
    ("nodecache_servfail_total", "servfail", "SERVFAIL replies sent for upstream failures."),
    ("nodecache_refused_total", "refused", "Queries for names no route covers (REFUSED)."),
    (
        "nodecache_overloaded_total",
        "overloaded",
        "Queries over their route's max_pending (SERVFAIL or stale), all routes.",
    ),
    (
        "nodecache_expired_total",
        "expired",
        "Queries dropped after waiting max_queue_wait_s for a worker, all routes.",
    ),
    (
        "nodecache_internal_shed_total",
        "internal_shed",
        "Search-path probes answered SERVFAIL at once: their route's workers were all busy.",
    ),
    (
        "nodecache_dropped_records_total",
        "dropped_records",
        "Records removed by the bailiwick rule.",
    ),
    ("nodecache_chased_total", "chased", "CNAME targets resolved through their own route."),
)

_CACHE: Final = (
    ("nodecache_cache_evictions_total", "evictions", "Entries evicted to stay within bounds."),
    ("nodecache_cache_drops_total", "drops", "Replies not cached: question did not match."),
    ("nodecache_cache_uncacheable_total", "uncacheable", "Replies not cacheable (no SOA, ...)."),
    (
        "nodecache_cache_kept_last_good_total",
        "kept_last_good",
        "SERVFAILs that did not replace a last-known-good answer.",
    ),
)


class Metrics:
    """Renders ``/metrics``; owns the reload counters and the retired upstream totals."""

    def __init__(self, resolver: Resolver, handler: QueryHandler) -> None:
        self.resolver = resolver
        self.handler = handler
        self.udp_servers: list[UDPServer] = []
        self.tcp_server: TCPServer | None = None
        """The transports whose tallies make CoreDNS's coredns_dns_* families."""
        self.query_log: QueryLog | None = None
        self.reloads = dict.fromkeys(RELOAD_RESULTS, 0)
        self._retired: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self.extra: Callable[[Metric], None] | None = None
        """More series (``nodecache.searchpath.service.SearchPathService.render``)."""
        self.node: Callable[[Metric], None] | None = None
        """The node plumbing's series (``nodecache.node.plumbing.Plumbing.render``)."""

    def count_reload(self, result: str) -> None:
        with self._lock:
            self.reloads[result] += 1

    def retire(self, router: Router) -> None:
        """Keep the counts of ``router``'s clients (swapped out by a reload)."""
        with self._lock:
            for label, client in upstream_groups(router).items():
                totals = self._retired.setdefault(label, {})
                for name, value in _counts(client.stats).items():
                    totals[name] = totals.get(name, 0) + value

    def render(self) -> str:
        """The whole ``/metrics`` text (the process metrics included)."""
        return metrics.exposition(metrics.new_registry(metrics.Families(self.families)))

    def families(self) -> Iterator[Family]:
        """CoreDNS's families, then nodecache's own."""
        resolver, handler = self.resolver, self.handler
        resolver.absorb_hits()  # the C loop's cache hits, counted in the entries and stats
        yield metrics.build_info(__version__)
        yield metrics.panics(handler.stats.internal_errors)
        udp_servers, tcp_server = self.udp_servers, self.tcp_server
        if tcp_server is not None:
            yield from metrics.dns_families(metrics.transport_sources(udp_servers, tcp_server))
        server = tally.server_label(*udp_servers[0].address) if udp_servers else "dns://:53"
        with self._lock:
            retired: dict[str, int] = {}
            for counts in self._retired.values():
                for name, value in counts.items():
                    retired[name] = retired.get(name, 0) + value
        yield from metrics.resolver_families(resolver, server, retired)
        if self.query_log is not None:
            yield metrics.query_log_family(self.query_log)
        yield from self._own()

    def _own(self) -> Iterator[Family]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        label_names: dict[str, tuple[str, ...]] = {}

        def metric(
            name: str, kind: str, help_text: str, series: Iterable[tuple[str, float]]
        ) -> None:
            family = families.get(name)
            if family is not None and (family.type != kind or family.documentation != help_text):
                raise ValueError(f"metric {name} is declared twice, differently")
            for labels, value in series:
                pairs = _labels(labels)
                if family is None:
                    made = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                    family = families[name] = made(name, help_text, labels=list(pairs))
                    label_names[name] = tuple(pairs)
                if label_names[name] != tuple(pairs):
                    raise ValueError(f"metric {name}: series with other labels {labels}")
                family.add_metric(list(pairs.values()), value)
            if family is None:  # a family with no series yet: still declared
                made = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                families[name] = made(name, help_text, labels=[])
                label_names[name] = ()

        resolver, handler = self.resolver, self.handler
        metric("nodecache_build_info", "gauge", "Version of nodecache.",
               [(f'{{version="{__version__}"}}', 1)])  # fmt: skip
        for name, attribute, help_text in _RESOLVER:
            metric(name, "counter", help_text, [("", getattr(resolver.stats, attribute))])
        metric(
            "nodecache_cache_fast_hits_total",
            "counter",
            "Cache hits answered by the shortcut without a full parse, in Python or by the C "
            "loop (part of cache_hits).",
            [("", handler.shortcut_hits)],
        )
        metric(
            "nodecache_cache_c_hits_total",
            "counter",
            "Cache hits the C loop served from the cache's views (part of cache_fast_hits).",
            [("", resolver.cache.stats.view_hits)],
        )
        metric(
            "nodecache_searchpath_memo_answers_total",
            "counter",
            "Search-path answers (local NXDOMAIN, autopath) served from the policy's memo "
            "before any parsing.",
            [("", handler.stats.remembered)],
        )
        for name, attribute, help_text in _CACHE:
            metric(name, "counter", help_text, [("", getattr(resolver.cache.stats, attribute))])
        metric("nodecache_cache_entries", "gauge", "Entries in the cache.",
               [("", len(resolver.cache))])  # fmt: skip
        metric("nodecache_cache_bytes", "gauge", "Bytes charged to the cache's byte bound.",
               [("", resolver.cache.size_bytes)])  # fmt: skip
        routes = sorted(dict(resolver.stats.by_route).items())
        metric("nodecache_route_queries_total", "counter",
               "Queries that needed an upstream, by route.",
               [(f'{{route="{_escape(route)}"}}', n) for route, n in routes])  # fmt: skip
        _route_capacity(metric, resolver)
        metric("nodecache_bad_queries_total", "counter",
               "Queries screened out: dropped (responses, runts) or rejected with an error.",
               [('{action="dropped"}', handler.stats.dropped),
                ('{action="rejected"}', handler.stats.rejected)])  # fmt: skip
        metric("nodecache_drained_queries_total", "counter",
               "Queries dropped while shutting down.", [("", handler.stats.drained)])  # fmt: skip
        metric("nodecache_health_probes_total", "counter",
               "Liveness probe queries answered.", [("", handler.stats.probes)])  # fmt: skip
        metric("nodecache_inflight_queries", "gauge",
               "Client queries waiting for an upstream.", [("", handler.inflight)])  # fmt: skip
        metric("nodecache_draining", "gauge", "1 while shutting down.",
               [("", 1 if handler.draining else 0)])  # fmt: skip

        groups = upstream_groups(resolver.router)
        with self._lock:
            retired = {label: dict(counts) for label, counts in self._retired.items()}
            reloads = dict(self.reloads)
        labels = sorted(set(groups) | set(retired))
        for field_name, help_text in _UPSTREAM_HELP.items():
            series = []
            for label in labels:
                value = retired.get(label, {}).get(field_name, 0)
                if label in groups:
                    value += getattr(groups[label].stats, field_name)
                series.append((f'{{upstream="{_escape(label)}"}}', value))
            metric(f"nodecache_upstream_{field_name}_total", "counter", help_text, series)
        up = []
        for label, client in sorted(groups.items()):
            for index, (host, port) in enumerate(client.config.servers):
                server = show_address(host, port)
                value = 0 if client.health.is_down(index) else 1
                up.append((f'{{upstream="{_escape(label)}",server="{server}"}}', value))
        metric("nodecache_upstream_up", "gauge",
               "1 if the server is considered healthy, 0 while marked down.", up)  # fmt: skip
        metric("nodecache_reloads_total", "counter", "Config reloads by result.",
               [(f'{{result="{r}"}}', reloads[r]) for r in RELOAD_RESULTS])  # fmt: skip
        if self.extra is not None:
            self.extra(metric)
        if self.node is not None:
            self.node(metric)
        yield from families.values()


_LANE_COUNTERS: Final = (
    # (metric, LaneStats field, help)
    ("nodecache_route_overflows_total", "overflows",
     "Client queries answered SERVFAIL (or stale) at once: max_pending were waiting on the route."),
    ("nodecache_route_expired_total", "expired",
     "Client queries dropped after waiting max_queue_wait_s for one of the route's workers."),
    ("nodecache_route_abandoned_total", "abandoned",
     "Queued fetches not run because every query waiting on them had been dropped."),
    ("nodecache_route_refreshes_skipped_total", "refreshes_skipped",
     "Prefetches and stale refreshes not started: the route's max_refreshes were in use."),
    ("nodecache_route_fetches_total", "fetches", "Fetches the route's workers ran."),
)  # fmt: skip

_LANE_GAUGES: Final = (
    ("nodecache_route_waiting_queries", "waiting",
     "Client queries waiting on the route (queued or in flight), at most max_pending."),
    ("nodecache_route_queued_fetches", "queued", "Fetches waiting for one of the route's workers."),
    ("nodecache_route_busy_workers", "busy", "The route's workers running a fetch."),
)  # fmt: skip


def _route_capacity(metric: Metric, resolver: Resolver) -> None:
    """Each route's own capacity (``kdns.resolver.lanes``), by route."""
    lanes = sorted(resolver.lanes().items())
    for name, attribute, help_text in _LANE_COUNTERS:
        metric(name, "counter", help_text,
               [(f'{{route="{_escape(route)}"}}', getattr(lane.stats, attribute))
                for route, lane in lanes])  # fmt: skip
    for name, attribute, help_text in _LANE_GAUGES:
        metric(name, "gauge", help_text,
               [(f'{{route="{_escape(route)}"}}', getattr(lane, attribute))
                for route, lane in lanes])  # fmt: skip


def _counts(stats: UpstreamStats) -> dict[str, int]:
    return {f.name: int(getattr(stats, f.name)) for f in dataclasses.fields(stats)}


_LABEL: Final = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_UNESCAPE: Final = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _labels(text: str) -> dict[str, str]:
    """``{a="x",b="y"}`` (as the ``Metric`` writers spell a series) -> {a: x, b: y}."""
    return {
        name: re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], value)
        for name, value in _LABEL.findall(text)
    }


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
