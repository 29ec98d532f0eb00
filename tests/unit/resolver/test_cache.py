"""The cache (kdns/resolver/cache.py) with an injected clock: keys, countdown TTLs, negative
and SERVFAIL entries, bounds, serve-stale bookkeeping and prefetch scheduling."""

from __future__ import annotations

import dns.rcode
import pytest

from kdns.dns import names as zone
from kdns.resolver import message
from kdns.resolver.cache import Cache, Key
from kdns.resolver.config import (
    CacheConfig,
    PrefetchConfig,
    StaleConfig,
    StaleMode,
)
from kdns.resolver.message import Kind
from tests.unit.resolver.fakes import FakeClock, make_query, make_reply, parse, soa, ttls

N = "www.example.test."
A = [f"{N} 300 IN CNAME web.example.test.", "web.example.test. 60 IN A 192.0.2.1"]


def built_of(reply: bytes) -> message.Built:
    facts = message.inspect(reply)
    kept = message.sanitize(facts, zone.ROOT)
    return message.build(
        reply[12 : facts.question_end], facts.rcode, kept.answer, kept.authority, kept.additional
    )


def key(name: str = N, qtype: int = 1, do: bool = False, cd: bool = False) -> Key:
    return Key(zone.to_wire(name), qtype, 1, do, cd)


@pytest.fixture(name="clock")
def _clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="cache")
def _cache(clock: FakeClock) -> Cache:
    return Cache(clock=clock)


def test_key_folds_case_and_separates_do_cd() -> None:
    plain = Key.of(make_query("WWW.Example.TEST."))
    assert plain == key()
    assert Key.of(make_query(N, do=True)) == key(do=True)
    assert Key.of(make_query(N, cd=True)) == key(cd=True)
    assert Key.of(make_query(N, "AAAA")) != plain


def test_hit_counts_down_and_every_rr_shares_the_ttl(cache: Cache, clock: FakeClock) -> None:
    cache.store(key(), built_of(make_reply(N, answer=A)))  # min TTL 60 → capped at 30
    for elapsed, expected in [(0, 30), (0.9, 30), (1.0, 29), (12.5, 18), (29.99, 1)]:
        clock.now = 1000.0 + elapsed
        hit = cache.lookup(key())
        assert hit is not None
        assert not hit.stale
        assert hit.ttl == expected
        reply = hit.reply(make_query("wWw.example.test.", query_id=77))
        assert ttls(reply) == {expected}
        parsed = parse(reply)
        assert parsed.id == 77
        assert parsed.question[0].name.to_text() == "wWw.example.test."
    clock.now = 1030.0
    hit = cache.lookup(key())
    assert hit is not None
    assert hit.stale  # expired: only usable as stale data


def test_lookup_separates_keys(cache: Cache) -> None:
    cache.store(key(), built_of(make_reply(N, answer=A)))
    assert cache.lookup(key(do=True)) is None
    assert cache.lookup(key(cd=True)) is None
    assert cache.lookup(key(qtype=28)) is None
    assert cache.lookup(key("WWW.EXAMPLE.TEST.".lower())) is not None


def test_negative_entries(cache: Cache, clock: FakeClock) -> None:
    nx = built_of(make_reply(N, authority=[soa(minimum=20)], rcode=dns.rcode.NXDOMAIN))
    entry = cache.store(key(), nx)
    assert entry is not None
    assert entry.kind is Kind.NXDOMAIN
    assert entry.ttl == 20
    hit = cache.lookup(key())
    assert hit is not None
    reply = parse(hit.reply(make_query(N)))
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.authority[0].ttl == 20
    nodata = built_of(make_reply(N, "AAAA", authority=[soa(minimum=20)]))
    stored = cache.store(key(qtype=28), nodata)
    assert stored is not None
    assert stored.kind is Kind.NODATA


def test_servfail_cached_briefly_and_not_stale_served(cache: Cache, clock: FakeClock) -> None:
    cache.store(key(), built_of(make_reply(N, rcode=dns.rcode.SERVFAIL)))
    hit = cache.lookup(key())
    assert hit is not None
    assert hit.is_servfail
    assert parse(hit.reply(make_query(N))).rcode() == dns.rcode.SERVFAIL
    clock.advance(5)
    assert cache.lookup(key()) is None
    assert cache.peek(key()) is None  # an expired SERVFAIL is dropped, never served stale


