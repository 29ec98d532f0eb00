"""Cache policy as pure functions (kdns/resolver/policy.py): cacheability, TTLs, prefetch."""

from __future__ import annotations

from dataclasses import dataclass

import dns.rcode
import pytest

from kdns.dns import names as zone
from kdns.resolver import message, policy
from kdns.resolver.config import (
    CLUSTER_TTL,
    OTHER_TTL,
    PrefetchConfig,
    ResolverConfig,
    UpstreamConfig,
    ZoneTTL,
)
from kdns.resolver.core import ttl_policy_for
from tests.unit.resolver.fakes import make_reply, soa


def built_of(reply: bytes) -> message.Built:
    facts = message.inspect(reply)
    kept = message.sanitize(facts, zone.ROOT)
    return message.build(
        reply[12 : facts.question_end], facts.rcode, kept.answer, kept.authority, kept.additional
    )


@dataclass(frozen=True)
class TTLCase:
    id: str
    reply: bytes
    zone_ttl: ZoneTTL
    expected: int | None
    servfail_s: int = 5


N = "x.example.test."
TTL_CASES = [
    TTLCase("positive-capped", make_reply(N, answer=[f"{N} 300 IN A 192.0.2.1"]), OTHER_TTL, 30),
    TTLCase("positive-floored", make_reply(N, answer=[f"{N} 0 IN A 192.0.2.1"]), OTHER_TTL, 5),
    TTLCase(
        "positive-min-over-all-rrs",
        make_reply(
            N, answer=[f"{N} 20 IN CNAME y.example.test.", "y.example.test. 12 IN A 192.0.2.1"]
        ),
        OTHER_TTL,
        12,
    ),
    TTLCase(
        "nxdomain-min-soa-ttl-minimum",
        make_reply(N, authority=[soa(ttl=3600, minimum=20)], rcode=dns.rcode.NXDOMAIN),
        OTHER_TTL,
        20,
    ),
    TTLCase(
        "nxdomain-soa-ttl-lower",
        make_reply(N, authority=[soa(ttl=10, minimum=60)], rcode=dns.rcode.NXDOMAIN),
        OTHER_TTL,
        10,
    ),
    TTLCase(
        "nxdomain-cluster-denial-cap-5",
        make_reply(N, authority=[soa(ttl=3600, minimum=60)], rcode=dns.rcode.NXDOMAIN),
        CLUSTER_TTL,
        5,
    ),
    TTLCase(
        "nodata-bounded-by-cname-ttl",
        make_reply(
            N, "AAAA", answer=[f"{N} 7 IN CNAME y.example.test."], authority=[soa(minimum=60)]
        ),
        OTHER_TTL,
        7,
    ),
    TTLCase(
        "nxdomain-without-soa-not-cached",
        make_reply(N, rcode=dns.rcode.NXDOMAIN),
        OTHER_TTL,
        None,
    ),
    TTLCase("nodata-without-soa-not-cached", make_reply(N, "AAAA"), OTHER_TTL, None),
    TTLCase("servfail-5s", make_reply(N, rcode=dns.rcode.SERVFAIL), OTHER_TTL, 5),
    TTLCase("servfail-off", make_reply(N, rcode=dns.rcode.SERVFAIL), OTHER_TTL, None, 0),
    TTLCase("refused-never", make_reply(N, rcode=dns.rcode.REFUSED), OTHER_TTL, None),
    TTLCase(
        "ttl-zero-with-zero-floor-not-cached",
        make_reply(N, answer=[f"{N} 0 IN A 192.0.2.1"]),
        ZoneTTL(0, 30, 0, 30),
        None,
    ),
]


@pytest.mark.parametrize("case", TTL_CASES, ids=lambda c: c.id)
def test_cache_ttl(case: TTLCase) -> None:
    assert policy.cache_ttl(built_of(case.reply), case.zone_ttl, case.servfail_s) == case.expected


