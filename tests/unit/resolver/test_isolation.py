"""Per-route capacity in the resolver core (issue 11, item 1), played in virtual time.

Each route (upstream group) has its own workers, its own bound on waiting client queries and
its own refresh budget (``kdns.resolver.lanes``), so a slow, dead or flooded upstream for one
zone never delays another. The executor is a ``SimulatedPool`` with as many workers as the
routes have together (``workers`` x routes: the same threads, shared or split); fake upstreams
move the injected clock by their latency, and every ``done`` callback reads its delivery time
from that clock. No threads, no sockets, no sleeps.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.rcode
import pytest

from kdns.resolver.cache import Cache
from kdns.resolver.config import ResolverConfig, UpstreamConfig
from kdns.resolver.core import Resolver, Router, ttl_policy_for
from kdns.resolver.lanes import LaneLimits
from kdns.resolver.upstream import Failure
from tests.unit.resolver.fakes import (
    FakeClock,
    FakeUpstream,
    SimulatedPool,
    make_query,
    make_reply,
    parse,
)

CLUSTER_LATENCY_S = 0.001
"""kdns answers in about a millisecond."""
CLUSTER_BOUND_S = 0.05
"""The issue's target: cluster names answered within 50 ms while the default route suffers."""


@dataclass
class Delivery:
    name: str
    asked_at: float
    reply: bytes | None = None
    delivered_at: float | None = None
    calls: int = 0

    @property
    def latency(self) -> float:
        assert self.delivered_at is not None, f"{self.name} was never settled"
        return self.delivered_at - self.asked_at


@dataclass
class World:
    """A resolver with a cluster route (kdns, fast), a default route and a stub route."""

    workers: int = 2
    max_pending: int = 4096
    limits: dict[str, float] = field(default_factory=dict)
    """Only the settings a case changes, so the same rows also run against the old core."""
    default_latency_s: float = 1.0

    def __post_init__(self) -> None:
        self.clock = FakeClock(0.0)
        self.cluster = FakeUpstream(
            handler=lambda name, qtype: make_reply(
                name, qtype, answer=[f"{name} 5 IN {qtype} {_rdata(qtype)}"]
            ),
            clock=self.clock,
            latency_s=CLUSTER_LATENCY_S,
        )
        self.default = FakeUpstream(
            handler=lambda name, qtype: make_reply(
                name, qtype, answer=[f"{name} 300 IN A 192.0.2.1"]
            ),
            clock=self.clock,
            latency_s=self.default_latency_s,
        )
        self.stub = FakeUpstream(clock=self.clock)
        config = ResolverConfig(
            cluster_upstream=UpstreamConfig((("10.96.0.10", 53),)),
            upstream=UpstreamConfig((("192.0.2.53", 53),)),
            stub_domains=(("corp.test", UpstreamConfig((("192.0.2.99", 53),))),),
        )
        fakes = {
            config.cluster_upstream: self.cluster,
            config.upstream: self.default,
            config.stub_domains[0][1]: self.stub,
        }
        router = Router.from_config(config, lambda c: fakes[c])
        cache = Cache(
            config.cache,
            prefetch=config.prefetch,
            stale=config.stale,
            ttl_policy=ttl_policy_for(config),
            clock=self.clock,
        )
        self.pool = SimulatedPool(self.clock, size=self.workers * len(router.routes()))
        self.resolver = Resolver(
            cache,
            router,
            executor=self.pool,
            workers=self.workers,
            max_pending=self.max_pending,
            **self.limits,  # type: ignore[arg-type]
        )

    def ask(self, name: str, qtype: str = "A", *, at: float, tcp: bool = False) -> Delivery:
        self.clock.now = at
        delivery = Delivery(name, at)

        def done(reply: bytes | None) -> None:
            delivery.calls += 1
            delivery.reply = reply
            delivery.delivered_at = self.clock.now

        now = self.resolver.answer(make_query(name, qtype), done, tcp=tcp)
        if now is not None:
            done(now)
        return delivery


