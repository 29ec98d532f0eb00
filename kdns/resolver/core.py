"""The query path of the resolver core: search-path seam → cache → route → upstream.

``Resolver.answer(query, done)`` is the whole decision for a screened client query:

1. ``policy.decide`` (a ``SearchPathPolicy``: nodecache's local negatives and autopath) may
   answer first, before the cache and the upstream are asked, or take the query over and
   settle it later (``DEFERRED``). ``ask`` is the policy's own way in: a blocking query
   through steps 2-6 that skips step 1.
2. A fresh cache hit is patched bytes (``Cache.lookup`` + ``Hit.reply``), returned at once.
3. A name no route covers is REFUSED (kdns with ``--upstream none``).
4. An expired entry within the stale window (RFC 8767): ``IMMEDIATE`` answers it (TTL 30,
   EDE 3 "Stale Answer", RFC 8914) and refreshes in the background; ``VERIFY`` asks the upstream
   and answers stale only if it fails or is slower than ``verify_timeout_s``; either answers
   stale at once while the failure recheck timer (§5) runs after a failed refresh.
5. A miss asks the route's upstream. One fetch per key is in flight at a time: concurrent misses
   for the same key wait on the same fetch (which also makes "one refresh in flight per key"
   true for prefetches and stale refreshes). The reply is sanitized with the bailiwick rule
   (``message.sanitize``), a CNAME chain that leaves the route's zone is chased through the
   target's own route (RFC 1034 §4.3.2; how kdns answers ExternalName targets), the result is
   built, stored and served.
6. An upstream failure is never NXDOMAIN: it is the last-known-good answer if serve-stale allows
   (``prefer_positive``), else SERVFAIL (EDE 22 "No Reachable Authority"), cached
   ``servfail_s``.

Each branch above is chosen by a pure function of ``kdns.resolver.decide`` (tested from tables);
this module does the effects. Failure reasons are ``kdns.resolver.reasons.Reason``. One clock
(``clock``, the cache's by default) drives the cache, the lanes, the VERIFY timer and, through
``from_config``, the upstream deadlines.

Upstream fetches run on each route's own lane (``kdns.resolver.lanes``: its workers, its bound
on waiting queries, its queue-age drop, its refresh budget), so a slow, dead or flooded upstream
for one zone never delays another. A route that is full answers its overflow at once (SERVFAIL,
or stale); a client query that waited longer than ``max_queue_wait_s`` for a worker is dropped
(``done(None)``: no reply over UDP, SERVFAIL over TCP, where a silent drop would hold up every
later reply on the connection). The executor is injectable: tests run tasks inline, by hand or
in virtual time, with no threads. ``answer`` never blocks its caller: it returns the reply when
no upstream is needed, else None and calls ``done(reply)`` later, exactly once, from a pool or
timer thread. ``resolve`` is the blocking form. ``run_prefetch`` starts due prefetches
(``Cache.due_prefetches``) within each route's refresh budget; ``start`` runs it on a thread,
woken at the next due time.

``Router`` maps zones to upstream groups by longest suffix: the cluster zones and reverse zones
to the cluster DNS, stub domains to their servers, everything else (``.``) to ``--upstream``.
The matched zone is the upstream's bailiwick.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import itertools
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final, Protocol

from kdns import dns as wire  # the wire package, under the name this module reads it by
from kdns.dns import names as zone
from kdns.resolver import decide, message, policy
from kdns.resolver.cache import Cache, Entry, Hit, Key
from kdns.resolver.config import (
    ResolverConfig,
    StaleConfig,
    UpstreamConfig,
)
from kdns.resolver.lanes import Job, Joined, Lane, LaneLimits
from kdns.resolver.message import Built, ClientQuery, Record
from kdns.resolver.reasons import Reason
from kdns.resolver.upstream import Failure, Reply, Upstream, UpstreamClient

logger = logging.getLogger(__name__)

ClientAddress = tuple[str, int]
Done = Callable[[bytes | None], None]
"""Settles a query: its reply, or None when it was dropped (it waited too long; send nothing)."""


class Deferred:
    """What ``SearchPathPolicy.decide`` returns when it will settle the query later."""

    __slots__ = ()


DEFERRED: Final = Deferred()

Settle = Callable[[bytes | None], None]
"""How a policy settles a deferred query: the reply, or None for "resolver, go on"."""


class SearchPathPolicy(Protocol):
    """The seam for ndots absorption (``nodecache.searchpath``): asked before cache and upstream.

    ``decide`` returns a complete reply for ``query`` (its ID, question and OPT handled, e.g. a
    local NXDOMAIN or an autopath CNAME answer), None to let the resolver go on, or
    ``DEFERRED`` after arranging to call ``settle`` exactly once later, from any thread, with
    a reply or with None (go on). Must not block.
    """

    def decide(
        self, query: ClientQuery, client: ClientAddress | None, settle: Settle
    ) -> bytes | Deferred | None: ...


_INTERNAL_EDNS: Final = wire.Edns(wire.TCP_MAX_SIZE, 0, False)


@dataclass(frozen=True, slots=True)
class InternalQuery:
    """A query the node makes for itself (a search-path probe): RD set, and an OPT (DO clear,
    so it shares the cache key of a plain client query) so that a reply served stale carries
    EDE 3 and ``ask`` can tell it apart."""

    packet: bytes
    question: wire.Question
    edns: wire.Edns | None = _INTERNAL_EDNS
    flags: int = message.RD
    max_udp_size: int = wire.TCP_MAX_SIZE

    @classmethod
    def of(cls, qname: bytes, qtype: int) -> InternalQuery:
        packet = message.make_query(0, qname, qtype, wire.CLASS_IN, udp_size=wire.TCP_MAX_SIZE)
        return cls(packet, wire.parse_question(packet))


_STALE_EDE: Final = struct.pack(">HHH", message.EDE_OPTION, 2, message.EDE_STALE_ANSWER)
"""How a reply to an ``InternalQuery`` ends when it was served stale (its OPT's last option)."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where names under ``zone`` go; ``zone`` is also the upstream's bailiwick."""

    zone: bytes
    upstream: Upstream
    name: str
    excepts: tuple[bytes, ...] = ()
    """Names at or under these are not this route's (CoreDNS ``forward`` ``except``)."""


class Router:
    """Zones → upstream groups, longest suffix first."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._table: zone.ZoneTable[Route] = zone.ZoneTable({r.zone: r for r in routes})

    def route(self, name: bytes) -> Route | None:
        found = self._table.match(name)
        # An excepted name falls through to the next shorter zone that has a route, as CoreDNS
        # passes it to the next plugin; none left is unrouted (REFUSED).
        while found is not None and found[1].excepts:
            suffix, route = found
            if not any(zone.is_subdomain(name, ex) for ex in route.excepts):
                break
            found = None if suffix == zone.ROOT else self._table.match(suffix[1 + suffix[0] :])
        return None if found is None else found[1]

    def routes(self) -> list[Route]:
        return [route for _zone, route in self._table.items()]

    def upstreams(self) -> list[Upstream]:
        """Each distinct upstream group once."""
        seen: dict[int, Upstream] = {}
        for route in self.routes():
            seen.setdefault(id(route.upstream), route.upstream)
        return list(seen.values())

    @classmethod
    def from_config(
        cls,
        config: ResolverConfig,
        make: Callable[[UpstreamConfig], Upstream] = UpstreamClient,
    ) -> Router:
        """The NodeLocal routing: cluster and reverse zones → ``cluster_upstream``; each stub
        domain → its servers; ``.`` → ``upstream``. Missing groups leave those names unrouted
        (REFUSED). Give ``cluster_upstream`` ``Transport.TCP`` to match NodeLocal's
        ``force_tcp``."""
        routes: list[Route] = []

        def excepts(group: UpstreamConfig) -> tuple[bytes, ...]:
            return tuple(zone.to_wire(name) for name in group.except_zones)

        if config.upstream is not None:
            upstream = config.upstream
            routes.append(Route(zone.ROOT, make(upstream), "default", excepts(upstream)))
        for name, group in config.stub_domains:
            routes.append(Route(zone.to_wire(name), make(group), f"stub:{name}", excepts(group)))
        if config.cluster_upstream is not None:
            cluster = make(config.cluster_upstream)
            for name in (*config.cluster_zones, *config.reverse_zones):
                routes.append(Route(zone.to_wire(name), cluster, f"cluster:{name}"))
        return cls(routes)

    def start(self) -> None:
        for upstream in self.upstreams():
            if isinstance(upstream, UpstreamClient):
                upstream.start()

    def close(self) -> None:
        for upstream in self.upstreams():
            if isinstance(upstream, UpstreamClient):
                upstream.close()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one fetch left behind."""

    entry: Entry | None
    """The entry the cache holds for the key afterwards (fresh, or a kept last-known-good)."""
    built: Built | None
    """The fresh reply as built, when the upstream answered (cacheable or not)."""
    failure: Failure | None


@dataclass(slots=True)
class ResolverStats:
    """Counters (monotonic) for metrics."""

    queries: int = 0
    policy_answers: int = 0
    """Queries the search-path policy answered at once."""
    policy_deferred: int = 0
    """Queries the search-path policy took over (answered later, or handed back)."""
    internal_queries: int = 0
    """The node's own queries (``ask``: search-path probes), not counted in ``queries``."""
    hits: int = 0
    stale_served: int = 0
    misses: int = 0
    coalesced: int = 0
    """Misses that joined a fetch already in flight for the same key."""
    fetches: int = 0
    refreshes: int = 0
    prefetches: int = 0
    failures: int = 0
    servfail: int = 0
    refused: int = 0
    chased: int = 0
    """CNAME targets outside a route's bailiwick resolved through their own route."""
    dropped_records: int = 0
    """Records removed by the bailiwick rule."""
    overloaded: int = 0
    """Client queries refused at once because their route had ``max_pending`` waiting (all
    routes; per route in ``Lane.stats.overflows``)."""
    expired: int = 0
    """Client queries dropped after waiting ``max_queue_wait_s`` for a worker (all routes)."""
    refreshes_skipped: int = 0
    """Prefetches and stale refreshes not started: their route's refresh budget was in use."""
    internal_shed: int = 0
    """The node's own queries (``ask``) answered SERVFAIL at once: a fetch was needed and
    every worker of the route was busy."""
    by_route: dict[str, int] = field(default_factory=dict)


class _Deadlines:
    """Calls functions at times of the resolver's clock from one daemon thread (VERIFY's stale
    fallback). The thread waits in real seconds, so the clock must advance with real time for
    a delay above zero to fire (tests use 0, which runs the function at once)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        if delay_s <= 0:
            fn()
            return
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="resolver-timer")
                self._thread.daemon = True
                self._thread.start()
            heapq.heappush(self._heap, (self.clock() + delay_s, next(self._sequence), fn))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > self.clock()):
                    timeout = self._heap[0][0] - self.clock() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _when, _seq, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:
                logger.exception("timer callback failed")

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()


class _Once:
    """Delivers the first reply to ``done`` and drops later ones (VERIFY races a timer)."""

    __slots__ = ("_done", "_lock", "delivered")

    def __init__(self, done: Done) -> None:
        self._done = done
        self._lock = threading.Lock()
        self.delivered = False

    def __call__(self, reply: bytes | None) -> None:
        with self._lock:
            if self.delivered:
                return
            self.delivered = True
        self._done(reply)


class _Client:
    """A client query waiting on its route's fetch (a ``lanes.Waiter``): its reply goes out
    once, and its slot on the lane is given back once, whichever of the fetch, the VERIFY
    fallback and the queue-age drop comes first."""

    __slots__ = ("_dropped_reply", "_lane", "_lock", "_released", "_stats", "arrived", "once")

    def __init__(
        self,
        done: Done,
        lane: Lane,
        arrived: float,
        dropped_reply: bytes | None,
        stats: ResolverStats,
    ) -> None:
        self.once = _Once(done)
        self.arrived = arrived
        self._lane = lane
        self._stats = stats
        self._dropped_reply = dropped_reply
        self._lock = threading.Lock()
        self._released = False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._lane.release()

    def drop(self) -> None:
        self._stats.expired += 1
        self.release()
        self.once(self._dropped_reply)


@dataclass(slots=True)
class _Fetch:
    """A fetch in flight for one key: its result, and its place on the route's lane."""

    future: Future[Outcome]
    job: Job


class Resolver:
    """See the module docstring. Thread-safe."""

    def __init__(
        self,
        cache: Cache,
        router: Router,
        *,
        policy: SearchPathPolicy | None = None,
        executor: Executor | None = None,
        workers: int = 32,
        max_pending: int = 1024,
        max_queue_wait_s: float = 2.0,
        max_refreshes: int = 4,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``workers``, ``max_pending``, ``max_queue_wait_s`` and ``max_refreshes`` are per
        route (``ResolverConfig``). ``executor``: where every route's fetches run (tests);
        None gives each route its own pool of ``workers`` threads."""
        self.cache = cache
        self.router = router
        self.policy = policy
        self.clock = clock or cache.clock
        self.stats = ResolverStats()
        self._limits = LaneLimits(workers, max_pending, max_queue_wait_s, max_refreshes)
        self._executor = executor
        self._lanes: dict[str, Lane] = {}
        self._inflight: dict[Key, _Fetch] = {}
        self._lock = threading.Lock()
        self._deadlines = _Deadlines(self.clock)
        self._stop = threading.Event()
        self._prefetcher: threading.Thread | None = None

    @classmethod
    def from_config(
        cls,
        config: ResolverConfig,
        *,
        policy: SearchPathPolicy | None = None,
        make_upstream: Callable[[UpstreamConfig], Upstream] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Resolver:
        """``make_upstream``: None builds ``UpstreamClient``s on ``clock``, the one clock of the
        cache, the lanes, the timers and the upstream deadlines."""
        cache = Cache(
            config.cache,
            prefetch=config.prefetch,
            stale=config.stale,
            ttl_policy=ttl_policy_for(config),
            clock=clock,
        )
        return cls(
            cache,
            Router.from_config(config, make_upstream or _upstream_maker(clock)),
            policy=policy,
            workers=config.workers,
            max_pending=config.max_pending,
            max_queue_wait_s=config.max_queue_wait_s,
            max_refreshes=config.max_refreshes,
            clock=clock,
        )

    @property
    def stale(self) -> StaleConfig:
        return self.cache.stale

    @property
    def limits(self) -> LaneLimits:
        """Every route's capacity (each route has its own of these)."""
        return self._limits

    @property
    def max_pending(self) -> int:
        return self._limits.max_pending

    def set_limits(self, limits: LaneLimits) -> None:
        """New per-route limits for every route; a route's ``workers`` stays as its pool was
        built (a restart changes it)."""
        with self._lock:
            self._limits = limits
            for lane in self._lanes.values():
                lane.limits = dataclasses.replace(limits, workers=lane.limits.workers)

    def lanes(self) -> dict[str, Lane]:
        """Each route's lane by route name (``default``, ``cluster:cluster.local``, ...),
        created for every route the router has."""
        for route in self.router.routes():
            self._lane(route)
        with self._lock:
            return dict(self._lanes)

    def _lane(self, route: Route) -> Lane:
        lane = self._lanes.get(route.name)
        if lane is not None:
            return lane
        with self._lock:
            lane = self._lanes.get(route.name)
            if lane is None:
                limits = self._limits
                executor = self._executor or ThreadPoolExecutor(
                    limits.workers, thread_name_prefix=f"resolver-{route.name}"
                )
                lane = Lane(route.name, limits, executor, self.clock)
                self._lanes[route.name] = lane
            return lane

    def reconfigure(
        self,
        config: ResolverConfig,
        make_upstream: Callable[[UpstreamConfig], Upstream] | None = None,
    ) -> None:
        """Apply a reloaded config without flushing the cache: new routes and policies; the
        old upstream groups are closed once swapped out. (Cache capacity stays as built.)"""
        router = Router.from_config(config, make_upstream or _upstream_maker(self.clock))
        if self._prefetcher is not None:
            router.start()
        old, self.router = self.router, router
        self.cache.reconfigure(
            prefetch=config.prefetch, stale=config.stale, ttl_policy=ttl_policy_for(config)
        )
        self.set_limits(
            LaneLimits(
                self._limits.workers,
                config.max_pending,
                config.max_queue_wait_s,
                config.max_refreshes,
            )
        )
        old.close()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start upstream health probers and the prefetch thread."""
        self.router.start()
        if self._prefetcher is None:
            self._prefetcher = threading.Thread(target=self._prefetch_loop, name="prefetch")
            self._prefetcher.daemon = True
            self._prefetcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._prefetcher is not None:
            self._prefetcher.join(timeout=2)
        self._deadlines.stop()
        with self._lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.close()
            if self._executor is None:
                lane.executor.shutdown(wait=False, cancel_futures=True)
        self.router.close()

    def _prefetch_loop(self) -> None:
        """Due prefetches, and the queue-age sweep four times per ``max_queue_wait_s``."""
        while not self._stop.is_set():
            try:
                self.run_prefetch()
                self.expire_waiting()
            except Exception:
                logger.exception("prefetch or expiry pass failed")
            due = self.cache.next_due()
            sweep = self._limits.max_queue_wait_s / 4
            wait = min(1.0, sweep) if due is None else min(1.0, sweep, due - self.clock())
            self._stop.wait(max(0.05, wait))

    def expire_waiting(self) -> int:
        """Drop the queued client queries, on every route, that have waited longer than
        ``max_queue_wait_s`` (a worker taking a job drops its own too); return how many."""
        with self._lock:
            lanes = list(self._lanes.values())
        return sum(lane.expire() for lane in lanes)

    def absorb_hits(self) -> int:
        """Count the cache hits the C loop served since the last call (``Cache.absorb_hits``)
        as this resolver's own; returns how many."""
        absorbed = self.cache.absorb_hits()
        if absorbed:
            self.stats.queries += absorbed
            self.stats.hits += absorbed
        return absorbed

    def run_prefetch(self, now: float | None = None) -> list[Key]:
        """Start every due prefetch its route's refresh budget allows (skipping keys with a
        fetch in flight); return the keys started. The C loop's hits are absorbed first: the
        prefetch rule reads the entries' hit counts and ask times."""
        self.absorb_hits()
        started = []
        for refresh in self.cache.due_prefetches(now):
            route = self.router.route(refresh.key.name)
            if route is None:
                continue
            with self._lock:
                busy = refresh.key in self._inflight
            if busy:
                continue
            if self._fetch(refresh.key, refresh.question, route, demand=False) is None:
                continue
            self.stats.prefetches += 1
            started.append(refresh.key)
        return started

    # --- the query path ----------------------------------------------------------------------

    def resolve(
        self,
        query: ClientQuery,
        client: ClientAddress | None = None,
        *,
        tcp: bool = False,
        timeout_s: float = 30.0,
    ) -> bytes:
        """The reply to ``query``, blocking until it is known (SERVFAIL after ``timeout_s``)."""
        box: list[bytes | None] = []
        ready = threading.Event()

        def done(reply: bytes | None) -> None:
            box.append(reply)
            ready.set()

        immediate = self.answer(query, done, client, tcp=tcp)
        if immediate is not None:
            return immediate
        if not ready.wait(timeout_s) or box[0] is None:
            return self._fit(message.error_reply(query, wire.SERVFAIL), query, tcp)
        return box[0]

    def answer(
        self,
        query: ClientQuery,
        done: Done,
        client: ClientAddress | None = None,
        *,
        tcp: bool = False,
    ) -> bytes | None:
        """The reply now if no upstream is needed; else None, and ``done(reply)`` is called
        exactly once later from another thread (or before this returns, with an inline
        executor). Never raises for upstream trouble."""
        self.stats.queries += 1
        policy = self.policy
        if policy is not None:

            def settle(reply: bytes | None) -> None:
                if reply is not None:
                    done(self._fit(reply, query, tcp))
                    return
                immediate = self._answer(query, done, tcp)
                if immediate is not None:
                    done(immediate)

            decided = policy.decide(query, client, settle)
            if isinstance(decided, bytes):
                self.stats.policy_answers += 1
                return self._fit(decided, query, tcp)
            if decided is not None:
                self.stats.policy_deferred += 1
                return None
        return self._answer(query, done, tcp)

    def ask(self, qname: bytes, qtype: int, timeout_s: float = 10.0) -> bytes:
        """The reply to our own query for (``qname``, ``qtype``, IN) through the cache and the
        routes, bypassing the policy (which is what asks). Blocks; call it off the UDP loop.

        Never a stale answer: what the policy decides must rest on fresh data, so an answer
        served stale (RFC 8767) comes back as SERVFAIL, as does a timeout."""
        self.stats.internal_queries += 1
        query = InternalQuery.of(qname, qtype)
        box: list[bytes | None] = []
        ready = threading.Event()

        def done(reply: bytes | None) -> None:
            box.append(reply)
            ready.set()

        reply = self._answer(query, done, True, internal=True)
        if reply is None:
            if not ready.wait(timeout_s) or box[0] is None:
                return message.error_reply(query, wire.SERVFAIL)
            reply = box[0]
        if reply.endswith(_STALE_EDE):
            return message.error_reply(query, wire.SERVFAIL)
        return reply

    def _answer(
        self, query: ClientQuery, done: Done, tcp: bool, *, internal: bool = False
    ) -> bytes | None:
        """``answer`` after the policy: cache, route, upstream. ``internal``: the node's own
        query (``ask``), which never waits for a busy route's worker."""
        key = Key.of(query)
        now = self.clock()
        hit = self.cache.lookup(key, now)
        if hit is not None and not hit.stale:
            self.stats.hits += 1
            reply = hit.reply(query)
            if tcp or len(reply) <= wire.MIN_UDP_SIZE:
                return reply  # the common case, without computing the client's limit
            return self._fit(reply, query, tcp)
        route = self.router.route(key.name)
        step = decide.first_step(
            decide.Cached.NONE if hit is None else decide.Cached.STALE,
            route is not None,
            self.stale.mode,
            hit is not None and self.cache.recheck_pending(hit.entry, now),
        )
        if step is decide.Step.REFUSE or route is None:
            self.stats.refused += 1
            return self._fit(message.error_reply(query, wire.REFUSED), query, tcp)
        self.stats.by_route[route.name] = self.stats.by_route.get(route.name, 0) + 1
        question = query.packet[wire.HEADER_SIZE : query.question.end]
        if hit is not None and step in (decide.Step.STALE, decide.Step.STALE_REFRESH):
            if step is decide.Step.STALE_REFRESH:
                self.stats.refreshes += 1
                self._fetch(key, question, route, demand=True)
            self.stats.stale_served += 1
            return self._fit(hit.reply(query, message.EDE_STALE_ANSWER), query, tcp)
        if hit is None:
            self.stats.misses += 1
        lane = self._lane(route)
        if decide.shed_internal(internal, key in self._inflight, lane.busy, lane.limits.workers):
            self.stats.internal_shed += 1
            return message.error_reply(query, wire.SERVFAIL)
        if not lane.admit():
            # The route is full: answer now rather than queue behind it (issue 11).
            self.stats.overloaded += 1
            settlement = decide.on_full(hit is not None)
            if settlement is decide.Settlement.STALE_HIT and hit is not None:
                self.stats.stale_served += 1
                return self._fit(hit.reply(query, message.EDE_STALE_ANSWER), query, tcp)
            self.stats.servfail += 1
            return self._fit(message.error_reply(query, wire.SERVFAIL), query, tcp)

        # Dropped after waiting too long: nothing over UDP (the client has asked again or given
        # up, and a late SERVFAIL would match its retry's ID and end it); SERVFAIL over TCP,
        # where a reply never sent holds up the connection's later ones.
        dropped_reply = self._fit(message.error_reply(query, wire.SERVFAIL), query, tcp)
        client = _Client(done, lane, now, dropped_reply if tcp else None, self.stats)
        once = client.once

        stale_hit = hit
        future = self._fetch(key, question, route, demand=True, client=client)
        assert future is not None  # a client fetch is always queued (or joined)

        def fetched(result: Future[Outcome]) -> None:
            client.release()
            if once.delivered:
                return
            try:
                reply = self._reply(result.result(), query, stale_hit)
            except Exception:
                logger.exception("building a reply failed; answering SERVFAIL")
                reply = message.error_reply(query, wire.SERVFAIL)
            try:
                once(self._fit(reply, query, tcp))
            except Exception:
                logger.exception("delivering a reply failed")

        # Registered first: with an inline executor the fetch is already done, and a fresh
        # answer must win over VERIFY's fallback even when verify_timeout_s is 0.
        future.add_done_callback(fetched)
        if step is decide.Step.VERIFY and stale_hit is not None:
            # VERIFY (RFC 8767 §5): the upstream gets verify_timeout_s; then stale data.
            self.stats.refreshes += 1

            def fallback() -> None:
                if not once.delivered:
                    self.stats.stale_served += 1
                    once(self._fit(stale_hit.reply(query, message.EDE_STALE_ANSWER), query, tcp))

            self._deadlines.call_later(self.stale.verify_timeout_s, fallback)
        return None

    def _fit(self, reply: bytes, query: ClientQuery, tcp: bool) -> bytes:
        """Truncate to the client's limit (TC=1 with the question only, RFC 2181 §9)."""
        if len(reply) <= message.size_limit(query, tcp):
            return reply
        return message.truncated_reply(reply, query.question.end, message.reply_opt(query))

    def _reply(self, outcome: Outcome, query: ClientQuery, stale_hit: Hit | None) -> bytes:
        entry = outcome.entry
        settlement = decide.settle(
            outcome.failure is not None,
            None if entry is None else entry.kind,
            outcome.built is not None,
            self.stale.mode,
            stale_hit is not None,
        )
        if settlement is decide.Settlement.ENTRY and entry is not None:
            remaining = max(1, entry.remaining(self.clock()))
            return Hit(entry, remaining, False).reply(query)
        if settlement is decide.Settlement.BUILT and outcome.built is not None:
            # A good answer we may not cache (e.g. NODATA without SOA): its own TTLs.
            packet = query.packet
            return message.patch(
                outcome.built.message,
                packet[:2],
                query.flags,
                packet[wire.HEADER_SIZE : query.question.end],
                0,
                (),
                message.reply_opt(query),
            )
        if settlement is decide.Settlement.LAST_GOOD and entry is not None:
            # RFC 8767: the last-known-good answer rather than a fresh failure.
            self.stats.stale_served += 1
            return Hit(entry, self.stale.ttl_s, True).reply(query, message.EDE_STALE_ANSWER)
        if settlement is decide.Settlement.STALE_HIT and stale_hit is not None:
            self.stats.stale_served += 1
            return stale_hit.reply(query, message.EDE_STALE_ANSWER)
        self.stats.servfail += 1
        return message.error_reply(query, wire.SERVFAIL, message.EDE_NO_REACHABLE_AUTHORITY)

    # --- fetching ----------------------------------------------------------------------------

    def _fetch(
        self,
        key: Key,
        question: bytes,
        route: Route,
        *,
        demand: bool,
        client: _Client | None = None,
    ) -> Future[Outcome] | None:
        """The fetch for ``key`` (joined if one is in flight, else queued on the route's lane),
        with ``client`` waiting on it; None if a refresh (no client) was over the budget."""
        lane = self._lane(route)
        while True:
            with self._lock:
                running = self._inflight.get(key)
                if running is None:
                    future: Future[Outcome] = Future()
                    # partial, not closures over the _Fetch: a fetch -> job -> closure -> fetch
                    # cycle per query would leave every query's objects to the cyclic GC, whose
                    # full passes under a flood stopped every thread for 100-400 ms (measured,
                    # bench/starvation.py).
                    job = Job(
                        run=functools.partial(
                            self._run_fetch, future, key, question, route, demand
                        ),
                        cancel=functools.partial(self._cancel_fetch, future, key),
                        background=client is None,
                        queued_at=self.clock(),
                        waiters=[] if client is None else [client],
                    )
                    self._inflight[key] = _Fetch(future, job)
                    break
            # Outside our lock: joining a refresh may start a worker, which takes our lock.
            joined = Joined.RUNNING if client is None else lane.join(running.job, client)
            if joined is not Joined.GONE:
                self.stats.coalesced += 1
                return running.future
            self._forget(running.future, key)  # cancelled: every waiter had expired
        if not lane.submit(job):
            self._forget(future, key)
            if client is None:
                self.stats.refreshes_skipped += 1
                future.set_result(Outcome(None, None, Failure(Reason.OVERLOADED, "refresh budget")))
                return None
            future.set_result(Outcome(self.cache.peek(key), None, Failure(Reason.CLOSED, "closed")))
            return future
        self.stats.fetches += 1
        return future

    def _cancel_fetch(self, future: Future[Outcome], key: Key, reason: Reason) -> None:
        """A queued fetch that will not run: every client waiting on it was dropped
        (``expired``: nothing is cached, it says nothing about the name) or we closed."""
        self._forget(future, key)
        future.set_result(Outcome(self.cache.peek(key), None, Failure(reason, "not run")))

    def _run_fetch(
        self, future: Future[Outcome], key: Key, question: bytes, route: Route, demand: bool
    ) -> None:
        try:
            outcome = self._fetch_and_store(key, question, route, demand)
        except Exception as error:
            logger.exception("fetch failed unexpectedly")
            outcome = Outcome(None, None, Failure(Reason.INTERNAL, str(error)))
        self._forget(future, key)
        future.set_result(outcome)

    def _forget(self, future: Future[Outcome], key: Key) -> None:
        """The fetch of ``future`` is no longer the one in flight for ``key``."""
        with self._lock:
            fetch = self._inflight.get(key)
            if fetch is not None and fetch.future is future:
                del self._inflight[key]

    def _fetch_and_store(self, key: Key, question: bytes, route: Route, demand: bool) -> Outcome:
        qname = question[:-4]
        result = self._ask(qname, key, route, depth=0)
        now = self.clock()
        if isinstance(result, Failure):
            self.stats.failures += 1
            if not decide.caches_failure(result.reason):
                # A local condition, not an answer about the name: cache nothing.
                self.cache.mark_failed(key, now)
                return Outcome(self.cache.peek(key), None, result)
            entry = self.cache.store(key, message.build(question, wire.SERVFAIL, ()), now)
            if entry is None:
                self.cache.mark_failed(key, now)
                entry = self.cache.peek(key)
            return Outcome(entry, None, result)
        rcode, answer, authority, additional = result
        built = message.build(question, rcode, answer, authority, additional)
        stored = self.cache.store(key, built, now, demand=demand)
        return Outcome(stored, built, None)

    def _ask(
        self, qname: bytes, key: Key, route: Route, depth: int
    ) -> tuple[int, list[Record], list[Record], list[Record]] | Failure:
        """Ask ``route`` and apply the bailiwick rule; chase a chain that leaves it."""
        result = route.upstream.query(qname, key.qtype, key.qclass, do=key.do, cd=key.cd)
        if isinstance(result, Failure):
            return result
        assert isinstance(result, Reply)
        facts = result.facts
        reason = policy.reject_reason(facts, qname.lower(), key.qtype, key.qclass)
        if reason is not None:
            return Failure(Reason.SERVFAIL, reason)
        kept = message.sanitize(facts, route.zone)
        self.stats.dropped_records += kept.dropped
        answer = list(kept.answer)
        authority = list(kept.authority)
        additional = list(kept.additional)
        rcode = facts.rcode
        if kept.chase is None:
            return rcode, answer, authority, additional
        target_route = self.router.route(kept.chase.lower())
        if target_route is None or depth + len(facts.chain) >= message.MAX_CHAIN:
            # Nowhere to ask (forwarding off) or too long: the trusted part only, as kdns
            # answers an ExternalName today. It has no SOA, so it is served but not cached.
            return wire.NOERROR, answer, [], additional
        self.stats.chased += 1
        target = self._ask(kept.chase, key, target_route, depth + len(facts.chain))
        if isinstance(target, Failure):
            return target
        target_rcode, target_answer, target_authority, target_additional = target
        # RFC 6604 §3: the rcode is the one of the last name in the chain.
        return (
            target_rcode,
            answer + target_answer,
            target_authority,
            additional + target_additional,
        )


def _upstream_maker(clock: Callable[[], float]) -> Callable[[UpstreamConfig], Upstream]:
    """``UpstreamClient``s whose deadlines read the resolver's clock."""
    return functools.partial(UpstreamClient, clock=clock)


def ttl_policy_for(config: ResolverConfig) -> policy.TTLPolicy:
    """The TTL table for a routing config (``ResolverConfig.zone_ttls``)."""
    return policy.TTLPolicy(config.zone_ttls(), config.cache.default_ttl)
