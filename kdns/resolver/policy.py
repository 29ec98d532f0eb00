"""The cache's policy as small pure functions: what may be cached, for how long, and when an
entry is refreshed before it expires. No clock, no lock, no I/O: ``cache.py`` calls these.

**Cacheable** (``reject_reason``, ``cache_ttl``). Never cached: truncated replies (RFC 2181 §9:
a TC reply is incomplete), replies whose question is not the one asked (RFC 5452 §9.1; CoreDNS
counts these as drops), rcodes other than NOERROR, NXDOMAIN and SERVFAIL, NXDOMAIN and NODATA
without an SOA (RFC 2308 §5: "negative responses without SOA records SHOULD NOT be cached"),
and anything whose TTL comes out as 0.

**TTL** (``cache_ttl``). Positive: the smallest TTL of all RRs but the OPT (CoreDNS
``MinimalTTL``). Negative: min(SOA TTL, SOA MINIMUM) (RFC 2308 §5), and no longer than any
CNAME on the way to it. Then floored and capped by the longest matching zone's ``ZoneTTL``
(CoreDNS ``min(max(ttl, MINTTL), CAP)``). SERVFAIL: ``servfail_s`` (RFC 2308 §7.1 allows up to
5 minutes). Every RR of a stored answer is then served with this one TTL, counting down.

**Prefetch** (``prefetch_due``, ``should_prefetch``). An entry is looked at once per lifetime
(a lifetime is one fresh period, from store to expiry), when its remaining TTL drops to
ceil(``lead_percent`` % of its TTL), at least 1 s before expiry. Two rules, either fires:

1. *Popular* (CoreDNS's rule): at least ``min_hits`` client queries in the current lifetime.
2. *Keep warm* (what CoreDNS misses, coredns#3037/#4045: a name asked once per TTL arrives just
   after each expiry, so it is never hit inside the prefetch window and always misses). Each
   entry remembers when a client last asked for its key and when the time before that (hits,
   stale hits and misses count; prefetches do not), carried across refreshes. With
   G = K * TTL (K = ``keep_warm_ttls``), the entry is refreshed if its last two queries
   came at most G apart and the latest is at most G old. So a client that asks at least once
   per K TTLs is always served from the cache, however its queries drift against our
   refreshes; a name asked once is never refreshed; two queries close together make a name
   "repeating", and it is then refreshed only until G has passed since its last query (K = 2:
   at most about two refreshes, bounded cost). A rule counting "hits in each of the last K
   lifetimes" comes out weaker: refreshed lifetimes are shorter than the TTL (they end at the
   lead time), so a client asking every 1.9 TTL would fall between two of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from kdns import dns as wire  # the wire package, under the name this module reads it by
from kdns.dns import names as zone
from kdns.resolver.config import PrefetchConfig, ZoneTTL
from kdns.resolver.message import Built, Kind, ReplyFacts


class TTLPolicy:
    """Zone → ``ZoneTTL``, longest suffix first, with a default."""

    __slots__ = ("_default", "_table")

    def __init__(self, zones: Iterable[tuple[str, ZoneTTL]] = (), default: ZoneTTL | None = None):
        self._table = zone.ZoneTable.from_text(dict(zones))
        self._default = default if default is not None else ZoneTTL()

    def for_name(self, name: bytes) -> ZoneTTL:
        found = self._table.match(name)
        return self._default if found is None else found[1]


def reject_reason(facts: ReplyFacts, name: bytes, qtype: int, qclass: int) -> str | None:
    """Why a reply must not be cached (or served) for the question (name, qtype, qclass); None
    if it may. ``name`` is the lower-case wire name asked."""
    if facts.truncated:
        return "truncated"
    if facts.qname_lower != name or facts.qtype != qtype or facts.qclass != qclass:
        return "question mismatch"
    return None


def cache_ttl(built: Built, policy: ZoneTTL, servfail_s: int) -> int | None:
    """Seconds to cache ``built``; None if it must not be cached (module docstring)."""
    if built.kind is Kind.POSITIVE:
        if built.min_ttl is None:
            return None
        ttl = min(max(built.min_ttl, policy.success_min_s), policy.success_max_s)
    elif built.kind in (Kind.NXDOMAIN, Kind.NODATA):
        if built.negative_ttl is None:
            return None
        raw = built.negative_ttl
        if built.min_ttl is not None:
            raw = min(raw, built.min_ttl)
        ttl = min(max(raw, policy.denial_min_s), policy.denial_max_s)
    elif built.rcode == wire.SERVFAIL:
        ttl = servfail_s
    else:
        return None
    return ttl if ttl > 0 else None


def prefetch_due(stored_at: float, ttl: int, config: PrefetchConfig) -> float | None:
    """When an entry stored at ``stored_at`` with ``ttl`` is looked at for prefetch; None if
    never (prefetch off, or a TTL too short to be worth it)."""
    if not config.enabled or ttl < config.min_ttl_s:
        return None
    lead = max(1, math.ceil(ttl * config.lead_percent / 100))
    return stored_at + ttl - lead


def should_prefetch(
    hits: int, last_ask: float, previous_ask: float, now: float, ttl: int, config: PrefetchConfig
) -> bool:
    """Refresh now? For an entry with ``hits`` client queries in its current lifetime and the
    times of the last two client queries for its key (``-inf`` when there were fewer)."""
    if hits >= config.min_hits:
        return True
    window = config.keep_warm_ttls * ttl
    return window > 0 and now - last_ask <= window and last_ask - previous_ask <= window