def _rdata(qtype: str) -> str:
    return "cart.shop.svc.cluster.local." if qtype == "PTR" else "10.96.10.11"


def _rcode(delivery: Delivery) -> int:
    assert delivery.reply is not None, f"{delivery.name}: no reply"
    return parse(delivery.reply).rcode()


def _cluster_name(index: int) -> tuple[str, str]:
    """Cluster-zone and reverse names, each asked once (a miss, so it needs kdns)."""
    if index % 2:
        return f"10.{index}.96.10.in-addr.arpa.", "PTR"
    return f"svc{index}.shop.svc.cluster.local.", "A"


# --- isolation ------------------------------------------------------------------------------

ISOLATION_CASES = [
    # (default upstream latency, its result, burst size, burst length)
    pytest.param(1.0, "answer", 1000, 0.3, id="slow-default-1s-burst-1000"),
    pytest.param(5.0, "timeout", 1000, 0.3, id="dead-default-5s-timeouts"),
    pytest.param(0.02, "answer", 5000, 0.3, id="flooded-default-5000-in-0.3s"),
]


@pytest.mark.parametrize(("latency_s", "result", "burst", "length_s"), ISOLATION_CASES)
def test_cluster_names_answer_in_kdns_time_while_the_default_route_suffers(
    latency_s: float, result: str, burst: int, length_s: float
) -> None:
    world = World(default_latency_s=latency_s)
    if result == "timeout":
        world.default.handler = lambda _name, _qtype: Failure("timeout", "no server answered")
    asks = [(length_s * i / burst, f"x{i}.example.test.", "A") for i in range(burst)]
    # Cluster names during the burst and for 20 s after it.
    cluster_times = [0.05 * i for i in range(8)] + [0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0]
    asks += [(t, *_cluster_name(i)) for i, t in enumerate(cluster_times)]
    asks.sort(key=lambda ask: ask[0])
    deliveries = [world.ask(name, qtype, at=at) for at, name, qtype in asks]
    world.pool.run()
    cluster = [d for d in deliveries if not d.name.endswith("example.test.")]
    assert len(cluster) == len(cluster_times)
    for delivery in cluster:
        assert _rcode(delivery) == dns.rcode.NOERROR, delivery.name
        assert delivery.latency <= CLUSTER_BOUND_S, (delivery.name, delivery.latency)


# --- overflow -------------------------------------------------------------------------------


def test_a_full_route_answers_its_overflow_servfail_at_once_and_only_its_own() -> None:
    world = World(workers=1, max_pending=3)
    waiting = [world.ask(f"w{i}.example.test.", at=0.0) for i in range(3)]
    overflow = world.ask("over.example.test.", at=0.1)
    # Answered before anything ran: SERVFAIL at once, never queued behind the others.
    assert overflow.delivered_at == 0.1
    assert _rcode(overflow) == dns.rcode.SERVFAIL
    cluster = world.ask("svc.shop.svc.cluster.local.", at=0.1)
    reverse = world.ask("11.10.96.10.in-addr.arpa.", "PTR", at=0.1)
    assert cluster.reply is None
    assert reverse.reply is None
    world.pool.run()
    assert [_rcode(d) for d in (cluster, reverse)] == [dns.rcode.NOERROR] * 2
    assert cluster.latency <= CLUSTER_BOUND_S
    assert reverse.latency <= CLUSTER_BOUND_S
    assert [_rcode(d) for d in waiting] == [dns.rcode.NOERROR] * 3
    assert world.resolver.stats.overloaded == 1
    lanes = world.resolver.lanes()
    assert lanes["default"].stats.overflows == 1
    assert lanes["cluster:cluster.local"].stats.overflows == 0


# --- queue age ------------------------------------------------------------------------------

