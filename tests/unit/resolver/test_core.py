"""The query path (kdns/resolver/core.py) with fake upstreams, an injected clock and inline or
hand-run executors: no sockets, no sleeps."""

from __future__ import annotations

from collections.abc import Callable

import dns.edns
import dns.flags
import dns.rcode
import dns.rdatatype
import pytest

from kdns.dns import names as zone
from kdns.resolver import message
from kdns.resolver.cache import Cache, Key
from kdns.resolver.config import (
    CLUSTER_TTL,
    OTHER_TTL,
    CacheConfig,
    PrefetchConfig,
    ResolverConfig,
    StaleConfig,
    StaleMode,
    UpstreamConfig,
)
from kdns.resolver.core import DEFERRED, Deferred, Resolver, Route, Router, Settle, ttl_policy_for
from kdns.resolver.message import ClientQuery
from kdns.resolver.upstream import Failure
from tests.unit.resolver.fakes import (
    FakeClock,
    FakeUpstream,
    InlineExecutor,
    ManualExecutor,
    make_query,
    make_reply,
    parse,
    soa,
    ttls,
)

EXT = "www.example.test."
EXT_A = [f"{EXT} 300 IN A 192.0.2.1"]
SVC = "web.shop.svc.cluster.local."
CLUSTER_SOA = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 2 3 4 5"


class World:
    """A resolver wired to a cluster upstream and a default upstream, both fakes."""

    def __init__(
        self,
        stale: StaleConfig | None = None,
        prefetch: PrefetchConfig | None = None,
        executor: ManualExecutor | InlineExecutor | None = None,
        policy: object | None = None,
        max_pending: int = 4096,
        cache: CacheConfig | None = None,
    ) -> None:
        self.clock = FakeClock()
        self.cluster = FakeUpstream()
        self.default = FakeUpstream()
        self.stub = FakeUpstream()
        config = ResolverConfig(
            cluster_upstream=UpstreamConfig((("10.96.0.10", 53),)),
            upstream=UpstreamConfig((("192.0.2.53", 53),)),
            stub_domains=(("corp.test", UpstreamConfig((("192.0.2.99", 53),))),),
            stale=stale or StaleConfig(),
            prefetch=prefetch or PrefetchConfig(),
            cache=cache or CacheConfig(),
        )
        fakes = {
            config.cluster_upstream: self.cluster,
            config.upstream: self.default,
            config.stub_domains[0][1]: self.stub,
        }
        self.router = Router.from_config(config, lambda c: fakes[c])
        self.cache = Cache(
            config.cache,
            prefetch=config.prefetch,
            stale=config.stale,
            ttl_policy=ttl_policy_for(config),
            clock=self.clock,
        )
        self.executor = executor or InlineExecutor()
        self.resolver = Resolver(
            self.cache,
            self.router,
            executor=self.executor,
            policy=policy,  # type: ignore[arg-type]
            max_pending=max_pending,
        )

    def ask(self, name: str = EXT, qtype: str = "A", **kwargs: object) -> bytes:
        return self.resolver.resolve(make_query(name, qtype, **kwargs))  # type: ignore[arg-type]

    def answer(self, name: str = EXT, qtype: str = "A") -> tuple[bytes | None, list[bytes]]:
        delivered: list[bytes] = []
        now = self.resolver.answer(make_query(name, qtype), delivered.append)
        return now, delivered


@pytest.fixture(name="world")
def _world() -> World:
    return World()


def test_miss_then_hit_served_from_cache(world: World) -> None:
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    first = parse(world.ask(query_id=1))
    assert first.id == 1
    assert first.flags & dns.flags.RA
    assert first.answer[0].ttl == 30  # capped: `cache 30`
    world.clock.advance(10)
    second = parse(world.ask("WWW.example.test.", query_id=2))
    assert second.id == 2
    assert second.question[0].name.to_text() == "WWW.example.test."
    assert second.answer[0].ttl == 20
    assert world.default.count() == 1
    assert world.resolver.stats.hits == 1


def test_hit_is_returned_without_blocking(world: World) -> None:
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    world.ask()
    now, delivered = world.answer()
    assert now is not None
    assert delivered == []


@pytest.mark.parametrize(
    "failure",
    [Failure("timeout"), Failure("unreachable"), Failure("servfail"), Failure("refused")],
    ids=lambda f: f.reason,
)
def test_upstream_failure_is_servfail_never_nxdomain(world: World, failure: Failure) -> None:
    world.default.replies[(EXT, "A")] = failure
    reply = parse(world.ask(edns=True))
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert [(o.otype, o.code) for o in reply.options] == [(dns.edns.OptionType.EDE, 22)]
    # Cached 5 s (CoreDNS servfail default): no second upstream query inside it.
    world.clock.advance(4)
    assert parse(world.ask()).rcode() == dns.rcode.SERVFAIL
    assert world.default.count() == 1
    world.clock.advance(1)
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    assert parse(world.ask()).rcode() == dns.rcode.NOERROR
    assert world.default.count() == 2