def test_reject_reason() -> None:
    name = zone.to_wire(N)
    good = message.inspect(make_reply(N, answer=[f"{N} 5 IN A 192.0.2.1"]))
    assert policy.reject_reason(good, name, 1, 1) is None
    truncated = message.inspect(make_reply(N, tc=True))
    assert policy.reject_reason(truncated, name, 1, 1) == "truncated"
    assert policy.reject_reason(good, zone.to_wire("other.test"), 1, 1) == "question mismatch"
    assert policy.reject_reason(good, name, 28, 1) == "question mismatch"


def test_nodelocal_default_ttl_table() -> None:
    """nodecache.md §1.3: cluster zone success 30 / denial 5, reverse zones and . ``cache 30``."""
    config = ResolverConfig(
        cluster_upstream=UpstreamConfig((("10.96.0.10", 53),)),
        upstream=UpstreamConfig((("192.0.2.53", 53),)),
    )
    table = ttl_policy_for(config)
    assert table.for_name(zone.to_wire("a.ns.svc.cluster.local")) == ZoneTTL(5, 30, 5, 5)
    assert table.for_name(zone.to_wire("10.0.96.10.in-addr.arpa")) == ZoneTTL(5, 30, 5, 30)
    assert table.for_name(zone.to_wire("example.com")) == ZoneTTL(5, 30, 5, 30)


def test_ttl_policy_longest_suffix_wins() -> None:
    table = policy.TTLPolicy(
        [("example.com", ZoneTTL(1, 10, 1, 10)), ("a.example.com", ZoneTTL(2, 20, 2, 20))],
        ZoneTTL(3, 30, 3, 30),
    )
    assert table.for_name(zone.to_wire("x.a.example.com")).success_max_s == 20
    assert table.for_name(zone.to_wire("b.example.com")).success_max_s == 10
    assert table.for_name(zone.to_wire("example.org")).success_max_s == 30


@pytest.mark.parametrize(
    ("ttl", "due_after"),
    [(30, 27), (5, 4), (100, 90), (10, 9)],
)
def test_prefetch_due_at_lead_percent(ttl: int, due_after: float) -> None:
    assert policy.prefetch_due(0.0, ttl, PrefetchConfig()) == due_after


def test_prefetch_due_off_and_short() -> None:
    assert policy.prefetch_due(0.0, 30, PrefetchConfig(enabled=False)) is None
    assert policy.prefetch_due(0.0, 1, PrefetchConfig()) is None


INF = float("inf")


@dataclass(frozen=True)
class PrefetchCase:
    id: str
    hits: int
    last_ask: float
    previous_ask: float
    fire: bool
    k: int = 2
    now: float = 100.0
    ttl: int = 30


PREFETCH_CASES = [
    PrefetchCase("popular", hits=2, last_ask=99, previous_ask=98, fire=True),
    PrefetchCase(
        "popular-even-without-keep-warm", hits=2, last_ask=99, previous_ask=98, fire=True, k=0
    ),
    PrefetchCase("asked-once-ever", hits=1, last_ask=80, previous_ask=-INF, fire=False),
    PrefetchCase("asked-once-per-ttl", hits=1, last_ask=80, previous_ask=49, fire=True),
    PrefetchCase(
        "not-asked-this-lifetime-but-recently", hits=0, last_ask=60, previous_ask=29, fire=True
    ),
    PrefetchCase("last-ask-older-than-k-ttls", hits=0, last_ask=39, previous_ask=10, fire=False),
    PrefetchCase(
        "asks-further-apart-than-k-ttls", hits=1, last_ask=99, previous_ask=38, fire=False
    ),
    PrefetchCase("k3-wider-window", hits=0, last_ask=20, previous_ask=-60, fire=True, k=3),
    PrefetchCase("k0-coredns-rule-only", hits=1, last_ask=99, previous_ask=98, fire=False, k=0),
]


@pytest.mark.parametrize("case", PREFETCH_CASES, ids=lambda c: c.id)
def test_should_prefetch(case: PrefetchCase) -> None:
    config = PrefetchConfig(keep_warm_ttls=case.k)
    assert (
        policy.should_prefetch(
            case.hits, case.last_ask, case.previous_ask, case.now, case.ttl, config
        )
        is case.fire
    )