QUEUE_AGE_CASES = [
    # (limits, transport, answered, what the others get). One worker, 1 s per fetch, ten
    # names at t=0: fetch k starts at t=k-1 and has waited k-1 s.
    pytest.param({}, "udp", 3, None, id="default-2s-udp-dropped-silently"),
    pytest.param({}, "tcp", 3, dns.rcode.SERVFAIL, id="default-2s-tcp-servfail-frees-the-stream"),
    pytest.param({"max_queue_wait_s": 5.0}, "udp", 6, None, id="5s-udp"),
    pytest.param({"max_queue_wait_s": 0.5}, "udp", 1, None, id="0.5s-udp"),
]


@pytest.mark.parametrize(("limits", "transport", "answered", "others"), QUEUE_AGE_CASES)
def test_a_query_that_waited_longer_than_its_client_is_dropped_not_answered_late(
    limits: dict[str, float], transport: str, answered: int, others: int | None
) -> None:
    world = World(workers=1, limits=limits)
    bound = limits.get("max_queue_wait_s", 2.0)
    deliveries = [
        world.ask(f"q{i}.example.test.", at=0.0, tcp=transport == "tcp") for i in range(10)
    ]
    world.pool.run()
    assert all(d.calls == 1 for d in deliveries)  # settled exactly once
    good = [d for d in deliveries if d.reply is not None and _rcode(d) == dns.rcode.NOERROR]
    assert [d.name for d in good] == [f"q{i}.example.test." for i in range(answered)]
    for delivery in good:  # never later than the bound plus one fetch
        assert delivery.latency <= bound + world.default_latency_s
    rest = deliveries[answered:]
    if others is None:
        assert [d.reply for d in rest] == [None] * len(rest)
    else:
        assert [_rcode(d) for d in rest] == [others] * len(rest)
    assert world.default.count() == answered  # the dropped ones never reached the upstream
    assert world.resolver.lanes()["default"].stats.expired == len(rest)
    assert world.resolver.stats.expired == len(rest)


def test_a_retry_that_joins_the_queued_fetch_keeps_it_alive() -> None:
    world = World(workers=1)
    first = [world.ask(f"q{i}.example.test.", at=0.0) for i in range(4)]
    retry = world.ask("q3.example.test.", at=2.5)  # glibc/musl ask again; same key
    world.pool.run()
    assert [d.reply is not None for d in first] == [True, True, True, False]
    assert _rcode(retry) == dns.rcode.NOERROR
    assert retry.latency <= 2.0 + world.default_latency_s
    assert world.default.count("q3.example.test.") == 1


def test_a_full_queue_of_expired_queries_admits_new_ones() -> None:
    world = World(workers=1, max_pending=3)
    [world.ask(f"old{i}.example.test.", at=0.0) for i in range(3)]
    fresh = world.ask("fresh.example.test.", at=10.0)  # the three waited 10 s: gone
    assert fresh.reply is None  # admitted, not an overflow SERVFAIL
    world.pool.run()
    assert _rcode(fresh) == dns.rcode.NOERROR
    assert world.resolver.lanes()["default"].stats.overflows == 0


# --- refreshes ------------------------------------------------------------------------------


def _warm(world: World, count: int) -> list[str]:
    """``count`` popular default-route names, cached with TTL 30 and asked twice."""
    names = [f"p{i}.example.test." for i in range(count)]
    latency, world.default.latency_s = world.default.latency_s, 0.0
    for name in names:
        world.ask(name, at=0.0)
    world.pool.run()
    for name in names:
        world.ask(name, at=1.0)
        world.ask(name, at=2.0)
    world.default.latency_s = latency
    return names


REFRESH_CASES = [
    # (workers, limits, refreshes started at once)
    pytest.param(4, {}, 3, id="default-budget-4-leaves-a-worker-for-clients"),
    pytest.param(8, {}, 4, id="default-budget-4-of-8"),
    pytest.param(8, {"max_refreshes": 1}, 1, id="budget-1"),
    pytest.param(8, {"max_refreshes": 0}, 0, id="budget-0-no-prefetch"),
]