def test_overloaded_upstream_is_servfail_and_not_cached(world: World) -> None:
    world.default.replies[(EXT, "A")] = Failure("overloaded")
    assert parse(world.ask()).rcode() == dns.rcode.SERVFAIL
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    assert parse(world.ask()).rcode() == dns.rcode.NOERROR


def test_negative_answers_cached_per_zone_policy(world: World) -> None:
    nx_ext = make_reply(EXT, authority=[soa(minimum=600)], rcode=dns.rcode.NXDOMAIN)
    world.default.replies[(EXT, "A")] = nx_ext
    world.cluster.replies[(SVC, "A")] = make_reply(
        SVC,
        authority=[CLUSTER_SOA.replace(" 5 IN", " 30 IN").replace("3 4 5", "3 4 30")],
        rcode=dns.rcode.NXDOMAIN,
    )
    ext = parse(world.ask())
    assert ext.rcode() == dns.rcode.NXDOMAIN
    assert ttls(world.ask()) == {30}  # `cache 30` caps denial for `.`
    svc = parse(world.ask(SVC))
    assert svc.rcode() == dns.rcode.NXDOMAIN
    assert svc.authority[0].ttl == 5  # cluster zone denial cap 5 s
    world.clock.advance(5)
    world.ask(SVC)
    assert world.cluster.count() == 2
    assert world.default.count() == 1


def test_routing(world: World) -> None:
    for upstream, name in [
        (world.cluster, SVC),
        (world.cluster, "10.0.96.10.in-addr.arpa."),
        (world.cluster, "a.ip6.arpa."),
        (world.stub, "db.corp.test."),
        (world.default, "example.org."),
    ]:
        upstream.default = make_reply(name, authority=[CLUSTER_SOA])
        world.ask(name)
        assert upstream.calls[-1][0] == name


def test_unrouted_names_are_refused() -> None:
    clock = FakeClock()
    cache = Cache(clock=clock)
    cluster = FakeUpstream()
    router = Router([Route(zone.to_wire("cluster.local"), cluster, "cluster")])
    resolver = Resolver(cache, router, executor=InlineExecutor())
    reply = parse(resolver.resolve(make_query(EXT)))
    assert reply.rcode() == dns.rcode.REFUSED
    assert cluster.count() == 0


def test_cluster_routes_get_cluster_ttl_policy() -> None:
    config = ResolverConfig(cluster_zones=("cluster.local", "cluster2.local"))
    table = ttl_policy_for(config)
    assert table.for_name(zone.to_wire("x.cluster2.local")) == CLUSTER_TTL
    assert table.for_name(zone.to_wire("x.example.test")) == OTHER_TTL


# --- serve-stale -----------------------------------------------------------------------------


def _expire(world: World, seconds: float = 31) -> None:
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    world.ask()
    world.clock.advance(seconds)


def test_immediate_serves_stale_and_refreshes() -> None:
    world = World(stale=StaleConfig(mode=StaleMode.IMMEDIATE), executor=ManualExecutor())
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    _first, delivered = world.answer()
    assert isinstance(world.executor, ManualExecutor)
    world.executor.run_all()
    assert len(delivered) == 1
    world.clock.advance(31)
    world.default.replies[(EXT, "A")] = make_reply(
        EXT, answer=["www.example.test. 300 IN A 192.0.2.2"]
    )
    now, _ = world.answer()
    assert now is not None
    stale = parse(now)
    assert stale.answer[0].ttl == 30
    assert stale.answer[0][0].address == "192.0.2.1"
    world.executor.run_all()  # the background refresh
    fresh = parse(world.ask())
    assert fresh.answer[0][0].address == "192.0.2.2"
    assert world.default.count() == 2


def test_verify_fresh_answer_wins_when_upstream_answers() -> None:
    world = World()
    _expire(world)
    world.default.replies[(EXT, "A")] = make_reply(
        EXT, answer=["www.example.test. 300 IN A 192.0.2.2"]
    )
    reply = parse(world.ask())
    assert reply.answer[0][0].address == "192.0.2.2"
    assert world.resolver.stats.stale_served == 0