def test_servfail_does_not_replace_last_known_good(cache: Cache, clock: FakeClock) -> None:
    cache.store(key(), built_of(make_reply(N, answer=A)))
    clock.advance(100)  # expired, within max_stale_s
    kept = cache.store(key(), built_of(make_reply(N, rcode=dns.rcode.SERVFAIL)))
    assert kept is not None
    assert kept.kind is Kind.POSITIVE
    assert kept.failed_at == clock.now
    assert cache.recheck_pending(kept, clock.now)
    assert not cache.recheck_pending(kept, clock.now + 30)
    assert cache.stats.kept_last_good == 1


def test_servfail_replaces_when_stale_is_off(clock: FakeClock) -> None:
    cache = Cache(stale=StaleConfig(mode=StaleMode.OFF), clock=clock)
    cache.store(key(), built_of(make_reply(N, answer=A)))
    clock.advance(100)
    entry = cache.store(key(), built_of(make_reply(N, rcode=dns.rcode.SERVFAIL)))
    assert entry is not None
    assert entry.kind is Kind.ERROR


def test_nxdomain_replaces_positive(cache: Cache) -> None:
    cache.store(key(), built_of(make_reply(N, answer=A)))
    entry = cache.store(key(), built_of(make_reply(N, authority=[soa()], rcode=dns.rcode.NXDOMAIN)))
    assert entry is not None
    assert entry.kind is Kind.NXDOMAIN


def test_stale_window(clock: FakeClock) -> None:
    cache = Cache(stale=StaleConfig(max_stale_s=100, ttl_s=30), clock=clock)
    cache.store(key(), built_of(make_reply(N, answer=A)))
    clock.advance(30 + 100)
    hit = cache.lookup(key())
    assert hit is not None
    assert hit.stale
    assert hit.ttl == 30
    assert ttls(hit.reply(make_query(N))) == {30}
    clock.advance(0.5)
    assert cache.lookup(key()) is None
    assert len(cache) == 0


def test_stale_off_returns_nothing_but_keeps_history(clock: FakeClock) -> None:
    cache = Cache(stale=StaleConfig(mode=StaleMode.OFF), clock=clock)
    cache.store(key(), built_of(make_reply(N, answer=A)))
    clock.advance(31)
    assert cache.lookup(key()) is None
    entry = cache.store(key(), built_of(make_reply(N, answer=A)))
    assert entry is not None
    assert (entry.previous_ask, entry.last_ask) == (1000.0, 1031.0)


def test_question_mismatch_is_dropped(cache: Cache) -> None:
    assert cache.store(key("other.example.test."), built_of(make_reply(N, answer=A))) is None
    assert cache.store(key(qtype=28), built_of(make_reply(N, answer=A))) is None
    assert cache.stats.drops == 2
    assert len(cache) == 0


def test_uncacheable_is_counted(cache: Cache) -> None:
    assert cache.store(key(), built_of(make_reply(N, rcode=dns.rcode.NXDOMAIN))) is None
    assert cache.stats.uncacheable == 1


def test_bounded_by_entries(clock: FakeClock) -> None:
    cache = Cache(CacheConfig(max_entries=3), clock=clock)
    for i in range(5):
        name = f"n{i}.example.test."
        cache.store(key(name), built_of(make_reply(name, answer=[f"{name} 60 IN A 192.0.2.1"])))
    assert len(cache) == 3
    assert cache.stats.evictions == 2
    assert cache.peek(key("n0.example.test.")) is None
    assert cache.peek(key("n4.example.test.")) is not None


def test_bounded_by_bytes_lru(clock: FakeClock) -> None:
    replies = {
        f"n{i}.example.test.": built_of(
            make_reply(f"n{i}.example.test.", answer=[f"n{i}.example.test. 60 IN A 192.0.2.1"])
        )
        for i in range(4)
    }
    size = next(iter(replies.values())).message.__len__() + 400
    cache = Cache(CacheConfig(max_bytes=size * 3), clock=clock)
    names = list(replies)
    for name in names[:3]:
        cache.store(key(name), replies[name])
    assert cache.lookup(key(names[0])) is not None  # touch: n1 is now least recent
    cache.store(key(names[3]), replies[names[3]])
    assert cache.size_bytes <= size * 3
    assert cache.peek(key(names[1])) is None
    assert cache.peek(key(names[0])) is not None


def test_entry_larger_than_the_cache_is_not_stored(clock: FakeClock) -> None:
    cache = Cache(CacheConfig(max_bytes=100), clock=clock)
    assert cache.store(key(), built_of(make_reply(N, answer=A))) is None


