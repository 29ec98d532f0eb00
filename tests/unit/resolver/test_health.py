"""Upstream health bookkeeping (kdns/resolver/upstream.py ``Health``) and config validation."""

from __future__ import annotations

import pytest

from kdns.dns import names as zone
from kdns.resolver.config import (
    CacheConfig,
    Policy,
    PrefetchConfig,
    ResolverConfig,
    StaleConfig,
    Transport,
    UpstreamConfig,
    ZoneTTL,
    cluster_upstream,
    parse_address,
)
from kdns.resolver.core import Resolver
from kdns.resolver.upstream import Failure, Health
from tests.unit.resolver.fakes import FakeClock


def test_failures_mark_down_and_reorder() -> None:
    clock = FakeClock()
    health = Health(3, max_fails=2, probe_interval_s=0.5, clock=clock)
    assert health.order() == [0, 1, 2]
    assert not health.failure(0)
    assert health.failure(0)  # second consecutive failure: down
    assert health.is_down(0)
    assert health.order() == [1, 2, 0]  # tried last, not never
    assert health.success(0)  # any good reply brings it back
    assert health.order() == [0, 1, 2]


@pytest.mark.parametrize(
    ("policy", "picks", "orders"),
    [
        pytest.param(Policy.SEQUENTIAL, [], [[0, 2, 3, 1], [0, 2, 3, 1], [0, 2, 3, 1]], id="sequential"),
        pytest.param(Policy.ROUND_ROBIN, [], [[0, 2, 3, 1], [2, 3, 0, 1], [3, 0, 2, 1]], id="round-robin"),
        # rand(n) answers from picks: Fisher-Yates over the healthy [0, 2, 3].
        pytest.param(Policy.RANDOM, [2, 0, 0, 1, 1, 0, 0, 0, 0], [[3, 0, 2, 1], [2, 3, 0, 1], [0, 2, 3, 1]],
                     id="random"),
    ],
)  # fmt: skip
def test_policy_orders_the_healthy_servers_down_ones_last(
    policy: Policy, picks: list[int], orders: list[list[int]]
) -> None:
    # CoreDNS forward "policy": which healthy server is asked first; server 1 is down.
    feed = iter(picks)
    health = Health(4, max_fails=1, probe_interval_s=0.5, clock=FakeClock(), policy=policy,
                    rand=lambda n: next(feed))  # fmt: skip
    health.failure(1)
    assert [health.order() for _ in orders] == orders


def test_success_resets_the_count() -> None:
    health = Health(1, max_fails=2, probe_interval_s=0.5, clock=FakeClock())
    health.failure(0)
    health.success(0)
    assert not health.failure(0)


def test_probes_due_by_interval() -> None:
    clock = FakeClock()
    health = Health(2, max_fails=1, probe_interval_s=0.5, clock=clock)
    health.failure(1)
    assert health.probes_due() == []
    clock.advance(0.5)
    assert health.probes_due() == [1]
    assert health.probes_due() == []  # stamped
    clock.advance(0.5)
    assert health.probes_due() == [1]


def test_failure_answered() -> None:
    assert Failure("servfail").answered
    assert Failure("refused").answered
    assert not Failure("timeout").answered
    assert not Failure("overloaded").answered


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("10.96.0.10", ("10.96.0.10", 53)),
        ("10.96.0.10:5353", ("10.96.0.10", 5353)),
        ("[fd00::a]:53", ("fd00::a", 53)),
        ("fd00::a", ("fd00::a", 53)),
    ],
)
def test_parse_address(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["", ":53", "10.0.0.1:x", "10.0.0.1:70000"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="upstream address"):
        parse_address(text)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: UpstreamConfig(()), "servers"),
        (lambda: UpstreamConfig((("dns.google", 53),)), "not an IP"),
        (lambda: UpstreamConfig((("10.0.0.1", 53),), try_timeout_s=0), "try_timeout_s"),
        (
            lambda: UpstreamConfig((("10.0.0.1", 53),), try_timeout_s=3, overall_timeout_s=2),
            "overall_timeout_s",
        ),
        (lambda: ZoneTTL(success_min_s=40, success_max_s=30), "success_min_s"),
        (lambda: CacheConfig(servfail_s=301), "servfail_s"),
        (lambda: CacheConfig(max_entries=0), "max_entries"),
        (lambda: PrefetchConfig(lead_percent=5), "lead_percent"),
        (lambda: StaleConfig(ttl_s=0), "ttl_s"),
    ],
)
def test_config_validation_names_the_field(make: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()  # type: ignore[operator]


def test_cluster_upstream_defaults_to_tcp() -> None:
    assert cluster_upstream((("10.96.0.10", 53),)).transport is Transport.TCP
    assert (
        cluster_upstream((("10.96.0.10", 53),), transport=Transport.UDP).transport is Transport.UDP
    )


def test_resolver_from_config_routes_like_nodelocal() -> None:
    config = ResolverConfig(
        cluster_upstream=cluster_upstream((("10.96.0.10", 53),)),
        upstream=UpstreamConfig((("192.0.2.53", 53),)),
        stub_domains=(("corp.example", UpstreamConfig((("10.0.0.53", 53),))),),
    )
    resolver = Resolver.from_config(config)
    try:
        names = {
            "a.b.svc.cluster.local": "cluster:cluster.local",
            "1.0.96.10.in-addr.arpa": "cluster:in-addr.arpa",
            "x.ip6.arpa": "cluster:ip6.arpa",
            "db.corp.example": "stub:corp.example",
            "example.org": "default",
        }
        for name, route_name in names.items():
            route = resolver.router.route(zone.to_wire(name))
            assert route is not None
            assert route.name == route_name
        cluster = resolver.router.route(zone.to_wire("cluster.local"))
        reverse = resolver.router.route(zone.to_wire("in-addr.arpa"))
        assert cluster is not None
        assert reverse is not None
        assert cluster.upstream is reverse.upstream  # one client, one connection pool
        assert len(resolver.router.upstreams()) == 3
    finally:
        resolver.close()