@pytest.mark.parametrize(
    "failure", [Failure("timeout"), Failure("servfail")], ids=lambda f: f.reason
)
def test_verify_serves_stale_when_upstream_fails(failure: Failure) -> None:
    world = World()
    _expire(world, 500)
    world.default.replies[(EXT, "A")] = failure
    reply = parse(world.ask(edns=True))
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer[0].ttl == 30
    assert [(o.otype, o.code) for o in reply.options] == [(dns.edns.OptionType.EDE, 3)]
    # The failure recheck timer (RFC 8767 §5): stale again without asking for 30 s.
    world.clock.advance(29)
    assert parse(world.ask()).answer[0].ttl == 30
    assert world.default.count() == 2
    world.clock.advance(1)
    world.ask()
    assert world.default.count() == 3


def test_verify_timeout_serves_stale_and_refresh_completes_later() -> None:
    executor = ManualExecutor()
    world = World(stale=StaleConfig(verify_timeout_s=0.0), executor=executor)
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    world.answer()
    executor.run_all()
    world.clock.advance(40)
    world.default.replies[(EXT, "A")] = make_reply(
        EXT, answer=["www.example.test. 300 IN A 192.0.2.2"]
    )
    now, delivered = world.answer()
    assert now is None
    assert len(delivered) == 1  # the upstream is still "in flight": stale, at once
    assert parse(delivered[0]).answer[0][0].address == "192.0.2.1"
    executor.run_all()
    assert len(delivered) == 1  # exactly once
    hit = parse(world.ask())
    assert hit.answer[0][0].address == "192.0.2.2"


def test_failure_serves_stale_even_when_servfail_may_replace_it() -> None:
    world = World(stale=StaleConfig(prefer_positive=False))
    _expire(world, 100)
    world.default.replies[(EXT, "A")] = Failure("timeout")
    assert parse(world.ask()).answer[0][0].address == "192.0.2.1"  # this client: stale
    assert parse(world.ask()).rcode() == dns.rcode.SERVFAIL  # the cache now holds SERVFAIL


def test_stale_expires_after_max_stale() -> None:
    world = World(stale=StaleConfig(max_stale_s=3600))
    _expire(world, 30 + 3601)
    world.default.replies[(EXT, "A")] = Failure("timeout")
    assert parse(world.ask()).rcode() == dns.rcode.SERVFAIL


def test_stale_off_means_servfail() -> None:
    world = World(stale=StaleConfig(mode=StaleMode.OFF))
    _expire(world)
    world.default.replies[(EXT, "A")] = Failure("timeout")
    assert parse(world.ask()).rcode() == dns.rcode.SERVFAIL


def test_last_known_good_positive_beats_a_fresh_servfail() -> None:
    world = World()
    _expire(world, 100)
    world.default.replies[(EXT, "A")] = make_reply(EXT, rcode=dns.rcode.SERVFAIL)
    world.default.replies[(EXT, "A")] = Failure("servfail", "upstream said SERVFAIL")
    reply = parse(world.ask())
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer[0][0].address == "192.0.2.1"
    entry = world.cache.peek(Key.of(make_query(EXT)))
    assert entry is not None
    assert entry.kind is message.Kind.POSITIVE  # the SERVFAIL did not replace it


# --- coalescing and prefetch -----------------------------------------------------------------


def test_concurrent_misses_share_one_fetch() -> None:
    executor = ManualExecutor()
    world = World(executor=executor)
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    _, first = world.answer()
    _, second = world.answer()
    assert executor.run_all() == 1
    assert world.default.count() == 1
    assert len(first) == len(second) == 1
    assert world.resolver.stats.coalesced == 1


def test_popular_entry_prefetched_with_one_refresh_in_flight() -> None:
    executor = ManualExecutor()
    world = World(executor=executor)
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    world.answer()
    executor.run_all()
    world.ask()  # second query: popular
    world.clock.advance(26)
    assert world.resolver.run_prefetch() == []
    world.clock.advance(1)
    assert world.resolver.run_prefetch() == [Key.of(make_query(EXT))]
    assert world.resolver.run_prefetch() == []  # one look per lifetime, one fetch in flight
    executor.run_all()
    assert world.default.count() == 2
    world.clock.advance(10)  # past the old expiry: still a hit, fresh
    reply = parse(world.ask())
    assert reply.answer[0].ttl == 20


def test_refresh_joins_the_prefetch_in_flight() -> None:
    executor = ManualExecutor()
    world = World(executor=executor)
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    world.answer()
    executor.run_all()
    world.ask()
    world.clock.advance(27)
    assert world.resolver.run_prefetch() == [Key.of(make_query(EXT))]  # in flight, not run
    world.clock.advance(4)  # expired meanwhile: a client's stale refresh joins the prefetch
    _now, delivered = world.answer()
    assert executor.run_all() == 1
    assert world.default.count() == 2
    assert world.resolver.stats.coalesced == 1
    assert parse(delivered[0]).answer[0].ttl == 30  # the prefetched answer, fresh


