"""nodecache's cache hits served by the C loop (kdns/serve/_fastpath.c ``CacheView``): the same
bytes as the resolver's own hit (``Hit.reply``), TTLs counted down, the fallback for everything
C must not answer, and its hits absorbed into the entries (counts, ask times, LRU, prefetch).

The C clock is ``time.monotonic``'s, so these caches run on it; entries are stored "in the past"
(``store(now=monotonic() - age)``) at half-second ages, half a second from any TTL boundary,
instead of waiting for TTLs to count down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.rcode
import pytest

from kdns.dns import names as zone
from kdns.dns.edns import opt_record
from kdns.resolver.cache import Cache, Key
from kdns.resolver.config import CacheConfig, PrefetchConfig
from kdns.serve import accel
from kdns.serve.accel import FastPath
from tests.unit.resolver.fakes import FakeClock, make_query, make_reply, parse, soa, ttls
from tests.unit.resolver.test_cache import built_of

pytestmark = pytest.mark.skipif(not accel.available, reason=f"no C accelerator: {accel.reason}")

MAX_UDP = 1232
OPTS = (opt_record(MAX_UDP, False), opt_record(MAX_UDP, True))
N = "www.example.test."


@dataclass(frozen=True)
class Stored:
    """An upstream reply the cache holds, for the query (name, type) it answered."""

    name: str
    qtype: str
    reply: bytes


ENTRIES = {
    "positive-three-A": Stored(N, "A", make_reply(N, answer=[
        f"{N} 300 IN A 192.0.2.1", f"{N} 300 IN A 192.0.2.2", f"{N} 300 IN A 192.0.2.3"])),
    "cname-chain": Stored(N, "A", make_reply(N, answer=[
        f"{N} 300 IN CNAME web.example.test.", "web.example.test. 60 IN A 192.0.2.1"])),
    "nxdomain-soa": Stored("nx.example.test.", "A", make_reply(
        "nx.example.test.", authority=[soa()], rcode=dns.rcode.NXDOMAIN)),
    "nodata-soa": Stored(N, "AAAA", make_reply(N, "AAAA", authority=[soa()])),
    "txt": Stored("t.example.test.", "TXT", make_reply(
        "t.example.test.", "TXT", answer=['t.example.test. 300 IN TXT "hello world"'])),
}  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """How a client asks: the name's case and the header and EDNS bits that pick a variant."""

    upper: bool = False
    rd: bool = True
    cd: bool = False
    edns: bool = False
    do: bool = False
    payload: int = 1232


SHAPES = {
    "plain": Shape(),
    "mixed-case": Shape(upper=True),
    "no-rd": Shape(rd=False),
    "cd": Shape(cd=True),
    "edns": Shape(edns=True),
    "edns-small-payload": Shape(edns=True, payload=512),
    "do": Shape(edns=True, do=True),
    "do-cd-no-rd": Shape(edns=True, do=True, cd=True, rd=False),
}
AGES_S = (0.5, 12.5, 28.5)  # the default cache caps these TTLs at 30 s


def _key(name: str, qtype: str, shape: Shape) -> Key:
    return Key(zone.to_wire(name).lower(), {"A": 1, "AAAA": 28, "TXT": 16}[qtype], 1,
               shape.do, shape.cd)  # fmt: skip


def _packet(name: str, qtype: str, shape: Shape, query_id: int = 0x4242) -> bytes:
    asked = name.upper() if shape.upper else name
    query = make_query(asked, qtype, edns=shape.edns, do=shape.do, cd=shape.cd, rd=shape.rd,
                       query_id=query_id, payload=shape.payload)  # fmt: skip
    return query.packet


def _python_reply(cache: Cache, key: Key, packet: bytes) -> bytes:
    """The resolver's own hit for ``packet``: ``Hit.reply`` (what the handler's shortcut and
    ``Resolver.answer`` send for a fresh hit that fits)."""
    from kdns.serve.protocol import Query, screen

    query = screen(packet, MAX_UDP)
    assert isinstance(query, Query)
    hit = cache.lookup(key)
    assert hit is not None
    assert not hit.stale
    return hit.reply(query)


class Fallback:
    """The handler C calls for what it does not answer: records the call, answers a marker."""

    MARKER = b"fallback"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, _packet: bytes, _tcp: object = False) -> bytes:
        self.calls += 1
        return self.MARKER


def _fast_path(cache: Cache) -> FastPath:
    fast = accel.cache_fast_path(cache, OPTS, MAX_UDP, lambda _p, _peer: None, lambda: None)
    assert fast is not None
    return fast


def _c_answer(fast: FastPath, packet: bytes, fallback: Fallback) -> bytes | None:
    from kdns.serve import _fastpath

    reply = _fastpath.answer(fast.answers, fallback, packet)
    assert reply is None or isinstance(reply, bytes)
    return reply


def _stored(cache: Cache, stored: Stored, shape: Shape, age_s: float) -> Key:
    key = _key(stored.name, stored.qtype, shape)
    entry = cache.store(key, built_of(stored.reply), now=time.monotonic() - age_s)
    assert entry is not None
    assert cache.install_view(key, entry)
    return key