@pytest.mark.parametrize(("workers", "limits", "started"), REFRESH_CASES)
def test_prefetches_never_crowd_out_client_queries(
    workers: int, limits: dict[str, float], started: int
) -> None:
    world = World(workers=workers, limits=limits)
    names = _warm(world, 40)
    world.clock.now = 28.0  # within the last 10 % of the 30 s TTL: all due
    refreshed = world.resolver.run_prefetch()
    assert len(refreshed) == started
    client = world.ask("client.example.test.", at=28.0)
    world.pool.run()
    assert _rcode(client) == dns.rcode.NOERROR
    assert client.latency <= world.default_latency_s + 0.01  # no wait for a worker
    lane = world.resolver.lanes()["default"]
    assert lane.stats.refreshes_skipped == len(names) - started


def test_a_queued_refresh_waits_for_client_queries() -> None:
    world = World(workers=2, limits={"max_refreshes": 1})
    _warm(world, 1)
    world.clock.now = 28.0
    busy = [world.ask(f"c{i}.example.test.", at=28.0) for i in range(2)]  # both workers
    assert len(world.resolver.run_prefetch()) == 1  # queued: no worker free
    later = world.ask("c2.example.test.", at=28.0)
    world.pool.run()
    asked = [name for name, *_ in world.default.calls[1:]]
    assert asked == ["c0.example.test.", "c1.example.test.", "c2.example.test.", "p0.example.test."]
    assert [_rcode(d) for d in (*busy, later)] == [dns.rcode.NOERROR] * 3


def test_a_client_that_joins_a_queued_refresh_is_served_as_a_client() -> None:
    world = World(workers=2, limits={"max_refreshes": 1})
    _warm(world, 1)
    world.clock.now = 28.0
    busy = [world.ask(f"c{i}.example.test.", at=28.0) for i in range(2)]  # both workers
    assert len(world.resolver.run_prefetch()) == 1  # p0's refresh queued
    stale = world.ask("p0.example.test.", at=31.0)  # expired: VERIFY waits on the refresh
    later = world.ask("c2.example.test.", at=31.0)
    world.pool.run()
    asked = [name for name, *_ in world.default.calls[1:]]
    assert asked == ["c0.example.test.", "c1.example.test.", "p0.example.test.", "c2.example.test."]
    assert world.default.count("p0.example.test.") == 2  # the warm-up and the one refresh
    assert [_rcode(d) for d in (*busy, stale, later)] == [dns.rcode.NOERROR] * 4
    assert stale.latency <= 2 * world.default_latency_s  # behind c0/c1 only, as a client
    assert world.resolver.lanes()["default"].waiting == 0


# --- the node's own queries ----------------------------------------------------------------


def test_the_nodes_own_query_never_waits_for_a_busy_routes_worker() -> None:
    """A search-path walk's probe (``Resolver.ask``) that would queue behind the route's busy
    workers is SERVFAIL at once: the walk declines and the client walks itself, instead of
    holding the policy's pool (shared by every route) for a slow upstream's time."""
    world = World(workers=1)
    client = world.ask("c.example.test.", at=0.0)  # the one worker is taken
    reply = world.resolver.ask(b"\x01y\x07example\x04test\x00", 1, timeout_s=0.05)
    assert parse(reply).rcode() == dns.rcode.SERVFAIL
    lane = world.resolver.lanes()["default"]
    assert lane.queued == 1  # the client's fetch only: the probe was never queued
    world.pool.run()
    assert _rcode(client) == dns.rcode.NOERROR
    assert [name for name, *_ in world.default.calls] == ["c.example.test."]
    assert world.resolver.stats.internal_shed == 1