def test_name_asked_once_per_ttl_stays_cached() -> None:
    world = World()
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    misses = []
    for _round in range(12):
        before = world.default.count()
        world.ask()
        misses.append(world.default.count() - before)
        for _tick in range(31 * 4):
            world.clock.advance(0.25)
            world.resolver.run_prefetch()
    # The first two asks miss; then prefetch keeps it warm (coredns#3037 would miss every time).
    assert sum(misses[2:]) == 0


# --- the search-path seam --------------------------------------------------------------------


class LocalNXDomain:
    def __init__(self) -> None:
        self.asked: list[tuple[str, object]] = []

    def decide(
        self, query: ClientQuery, client: tuple[str, int] | None, settle: Settle
    ) -> bytes | Deferred | None:
        name = zone.to_text(query.question.wire_lower)
        self.asked.append((name, client))
        if name.endswith(".svc.cluster.local.example.test."):
            return message.error_reply(query, dns.rcode.NXDOMAIN)
        return None


def test_search_path_policy_decides_before_cache_and_upstream() -> None:
    policy = LocalNXDomain()
    world = World(policy=policy)
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    junk = "x.ns.svc.cluster.local.example.test."
    query = make_query(junk)
    reply = parse(world.resolver.resolve(query, ("10.1.2.3", 5353)))
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert world.default.count() == 0
    assert policy.asked == [(junk, ("10.1.2.3", 5353))]
    assert parse(world.ask()).rcode() == dns.rcode.NOERROR
    assert world.default.count() == 1


class Later:
    """A policy that takes every query over and settles it when the test says."""

    def __init__(self) -> None:
        self.settles: list[Settle] = []

    def decide(
        self, query: ClientQuery, client: tuple[str, int] | None, settle: Settle
    ) -> bytes | Deferred | None:
        self.settles.append(settle)
        return DEFERRED


@pytest.mark.parametrize(
    ("settled_with", "rcode", "upstream_asked"),
    [
        pytest.param("reply", dns.rcode.NXDOMAIN, 0, id="settled-with-a-reply"),
        pytest.param(None, dns.rcode.NOERROR, 1, id="handed-back-to-the-resolver"),
    ],
)
def test_deferred_policy_settles_later(
    settled_with: str | None, rcode: int, upstream_asked: int
) -> None:
    policy = Later()
    world = World(policy=policy)
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    query = make_query(EXT)
    got: list[bytes] = []
    assert world.resolver.answer(query, got.append, ("10.1.2.3", 5353)) is None
    assert got == []
    assert world.default.count() == 0
    [settle] = policy.settles
    settle(None if settled_with is None else message.error_reply(query, dns.rcode.NXDOMAIN))
    [reply] = got
    assert parse(reply).rcode() == rcode
    assert parse(reply).id == 0x1234
    assert world.default.count() == upstream_asked
    assert world.resolver.stats.policy_deferred == 1


def test_ask_bypasses_the_policy_and_uses_the_cache() -> None:
    policy = Later()
    world = World(policy=policy)
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    for _ in range(2):
        reply = parse(world.resolver.ask(zone.to_wire(EXT), dns.rdatatype.A))
        assert reply.rcode() == dns.rcode.NOERROR
        assert [rrset.to_text() for rrset in reply.answer] == [EXT_A[0].replace("300", "30")]
    assert policy.settles == []
    assert world.default.count() == 1  # the second ask was a cache hit
    assert world.resolver.stats.internal_queries == 2
    assert world.resolver.stats.queries == 0


# --- bailiwick and chasing -------------------------------------------------------------------


def test_out_of_bailiwick_cname_is_chased_through_its_own_route(world: World) -> None:
    world.cluster.replies[(SVC, "A")] = make_reply(
        SVC,
        answer=[
            f"{SVC} 5 IN CNAME payments.example.test.",
            "payments.example.test. 86400 IN A 203.0.113.66",  # poison: not the cluster's to say
        ],
        additional=["www.bank.test. 86400 IN A 203.0.113.66"],
    )
    world.default.replies[("payments.example.test.", "A")] = make_reply(
        "payments.example.test.", answer=["payments.example.test. 60 IN A 192.0.2.7"]
    )
    reply = parse(world.ask(SVC))
    assert [rrset.to_text() for rrset in reply.answer] == [
        f"{SVC} 5 IN CNAME payments.example.test.",
        "payments.example.test. 5 IN A 192.0.2.7",
    ]
    assert not reply.additional
    assert world.resolver.stats.chased == 1
    assert world.resolver.stats.dropped_records == 2
    world.ask(SVC)
    assert world.default.count() == 1  # the composed answer is cached