# --- the same bytes as the resolver's hit -----------------------------------------------------


@pytest.mark.parametrize("age_s", AGES_S, ids=[f"age-{age}s" for age in AGES_S])
@pytest.mark.parametrize("shape_id", list(SHAPES))
@pytest.mark.parametrize("entry_id", list(ENTRIES))
def test_c_hit_is_the_resolvers_hit_reply(entry_id: str, shape_id: str, age_s: float) -> None:
    stored, shape = ENTRIES[entry_id], SHAPES[shape_id]
    cache = Cache()
    fast = _fast_path(cache)
    key = _stored(cache, stored, shape, age_s)
    fallback = Fallback()
    for query_id in (0x0001, 0xBEEF):
        packet = _packet(stored.name, stored.qtype, shape, query_id)
        via_c = _c_answer(fast, packet, fallback)
        assert fallback.calls == 0, "C did not answer a fresh hit"
        assert via_c == _python_reply(cache, key, packet)
    assert via_c is not None
    assert ttls(via_c) == {30 - int(age_s)}
    assert parse(via_c).question[0].name.to_text() == (
        stored.name.upper() if shape.upper else stored.name
    )


# --- what C leaves to the fallback ------------------------------------------------------------


def _expired(cache: Cache, fast: FastPath) -> bytes:
    _stored(cache, ENTRIES["positive-three-A"], Shape(), age_s=30.5)
    return _packet(N, "A", Shape())


def _other_variant(cache: Cache, fast: FastPath) -> bytes:
    _stored(cache, ENTRIES["positive-three-A"], Shape(), age_s=0.5)
    return _packet(N, "A", Shape(edns=True, do=True))  # the DO key has no entry


def _two_questions(cache: Cache, fast: FastPath) -> bytes:
    _stored(cache, ENTRIES["positive-three-A"], Shape(), age_s=0.5)
    packet = bytearray(_packet(N, "A", Shape()))
    packet[5] = 2  # QDCOUNT 2: not a hot-path shape
    return bytes(packet) + packet[12:]


def _replaced(cache: Cache, fast: FastPath) -> bytes:
    key = _stored(cache, ENTRIES["positive-three-A"], Shape(), age_s=0.5)
    cache.store(key, built_of(ENTRIES["cname-chain"].reply))  # a refresh: its view is gone
    return _packet(N, "A", Shape())


def _evicted(cache: Cache, fast: FastPath) -> bytes:
    small = Cache(CacheConfig(max_entries=1))
    fast.answers.publish_cache(_fast_path(small).answers.cached, small.hit_log)
    _stored(small, ENTRIES["positive-three-A"], Shape(), age_s=0.5)
    other = ENTRIES["txt"]
    small.store(_key(other.name, other.qtype, Shape()), built_of(other.reply))
    return _packet(N, "A", Shape())


def _cleared(cache: Cache, fast: FastPath) -> bytes:
    _stored(cache, ENTRIES["positive-three-A"], Shape(), age_s=0.5)
    cache.clear()
    return _packet(N, "A", Shape())


def _withdrawn(cache: Cache, fast: FastPath) -> bytes:
    _stored(cache, ENTRIES["positive-three-A"], Shape(), age_s=0.5)
    fast.answers.publish_cache(None, None)  # the handler's drain()
    return _packet(N, "A", Shape())


def _needs_truncation(cache: Cache, fast: FastPath) -> bytes:
    big = make_reply(N, answer=[f"{N} 300 IN A 192.0.2.{i}" for i in range(1, 40)])
    _stored(cache, Stored(N, "A", big), Shape(), age_s=0.5)
    return _packet(N, "A", Shape())  # no EDNS: over 512 bytes, the fallback truncates


LEFT_TO_FALLBACK: dict[str, Callable[[Cache, FastPath], bytes]] = {
    "expired-entry": _expired,
    "other-do-cd-variant": _other_variant,
    "two-questions": _two_questions,
    "replaced-entry": _replaced,
    "evicted-entry": _evicted,
    "cleared-cache": _cleared,
    "views-withdrawn": _withdrawn,
    "needs-truncation": _needs_truncation,
}


@pytest.mark.parametrize("case", list(LEFT_TO_FALLBACK))
def test_c_leaves_it_to_the_fallback(case: str) -> None:
    cache = Cache()
    fast = _fast_path(cache)
    packet = LEFT_TO_FALLBACK[case](cache, fast)
    fallback = Fallback()
    assert _c_answer(fast, packet, fallback) == Fallback.MARKER
    assert fallback.calls == 1


def test_a_servfail_entry_gets_no_view() -> None:
    cache = Cache()
    _fast_path(cache)
    key = _key(N, "A", Shape())
    entry = cache.store(key, built_of(make_reply(N, rcode=dns.rcode.SERVFAIL)))
    assert entry is not None
    assert not cache.install_view(key, entry)