def test_the_nodes_own_query_joins_a_fetch_in_flight_and_uses_free_workers() -> None:
    world = World(workers=2)
    world.ask("c.example.test.", at=0.0)  # one worker of two taken
    lane = world.resolver.lanes()["default"]
    # Neither is answered within its 10 ms (the pool has not run): both wait, neither is shed.
    world.resolver.ask(b"\x01c\x07example\x04test\x00", 1, timeout_s=0.01)
    assert lane.queued == 1  # joined the client's fetch of the same name
    world.resolver.ask(b"\x01z\x07example\x04test\x00", 1, timeout_s=0.01)
    assert lane.queued == 2  # the second worker was free: queued for it
    world.pool.run()
    assert sorted(name for name, *_ in world.default.calls) == [
        "c.example.test.",
        "z.example.test.",
    ]
    assert world.resolver.stats.internal_shed == 0


# --- reload ---------------------------------------------------------------------------------


def test_a_reload_applies_the_limits_to_every_route_but_keeps_its_workers() -> None:
    world = World(workers=2)
    before = world.resolver.lanes()
    config = ResolverConfig(
        upstream=UpstreamConfig((("192.0.2.54", 53),)),
        workers=9,
        max_pending=7,
        max_queue_wait_s=3.0,
        max_refreshes=1,
    )
    world.resolver.reconfigure(config, lambda _c: FakeUpstream())
    after = world.resolver.lanes()
    assert after["default"] is before["default"]  # same queue, same workers, same counters
    assert {name: lane.limits for name, lane in after.items()} == dict.fromkeys(
        after, LaneLimits(workers=2, max_pending=7, max_queue_wait_s=3.0, max_refreshes=1)
    )


def test_queries_behind_a_dead_upstream_are_dropped_at_their_deadline_not_when_it_frees() -> None:
    world = World(workers=1, default_latency_s=5.0)
    world.default.handler = lambda _name, _qtype: Failure("timeout", "no server answered")
    deliveries = [world.ask(f"q{i}.example.test.", at=0.0) for i in range(3)]
    world.clock.now = 1.9
    assert world.resolver.expire_waiting() == 0
    world.clock.now = 2.5  # no worker has taken them yet (the one there is frees at 5 s)
    assert world.resolver.expire_waiting() == 3
    assert [(d.reply, d.delivered_at) for d in deliveries] == [(None, 2.5)] * 3
    world.pool.run()
    assert world.default.count() == 0
    assert world.resolver.lanes()["default"].waiting == 0


# --- garbage ---------------------------------------------------------------------------------


def _answered(world: World) -> None:
    for i in range(50):
        world.ask(f"a{i}.example.test.", at=0.0)
        world.ask(f"a{i}.example.test.", at=0.0)  # joins the queued fetch
    world.pool.run()


def _expired(world: World) -> None:
    for i in range(50):
        world.ask(f"e{i}.example.test.", at=0.0)
    world.clock.now = 10.0
    world.resolver.expire_waiting()
    world.pool.run()


def _overflowed(world: World) -> None:
    for i in range(50):
        world.ask(f"o{i}.example.test.", at=0.0)
    world.pool.run()


def _refreshed(world: World) -> None:
    _warm(world, 20)
    world.clock.now = 28.0
    world.resolver.run_prefetch()
    world.pool.run()


GARBAGE_CASES = [
    pytest.param(_answered, {}, id="answered-and-joined"),
    pytest.param(_expired, {}, id="dropped-after-max-queue-wait"),
    pytest.param(_overflowed, {"max_pending": 5}, id="overflow-servfail"),
    pytest.param(_refreshed, {}, id="prefetched-and-skipped"),
]


@pytest.mark.parametrize(("scenario", "options"), GARBAGE_CASES)
def test_a_query_leaves_no_reference_cycles_for_the_garbage_collector(
    scenario: Callable[[World], None], options: dict[str, int]
) -> None:
    """Under a flood, objects in cycles pile up until a full GC pass, which stops every thread
    (cluster lookups included) for as long as it walks the heap: 100-400 ms measured with
    4,096 queries waiting. Every query's objects must go by reference counting."""
    world = World(**options)  # type: ignore[arg-type]
    gc.collect()
    gc.disable()
    try:
        scenario(world)
        world.resolver.lanes()
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert unreachable == 0
