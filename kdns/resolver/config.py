"""Every knob of the resolver core, as frozen dataclasses with unit-suffixed fields.

The binaries (nodecache, kdns) turn flags and config files into these; the core never reads
argv, env or files. Each class validates itself in ``__post_init__`` and raises ``ValueError``
naming the field, so a reload can reject a bad config and keep the old one.

Defaults follow NodeLocal DNSCache's shipped Corefile (../shared/docs/nodecache.md §1.3):

* cluster zone: ``cache { success 9984 30  denial 9984 5 }`` → success capped at 30 s, denial
  at 5 s, forwarded to the cluster DNS with ``force_tcp``;
* ``in-addr.arpa``, ``ip6.arpa`` and ``.``: ``cache 30`` → success and denial capped at 30 s;
  reverse zones go to the cluster DNS over TCP, ``.`` to the node's resolv.conf over UDP;
* the CoreDNS cache's MINTTL floor of 5 s applies to all of them (§2: TTL-0 answers are held
  5 s), and SERVFAIL is cached 5 s (``servfail`` default).

And the CoreDNS ``forward`` defaults (§2): 2 s read timeout per try, 5 s overall, ``max_fails``
2, a health probe every 0.5 s, connections expire after 10 s idle.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Final

from kdns.dns import names as zone

DEFAULT_PORT: Final = 53


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass(frozen=True, slots=True)
class ZoneTTL:
    """TTL floor and cap for answers under one zone (CoreDNS ``success``/``denial CAP TTL
    MINTTL``). A computed TTL is ``min(max(ttl, floor), cap)`` and applies to every RR."""

    success_min_s: int = 5
    """Floor for positive answers (CoreDNS MINTTL default 5 s: TTL-0 answers are held 5 s)."""
    success_max_s: int = 30
    """Cap for positive answers (NodeLocal's ``cache 30``)."""
    denial_min_s: int = 5
    """Floor for NXDOMAIN and NODATA."""
    denial_max_s: int = 30
    """Cap for NXDOMAIN and NODATA."""

    def __post_init__(self) -> None:
        for name in ("success_min_s", "success_max_s", "denial_min_s", "denial_max_s"):
            _positive(name, getattr(self, name), allow_zero=True)
        if self.success_min_s > self.success_max_s:
            raise ValueError("success_min_s must not exceed success_max_s")
        if self.denial_min_s > self.denial_max_s:
            raise ValueError("denial_min_s must not exceed denial_max_s")


CLUSTER_TTL: Final = ZoneTTL(success_min_s=5, success_max_s=30, denial_min_s=5, denial_max_s=5)
"""NodeLocal's cluster zone block: ``success 9984 30``, ``denial 9984 5``, MINTTL 5."""
OTHER_TTL: Final = ZoneTTL(success_min_s=5, success_max_s=30, denial_min_s=5, denial_max_s=30)
"""NodeLocal's ``cache 30`` (reverse zones, stub domains and ``.``), MINTTL 5."""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Capacity and TTL policy of the cache."""

    max_entries: int = 20_000
    """Entries at most (NodeLocal: 9984 success + 9984 denial per server block)."""
    max_bytes: int = 32 * 1024 * 1024
    """Stored reply bytes plus a fixed per-entry overhead, at most."""
    servfail_s: int = 5
    """How long a SERVFAIL is cached (CoreDNS ``servfail`` default 5 s, at most 300; 0 = never)."""
    zone_ttls: tuple[tuple[str, ZoneTTL], ...] = ()
    """Per-zone TTL floors and caps; the longest matching zone wins."""
    default_ttl: ZoneTTL = OTHER_TTL
    """For names under no zone in ``zone_ttls``."""

    def __post_init__(self) -> None:
        _positive("max_entries", self.max_entries)
        _positive("max_bytes", self.max_bytes)
        _positive("servfail_s", self.servfail_s, allow_zero=True)
        if self.servfail_s > 300:
            raise ValueError("servfail_s must be at most 300 (CoreDNS's limit)")
        for name, _ttl in self.zone_ttls:
            zone.to_wire(name)


@dataclass(frozen=True, slots=True)
class PrefetchConfig:
    """When an entry is refreshed before it expires (rules in ``kdns.resolver.policy``)."""

    enabled: bool = True
    min_hits: int = 2
    """Popular: this many client hits in the entry's current lifetime."""
    lead_percent: int = 10
    """Refresh when the remaining TTL drops to ceil(this % of the original TTL), at least 1 s
    (CoreDNS ``prefetch ... PCT%``, default 10 %, allowed 10-90)."""
    keep_warm_ttls: int = 2
    """K: a name whose last two queries came at most K TTLs apart, the latest at most K TTLs
    ago, is refreshed before it expires; 0 turns this off (only popular entries are)."""
    min_ttl_s: int = 2
    """Entries with a shorter original TTL are never prefetched."""

    def __post_init__(self) -> None:
        _positive("min_hits", self.min_hits)
        if not 10 <= self.lead_percent <= 90:
            raise ValueError("lead_percent must be within 10-90 (as CoreDNS allows)")
        if not 0 <= self.keep_warm_ttls <= 16:
            raise ValueError("keep_warm_ttls must be within 0-16")
        _positive("min_ttl_s", self.min_ttl_s)


class StaleMode(enum.Enum):
    """How expired entries are used (RFC 8767)."""

    OFF = "off"
    """Expired entries are misses; an upstream failure is SERVFAIL."""
    IMMEDIATE = "immediate"
    """An expired entry is answered at once (stale) and refreshed in the background
    (CoreDNS ``serve_stale DUR immediate``)."""
    VERIFY = "verify"
    """The upstream is asked first; stale is served only if it fails or has not answered within
    ``verify_timeout_s`` (CoreDNS ``serve_stale DUR verify``; RFC 8767 §5's client response
    timer). The refresh goes on in the background either way."""


@dataclass(frozen=True, slots=True)
class StaleConfig:
    """Serve-stale (RFC 8767)."""

    mode: StaleMode = StaleMode.VERIFY
    max_stale_s: float = 3600.0
    """How long after expiry an entry may still be served (RFC 8767 §5 suggests 1-3 days; the
    issue and CoreDNS default to 1 h)."""
    ttl_s: int = 30
    """TTL of every RR in a stale answer (RFC 8767 §4 recommends 30 s)."""
    verify_timeout_s: float = 1.8
    """VERIFY: how long a client waits for the upstream before it gets stale data (RFC 8767 §5's
    client response timer, 1.8 s, below glibc's 5 s timeout)."""
    recheck_s: float = 30.0
    """After a failed refresh, stale data is served without asking the upstream again for this
    long (RFC 8767 §5's failure recheck timer, 30 s)."""
    prefer_positive: bool = True
    """A last-known-good positive answer (within ``max_stale_s``) wins over a fresh SERVFAIL or
    upstream failure, and a SERVFAIL never replaces it in the cache."""

    def __post_init__(self) -> None:
        _positive("max_stale_s", self.max_stale_s, allow_zero=True)
        _positive("ttl_s", self.ttl_s)
        _positive("verify_timeout_s", self.verify_timeout_s, allow_zero=True)
        _positive("recheck_s", self.recheck_s, allow_zero=True)


class Transport(enum.Enum):
    """How a group of upstream servers is asked."""

    UDP = "udp"
    """UDP; a truncated reply (TC=1) is retried over TCP."""
    TCP = "tcp"
    """TCP only, on reusable pipelined connections (NodeLocal's ``force_tcp``)."""


class Policy(enum.Enum):
    """Which healthy server of a group is asked first (CoreDNS ``forward`` ``policy``)."""

    SEQUENTIAL = "sequential"
    """In configured order (resolv.conf semantics; our default, so the first server listed is
    preferred while it is healthy)."""
    RANDOM = "random"
    """A random order per query (CoreDNS's default)."""
    ROUND_ROBIN = "round_robin"
    """Each query starts one server further along the list."""


Address = tuple[str, int]


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """``"10.0.0.10"``, ``"10.0.0.10:53"``, ``"[fd00::a]:53"`` or ``"fd00::a"`` → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"no host in upstream address {text!r}")
    try:
        number = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad port in upstream address {text!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"port out of range in upstream address {text!r}")
    return host, number


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One group of upstream servers (one route's target)."""

    servers: tuple[Address, ...]
    """Tried in this order, healthy ones first (resolv.conf semantics)."""
    transport: Transport = Transport.UDP
    try_timeout_s: float = 2.0
    """One try at one server (CoreDNS forward ``read_timeout`` 2 s)."""
    overall_timeout_s: float = 5.0
    """All tries of one query together (CoreDNS forward's 5 s deadline)."""
    max_fails: int = 2
    """Consecutive failures (timeouts, refused connections) that mark a server down."""
    probe_interval_s: float = 0.5
    """How often a down server is probed with ``. IN NS`` (CoreDNS health check 0.5 s)."""
    max_concurrent: int = 256
    """Upstream queries in flight at once for this group; more fail at once (SERVFAIL)."""
    tcp_idle_s: float = 10.0
    """An idle pooled TCP connection is closed after this (CoreDNS ``expire`` 10 s)."""
    udp_size: int = 1232
    """EDNS payload size we advertise upstream (DNS flag day 2020)."""
    policy: Policy = Policy.SEQUENTIAL
    """Which healthy server is asked first; down servers always come last."""
    except_zones: tuple[str, ...] = ()
    """Names at or under these zones are not sent to this group (CoreDNS ``forward``
    ``except``): they fall through to the next shorter route that matches them."""

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("servers must not be empty")
        for host, port in self.servers:
            try:
                ipaddress.ip_address(host)  # a name would need DNS to reach DNS
            except ValueError:
                raise ValueError(f"upstream server {host!r} is not an IP address") from None
            if not 0 < port < 65536:
                raise ValueError(f"upstream port {port} out of range")
        _positive("try_timeout_s", self.try_timeout_s)
        _positive("overall_timeout_s", self.overall_timeout_s)
        if self.overall_timeout_s < self.try_timeout_s:
            raise ValueError("overall_timeout_s must be at least try_timeout_s")
        _positive("max_fails", self.max_fails)
        _positive("probe_interval_s", self.probe_interval_s)
        _positive("max_concurrent", self.max_concurrent)
        _positive("tcp_idle_s", self.tcp_idle_s)
        if not 512 <= self.udp_size <= 65535:
            raise ValueError("udp_size must be within 512-65535")
        for name in self.except_zones:
            zone.to_wire(name)


def cluster_upstream(servers: tuple[Address, ...], **options: object) -> UpstreamConfig:
    """The cluster DNS as NodeLocal reaches it: TCP (``force_tcp``: no conntrack UDP entries,
    no insert race, nodecache.md §1.2 and §5), other defaults as ``UpstreamConfig``."""
    options.setdefault("transport", Transport.TCP)
    return UpstreamConfig(servers, **options)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ResolverConfig:
    """Routing plus cache behaviour: what nodecache and kdns forwarding build a Resolver from."""

    cluster_zones: tuple[str, ...] = ("cluster.local",)
    """Zones answered by the cluster DNS (the first is primary)."""
    cluster_upstream: UpstreamConfig | None = None
    """The cluster DNS (kdns); None when this process is the cluster DNS itself."""
    reverse_zones: tuple[str, ...] = ("in-addr.arpa", "ip6.arpa")
    """Sent to ``cluster_upstream`` as NodeLocal does."""
    stub_domains: tuple[tuple[str, UpstreamConfig], ...] = ()
    """Zone → its own servers (kube-dns ``stubDomains``)."""
    upstream: UpstreamConfig | None = None
    """Everything else (``--upstream``; the node's resolv.conf); None disables forwarding."""
    cache: CacheConfig = field(default_factory=CacheConfig)
    prefetch: PrefetchConfig = field(default_factory=PrefetchConfig)
    stale: StaleConfig = field(default_factory=StaleConfig)
    # Capacity, per route (kdns.resolver.lanes): every route (each cluster and reverse zone,
    # each stub domain, the default) has its own of each, so one slow upstream delays no other.
    workers: int = 32
    """Per route: threads running its upstream fetches (misses, refreshes, prefetches), which
    is also how many of its fetches are in flight at once."""
    max_pending: int = 1024
    """Per route: client queries waiting on its upstream at once (queued or in flight); more
    are answered at once, SERVFAIL (or stale), instead of queueing behind them. More could not
    be answered in time anyway: ``workers`` serve ``workers x max_queue_wait_s / latency``
    queries within the queue-age bound, 1,024 for an upstream that answers in 60 ms, 64 at 1 s
    (CoreDNS forward's ``max_concurrent`` is 1,000). And every waiting query is some 35
    objects the cyclic GC walks: with 4,096 waiting, its full passes under a flood stopped
    every thread, cluster lookups included, for 100-300 ms (bench/starvation.py)."""
    max_queue_wait_s: float = 2.0
    """Per route: a client query that has waited this long for a worker is dropped, not
    answered late. Both glibc (``timeout:5`` per try) and musl (5 s in all, resending every
    2.5 s) stop listening after 5 s; 2 s of queueing plus one upstream try (``try_timeout_s``
    2 s) still lands inside that, and by 2.5 s musl has resent the query, which joins the same
    fetch as a new arrival. Over UDP nothing is sent (a late SERVFAIL would end the client's
    retry); over TCP SERVFAIL, so later replies on the connection are not held up."""
    max_refreshes: int = 4
    """Per route: prefetches and serve-stale refreshes (no client waiting) queued or running at
    once, never all of ``workers`` (one is left to clients); a worker takes one only when no
    client query is queued; one over the budget is skipped (its entry's next query asks)."""

    def __post_init__(self) -> None:
        for name in (*self.cluster_zones, *self.reverse_zones):
            zone.to_wire(name)
        for name, _upstream in self.stub_domains:
            zone.to_wire(name)
        _positive("workers", self.workers)
        _positive("max_pending", self.max_pending)
        _positive("max_queue_wait_s", self.max_queue_wait_s)
        _positive("max_refreshes", self.max_refreshes, allow_zero=True)

    def zone_ttls(self) -> tuple[tuple[str, ZoneTTL], ...]:
        """The TTL table NodeLocal ships for this routing: cluster zones ``CLUSTER_TTL``,
        everything else ``OTHER_TTL``; entries in ``cache.zone_ttls`` win."""
        table = dict.fromkeys(self.cluster_zones, CLUSTER_TTL)
        table.update(dict.fromkeys(self.reverse_zones, OTHER_TTL))
        table.update(self.cache.zone_ttls)
        return tuple(table.items())