def test_prefetch_popular_entry_once_per_lifetime(cache: Cache, clock: FakeClock) -> None:
    cache.store(key(), built_of(make_reply(N, answer=A)))  # TTL 30: due at 27 s
    cache.lookup(key())  # second hit in this lifetime: popular
    assert cache.next_due() == 1027.0
    clock.advance(26)
    assert cache.due_prefetches() == []
    clock.advance(1)
    picked = cache.due_prefetches()
    assert [refresh.key for refresh in picked] == [key()]
    assert picked[0].question == make_query(N).packet[12 : make_query(N).question.end]
    assert cache.due_prefetches() == []  # one look per lifetime


def test_prefetch_skips_a_name_asked_once(cache: Cache, clock: FakeClock) -> None:
    cache.store(key(), built_of(make_reply(N, answer=A)))
    clock.advance(27)
    assert cache.due_prefetches() == []


def test_prefetch_disabled(clock: FakeClock) -> None:
    cache = Cache(prefetch=PrefetchConfig(enabled=False), clock=clock)
    cache.store(key(), built_of(make_reply(N, answer=A)))
    assert cache.next_due() is None


def _simulate(period_s: float, k: int, duration_s: float = 900.0, stop_at: float | None = None):
    """A client asks N every ``period_s``; prefetches store fresh answers when picked.
    Returns (misses after the first two queries, refreshes after ``stop_at``)."""
    clock = FakeClock(0.0)
    cache = Cache(prefetch=PrefetchConfig(keep_warm_ttls=k), clock=clock)
    answer = built_of(make_reply(N, answer=[f"{N} 30 IN A 192.0.2.1"]))
    misses = 0
    late_refreshes = 0
    next_query = 0.0
    queries = 0
    step = 0.25
    while clock.now <= duration_s:
        for refresh in cache.due_prefetches():
            cache.store(refresh.key, answer, demand=False)
            if stop_at is not None and clock.now > stop_at:
                late_refreshes += 1
        if clock.now >= next_query and (stop_at is None or clock.now < stop_at):
            hit = cache.lookup(key())
            if hit is None or hit.stale:
                cache.store(key(), answer)
                if queries >= 2:
                    misses += 1
            queries += 1
            next_query += period_s
        clock.advance(step)
    return misses, late_refreshes


@pytest.mark.parametrize("period_s", [30.5, 31.0, 37.0, 45.0, 59.0, 60.0])
def test_keep_warm_serves_a_name_asked_once_per_ttl(period_s: float) -> None:
    """coredns#3037/#4045: with only the popularity rule every such query misses."""
    coredns_misses, _ = _simulate(period_s, k=0)
    ours, _ = _simulate(period_s, k=2)
    assert coredns_misses >= 10
    assert ours == 0


def test_keep_warm_lets_go_of_names_asked_less_than_once_per_two_ttls() -> None:
    misses, _ = _simulate(75.0, k=2)
    assert misses >= 5  # not kept warm: the upstream load stays what the client causes


def test_keep_warm_stops_refreshing_an_abandoned_name() -> None:
    _, late = _simulate(31.0, k=2, duration_s=600.0, stop_at=300.0)
    assert late <= 2


@pytest.mark.parametrize("edns", [False, True])
@pytest.mark.parametrize("rd", [False, True])
@pytest.mark.parametrize("cd", [False, True])
def test_hit_reply_equals_patch(clock: FakeClock, edns: bool, rd: bool, cd: bool) -> None:
    """The memoized hit path builds exactly what ``message.patch`` builds."""
    cache = Cache(clock=clock)
    built = built_of(make_reply(N, answer=A, authority=[soa()], additional=[]))
    cache.store(key(cd=cd), built)
    query = make_query("wWw.EXAMPLE.test.", edns=edns, rd=rd, cd=cd, query_id=4242)
    for step in range(3):
        hit = cache.lookup(key(cd=cd))
        assert hit is not None
        expected = message.patch(
            built.message,
            query.packet[:2],
            query.flags,
            query.packet[12 : query.question.end],
            hit.ttl,
            built.ttl_offsets,
            message.reply_opt(query),
        )
        assert hit.reply(query) == expected
        assert hit.reply(query) == expected  # from the memo
        clock.advance(1.5 * step + 1)


def test_failed_prefetch_never_replaces_a_fresh_entry(clock: FakeClock) -> None:
    cache = Cache(stale=StaleConfig(mode=StaleMode.OFF), clock=clock)
    cache.store(key(), built_of(make_reply(N, answer=A)))
    clock.advance(27)
    kept = cache.store(key(), built_of(make_reply(N, rcode=dns.rcode.SERVFAIL)), demand=False)
    assert kept is not None
    assert kept.kind is Kind.POSITIVE
    hit = cache.lookup(key())
    assert hit is not None
    assert hit.ttl == 3
