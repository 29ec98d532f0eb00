"""Replaying a query log through the real cache (``kdns.resolver.cache.Cache``) on the log's
own clock: a day of traffic replays in seconds.

``replay(log, setting, resolver_config)`` builds a ``Cache`` with the setting's entry bound and
TTL policy, the config's prefetch, serve-stale and SERVFAIL settings, and no byte bound (the
peak bytes are what it reports, so ``max_bytes`` can be set from them). Every query is looked
up at its logged time (``now`` = ``ts``); what happens next is what
``kdns.resolver.core.Resolver`` decides for that lookup:

* a fresh hit is a hit;
* a stale hit (RFC 8767, within ``max_stale_s``): served stale without asking while a failed
  refresh's recheck timer runs; ``immediate`` serves it stale and refreshes; ``verify`` asks
  the upstream and serves it stale only when the upstream fails;
* anything else is a miss and asks the upstream.

The upstream's answer is the logged one: its rcode, size and TTL (a cache hit's logged TTL is
what was left of it, so a key's TTL comes from its last logged miss). A logged SERVFAIL is an
upstream failure. Prefetches are run at the times the cache says they are due, each one an
upstream query answered with the key's latest logged answer. The log's NOERROR answers are all
taken as positive (the format does not tell NODATA apart), so they get the success limits.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from kdns import dns
from kdns.resolver import message, policy
from kdns.resolver.cache import Cache, Key
from kdns.resolver.config import CacheConfig, ResolverConfig, StaleMode
from kdns.resolver.message import Built, Kind
from nodecache.admin.tune.logs import LogRead, Query

UNBOUNDED_BYTES: Final = 1 << 46
PROGRESS_EVERY: Final = 4096
"""Queries between two progress reports."""


@dataclass(frozen=True, slots=True)
class Setting:
    max_entries: int
    policy_label: str
    ttl_policy: policy.TTLPolicy
    cap_s: int | None = None
    """The success cap of the policy, when it is one ``FLOOR:CAP`` (None: the config's)."""


@dataclass(frozen=True, slots=True)
class Result:
    max_entries: int
    policy_label: str
    queries: int
    hits: int
    stale_served: int
    upstream_queries: int
    prefetches: int
    span_s: float
    peak_entries: int
    peak_bytes: int
    cap_s: int | None = None

    @property
    def hit_ratio(self) -> float:
        """Queries answered from a fresh cache entry, of all queries (stale answers apart)."""
        return self.hits / self.queries if self.queries else 0.0

    @property
    def upstream_qps(self) -> float:
        return self.upstream_queries / self.span_s


def built_from(query: Query, ttl: int | None) -> Built:
    """The stored form of the logged answer: its question, rcode and size (the records are
    opaque bytes: the cache never reads them), and its TTL as the answer's smallest."""
    question = query.name + struct.pack(">HH", query.qtype, dns.CLASS_IN)
    header = struct.pack(">HHHHHH", 0, message.QR | message.RA | (query.rcode & 0xF), 1, 0, 0, 0)
    padding = max(0, query.size - dns.HEADER_SIZE - len(question))
    if query.rcode == dns.NOERROR:
        kind, min_ttl, negative_ttl = Kind.POSITIVE, ttl, None
    elif query.rcode == dns.NXDOMAIN:
        kind, min_ttl, negative_ttl = Kind.NXDOMAIN, None, ttl
    else:
        kind, min_ttl, negative_ttl = Kind.ERROR, None, None
    return Built(
        header + question + bytes(padding),
        dns.HEADER_SIZE + len(question),
        (),
        query.rcode,
        kind,
        min_ttl,
        negative_ttl,
    )


def replay(
    log: LogRead,
    setting: Setting,
    config: ResolverConfig,
    progress: Callable[[int], None] | None = None,
) -> Result:
    """One setting over the whole log (module docstring); ``progress(n)`` hears of each
    ``PROGRESS_EVERY`` queries done."""
    cache = Cache(
        CacheConfig(
            max_entries=setting.max_entries,
            max_bytes=UNBOUNDED_BYTES,
            servfail_s=config.cache.servfail_s,
        ),
        prefetch=config.prefetch,
        stale=config.stale,
        ttl_policy=setting.ttl_policy,
        clock=lambda: 0.0,  # every call passes the log's time
    )
    stale_mode = config.stale.mode
    keys: dict[tuple[bytes, int, bool], Key] = {}
    ttl_of: dict[Key, int | None] = {}
    latest: dict[Key, Query] = {}
    hits = stale = upstream = prefetches = 0
    peak_entries = peak_bytes = 0
    for done, query in enumerate(log.queries, start=1):
        now = query.ts
        due = cache.next_due()
        while due is not None and due <= now:
            for refresh in cache.due_prefetches(due):
                answer = latest[refresh.key]
                upstream += 1
                prefetches += 1
                cache.store(refresh.key, built_from(answer, ttl_of[refresh.key]), due, demand=False)
            due = cache.next_due()
        ident = (query.name, query.qtype, query.do)
        key = keys.get(ident)
        if key is None:
            key = keys[ident] = Key(query.name, query.qtype, dns.CLASS_IN, query.do, False)
        if not query.cache_hit or key not in ttl_of:
            ttl_of[key] = query.ttl
        latest[key] = query
        hit = cache.lookup(key, now)
        if hit is not None and not hit.stale:
            hits += 1
        elif hit is not None and cache.recheck_pending(hit.entry, now):
            stale += 1
        else:
            upstream += 1
            failed = query.rcode == dns.SERVFAIL
            if hit is not None and (stale_mode is StaleMode.IMMEDIATE or failed):
                stale += 1
            cache.store(key, built_from(query, ttl_of[key]), now)
            size = cache.size_bytes
            if size > peak_bytes:
                peak_bytes = size
            if len(cache) > peak_entries:
                peak_entries = len(cache)
        if progress is not None and done % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
    if progress is not None:
        progress(len(log.queries) % PROGRESS_EVERY)
    return Result(
        setting.max_entries,
        setting.policy_label,
        len(log.queries),
        hits,
        stale,
        upstream,
        prefetches,
        log.span_s,
        peak_entries,
        peak_bytes,
        setting.cap_s,
    )