def test_an_entry_no_longer_cached_gets_no_view() -> None:
    cache = Cache()
    _fast_path(cache)
    key = _key(N, "A", Shape())
    old = cache.store(key, built_of(ENTRIES["positive-three-A"].reply))
    cache.store(key, built_of(ENTRIES["cname-chain"].reply))
    assert old is not None
    assert not cache.install_view(key, old)


def test_an_injected_clock_turns_views_off() -> None:
    cache = Cache(clock=FakeClock())
    assert accel.cache_fast_path(cache, OPTS, MAX_UDP, lambda _p, _peer: None, lambda: None) is None
    assert cache.enable_views(accel.cache_view) is None


# --- C's hits, absorbed -------------------------------------------------------------------------


def test_c_hits_are_absorbed_into_the_entry_and_the_stats() -> None:
    cache = Cache()
    fast = _fast_path(cache)
    key = _stored(cache, ENTRIES["positive-three-A"], Shape(), age_s=0.5)
    entry = cache.peek(key)
    assert entry is not None
    fallback = Fallback()
    before = time.monotonic()
    for query_id in range(5):
        assert _c_answer(fast, _packet(N, "A", Shape(), query_id), fallback) != Fallback.MARKER
    after = time.monotonic()
    assert cache.stats.hits == 0
    assert entry.hits == 1
    assert len(cache.hit_log) == 1  # the view, once
    assert cache.absorb_hits() == 5
    assert (entry.hits, cache.stats.hits, cache.stats.view_hits) == (6, 5, 5)
    assert before <= entry.previous_ask <= entry.last_ask <= after
    assert cache.absorb_hits() == 0
    assert cache.hit_log == []
    _c_answer(fast, _packet(N, "A", Shape(), 9), fallback)  # logged again after the take
    assert cache.absorb_hits() == 1
    assert entry.hits == 7


def test_c_hits_count_for_the_prefetch_rule() -> None:
    config = PrefetchConfig(min_hits=3, keep_warm_ttls=0, min_ttl_s=2)
    picked = []
    for c_hits in (0, 3):
        cache = Cache(prefetch=config)
        fast = _fast_path(cache)
        key = _key(N, "A", Shape())
        # Stored by a prefetch (no client demand) 28.5 s ago: due (lead 3 s of 30), not popular.
        entry = cache.store(key, built_of(ENTRIES["positive-three-A"].reply),
                            now=time.monotonic() - 28.5, demand=False)  # fmt: skip
        assert entry is not None
        assert cache.install_view(key, entry)
        for query_id in range(c_hits):
            _c_answer(fast, _packet(N, "A", Shape(), query_id), Fallback())
        cache.absorb_hits()  # what Resolver.run_prefetch does first
        picked.append([refresh.key for refresh in cache.due_prefetches()])
    assert picked == [[], [_key(N, "A", Shape())]]


def test_c_hits_keep_an_entry_recent_in_the_lru() -> None:
    cache = Cache(CacheConfig(max_entries=2))
    fast = _fast_path(cache)
    first = _stored(cache, ENTRIES["positive-three-A"], Shape(), age_s=0.5)
    second = _key("t.example.test.", "TXT", Shape())
    cache.store(second, built_of(ENTRIES["txt"].reply))
    _c_answer(fast, _packet(N, "A", Shape()), Fallback())
    cache.absorb_hits()  # the first entry becomes the most recent
    third = _key("nx.example.test.", "A", Shape())
    cache.store(third, built_of(ENTRIES["nxdomain-soa"].reply))
    assert cache.peek(first) is not None
    assert cache.peek(second) is None


def test_drop_views_withdraws_every_type_and_variant_of_a_name_only() -> None:
    # What a search-path policy's claim does (SearchPath.watch_claims -> Cache.drop_views).
    cache = Cache()
    fast = _fast_path(cache)
    for shape in (Shape(), Shape(edns=True, do=True), Shape(cd=True)):
        _stored(cache, ENTRIES["positive-three-A"], shape, age_s=0.5)
    _stored(cache, ENTRIES["nodata-soa"], Shape(), age_s=0.5)
    _stored(cache, ENTRIES["txt"], Shape(), age_s=0.5)
    cache.drop_views(zone.to_wire(N))
    fallback = Fallback()
    for shape in (Shape(), Shape(edns=True, do=True), Shape(cd=True)):
        assert _c_answer(fast, _packet(N, "A", shape), fallback) == Fallback.MARKER
    assert _c_answer(fast, _packet(N, "AAAA", Shape()), fallback) == Fallback.MARKER
    assert fallback.calls == 4
    assert _c_answer(fast, _packet("t.example.test.", "TXT", Shape()), fallback) != Fallback.MARKER
    key = _key(N, "A", Shape())
    entry = cache.peek(key)
    assert entry is not None
    assert cache.install_view(key, entry)  # the policy's claim expired: the shortcut may again
    assert _c_answer(fast, _packet(N, "A", Shape()), fallback) != Fallback.MARKER