def test_chased_target_nxdomain_is_the_rcode(world: World) -> None:
    world.cluster.replies[(SVC, "A")] = make_reply(
        SVC, answer=[f"{SVC} 5 IN CNAME gone.example.test."]
    )
    world.default.replies[("gone.example.test.", "A")] = make_reply(
        "gone.example.test.", authority=[soa()], rcode=dns.rcode.NXDOMAIN
    )
    reply = parse(world.ask(SVC))
    assert reply.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: the rcode of the last name
    assert reply.answer[0].rdtype == dns.rdatatype.CNAME


def test_chase_failure_is_servfail(world: World) -> None:
    world.cluster.replies[(SVC, "A")] = make_reply(
        SVC, answer=[f"{SVC} 5 IN CNAME x.example.test."]
    )
    world.default.replies[("x.example.test.", "A")] = Failure("timeout")
    assert parse(world.ask(SVC)).rcode() == dns.rcode.SERVFAIL


def test_poisoned_records_are_never_served(world: World) -> None:
    world.default.replies[(EXT, "A")] = make_reply(
        EXT,
        answer=[*EXT_A, "www.bank.test. 86400 IN A 203.0.113.66"],
        authority=["bank.test. 86400 IN NS ns.attacker.test."],
        additional=["ns.attacker.test. 86400 IN A 203.0.113.66"],
    )
    reply = parse(world.ask())
    assert [rrset.name.to_text() for rrset in reply.answer] == [EXT]
    assert not reply.authority
    assert not reply.additional
    bank = parse(world.ask("www.bank.test."))  # not in the cache: asked upstream
    assert bank.rcode() == dns.rcode.SERVFAIL
    assert world.default.count() == 2


def test_uncacheable_answer_is_served_with_its_own_ttls(world: World) -> None:
    world.default.replies[(EXT, "AAAA")] = make_reply(EXT, "AAAA")  # NODATA without SOA
    reply = parse(world.ask(qtype="AAAA"))
    assert reply.rcode() == dns.rcode.NOERROR
    world.ask(qtype="AAAA")
    assert world.default.count() == 2


# --- size limits and overload ----------------------------------------------------------------


def test_truncation_for_udp_clients(world: World) -> None:
    big = [f'{EXT} 60 IN TXT "{"x" * 200}" "{i}"' for i in range(4)]
    world.default.replies[(EXT, "TXT")] = make_reply(EXT, "TXT", answer=big)
    small = parse(world.ask(qtype="TXT"))
    assert small.flags & dns.flags.TC
    assert not small.answer
    full = parse(world.resolver.resolve(make_query(EXT, "TXT"), tcp=True))
    assert len(full.answer[0]) == 4
    edns = parse(world.ask(qtype="TXT", edns=True, payload=4096))
    assert not edns.flags & dns.flags.TC


def test_max_pending_answers_servfail_at_once() -> None:
    executor = ManualExecutor()
    world = World(executor=executor, max_pending=1)
    world.default.handler = lambda name, qtype: make_reply(
        name, qtype, answer=[f"{name} 60 IN A 192.0.2.1"]
    )
    _, first = world.answer("a.example.test.")
    now, _second = world.answer("b.example.test.")
    assert now is not None
    assert parse(now).rcode() == dns.rcode.SERVFAIL
    executor.run_all()
    assert len(first) == 1
    assert world.resolver.stats.overloaded == 1


def test_do_and_cd_are_forwarded_and_keyed(world: World) -> None:
    world.default.handler = lambda name, qtype: make_reply(name, qtype, answer=EXT_A)
    world.ask(do=True)
    world.ask(cd=True)
    world.ask()
    assert world.default.calls == [
        (EXT, "A", True, False),
        (EXT, "A", False, True),
        (EXT, "A", False, False),
    ]


def test_reconfigure_keeps_the_cache(world: World) -> None:
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    world.ask()
    other = FakeUpstream()
    make: Callable[[UpstreamConfig], FakeUpstream] = lambda _c: other  # noqa: E731
    world.resolver.reconfigure(ResolverConfig(upstream=UpstreamConfig((("192.0.2.54", 53),))), make)
    assert parse(world.ask()).rcode() == dns.rcode.NOERROR  # still cached
    assert other.count() == 0
    assert parse(world.ask(SVC)).rcode() == dns.rcode.SERVFAIL  # now routed to `other` (no script)
    assert other.count() == 1
