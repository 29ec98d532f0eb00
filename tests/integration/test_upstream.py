"""The upstream client and the resolver over real loopback sockets: a scriptable fault upstream
(tests/support/fault_upstream.py) proves every hardening rule, and a real NSD
(tests/support/nsd.py) is the authoritative peer for the ordinary paths.

Timeouts are short (0.3 s per try) so failure paths stay fast; nothing sleeps a fixed time.
TTL behaviour is tested with an injected clock even here: only the network is real.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import dns.edns
import dns.flags
import dns.rcode
import dns.rdatatype
import pytest

from kdns.dns import names as zone
from kdns.resolver.cache import Cache, Key
from kdns.resolver.config import (
    ResolverConfig,
    StaleConfig,
    Transport,
    UpstreamConfig,
)
from kdns.resolver.core import Resolver, Route, Router, ttl_policy_for
from kdns.resolver.upstream import Failure, Reply, UpstreamClient
from tests.support.fault_upstream import POISON_ADDRESS, Action, FaultUpstream
from tests.support.nsd import running_nsd
from tests.support.waiting import wait_until
from tests.unit.resolver.fakes import FakeClock, make_query, parse

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WWW = "www.example.test."
RECORDS = [
    "example.test. 3600 IN SOA ns1.example.test. hostmaster.example.test. 1 7200 1800 86400 60",
    "www.example.test. 300 IN A 192.0.2.1",
    "web.shop.svc.cluster.local. 5 IN A 10.96.0.20",
    "pay.shop.svc.cluster.local. 5 IN CNAME www.example.test.",
    "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5",
]
FAST = {"try_timeout_s": 0.3, "overall_timeout_s": 0.8}
PATIENT = {"try_timeout_s": 2.0, "overall_timeout_s": 4.0}
"""For tests that count the queries an upstream got: a reply later than FAST's 0.3 s try (a
loaded machine) would be asked again, and the count would measure the machine."""


def client_for(*servers: FaultUpstream, **overrides: object) -> UpstreamClient:
    options: dict[str, object] = {**FAST, **overrides}
    return UpstreamClient(UpstreamConfig(tuple(s.address for s in servers), **options))  # type: ignore[arg-type]


def ask(client: UpstreamClient, name: str = WWW, qtype: int = 1) -> Reply | Failure:
    return client.query(zone.to_wire(name), qtype, 1)


@pytest.fixture(name="fault")
def _fault() -> Iterator[FaultUpstream]:
    with FaultUpstream(RECORDS) as upstream:
        yield upstream


@pytest.fixture(name="second")
def _second() -> Iterator[FaultUpstream]:
    with FaultUpstream(RECORDS) as upstream:
        yield upstream


# --- the client's hardening ------------------------------------------------------------------


def test_udp_answer_with_fresh_id_and_port_per_query(fault: FaultUpstream) -> None:
    client = client_for(fault)
    for _ in range(12):
        result = ask(client)
        assert isinstance(result, Reply)
        assert result.facts.records[0].rdata == bytes([192, 0, 2, 1])
    ids = {seen.id for seen in fault.seen}
    ports = {seen.port for seen in fault.seen}
    assert len(ids) >= 11  # random 16-bit IDs: a repeat among 12 is unlikely, two are not
    assert len(ports) >= 11  # a new socket bound to port 0 per query
    assert all(seen.edns for seen in fault.seen)


@pytest.mark.parametrize(
    ("kind", "counter"),
    [("wrong_id", "mismatched"), ("wrong_question", "mismatched"), ("garbage", "garbage")],
)
def test_spoofed_replies_are_dropped_and_counted(
    fault: FaultUpstream, kind: str, counter: str
) -> None:
    fault.plan(WWW, kind)
    client = client_for(fault, overall_timeout_s=0.3)
    result = ask(client)
    assert isinstance(result, Failure)
    assert result.reason == "timeout"  # not NXDOMAIN, not the spoofed data
    assert getattr(client.stats, counter) == 1


def test_spoofs_racing_the_real_reply_lose(fault: FaultUpstream) -> None:
    fault.plan(WWW, Action("spoof_then_answer", delay_s=0.05))
    client = client_for(fault)
    result = ask(client)
    assert isinstance(result, Reply)
    assert result.facts.records[0].rdata == bytes([192, 0, 2, 1])
    assert client.stats.mismatched == 2


def test_truncated_udp_reply_retried_over_tcp(fault: FaultUpstream) -> None:
    fault.plan(WWW, "truncate")
    client = client_for(fault)
    result = ask(client)
    assert isinstance(result, Reply)
    assert result.transport is Transport.TCP
    assert not result.facts.truncated
    assert client.stats.truncated == 1
    assert fault.count(WWW, "tcp") == 1


def test_tcp_connection_is_reused_and_pipelined(fault: FaultUpstream) -> None:
    names = [f"n{i}.example.test." for i in range(16)]
    for i, name in enumerate(names):
        fault.add(f"{name} 60 IN A 192.0.2.{i + 1}")
        # Later queries answered sooner: replies come back out of order on one connection.
        fault.plan(name, Action("delay", delay_s=0.01 * (16 - i)))
    client = client_for(fault, transport=Transport.TCP, try_timeout_s=2, overall_timeout_s=2)
    ask(client, "www.example.test.")  # open the connection first
    results: dict[str, Reply | Failure] = {}

    def run(name: str) -> None:
        results[name] = ask(client, name)

    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    for i, name in enumerate(names):
        result = results[name]
        assert isinstance(result, Reply), result
        assert result.facts.records[0].rdata == bytes([192, 0, 2, i + 1])
    assert fault.tcp_connections == 1
    assert client.stats.tcp_connects == 1
    client.close()


@pytest.mark.parametrize(
    ("transport", "action"),
    [
        pytest.param(Transport.TCP, None, id="tcp-only-route"),
        pytest.param(Transport.UDP, "truncate", id="tc-fallback-to-tcp"),
    ],
)
def test_upstream_tcp_connections_disable_nagle(
    fault: FaultUpstream, transport: Transport, action: str | None
) -> None:
    """Issue 11 item 3: pipelined queries to an upstream must not wait for the ACK of the one
    before them (Nagle against delayed ACK, 40 ms on Linux)."""
    if action is not None:
        fault.plan(WWW, action)
    client = client_for(fault, transport=transport)
    assert isinstance(ask(client), Reply)
    pooled = list(client._connections.values())  # the pool has no public view of its sockets
    assert len(pooled) == 1
    assert pooled[0].sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    client.close()


def test_failover_health_and_probe(fault: FaultUpstream, second: FaultUpstream) -> None:
    fault.default = Action("drop")
    client = client_for(fault, second, max_fails=2, probe_interval_s=0.05)
    for _ in range(2):
        result = ask(client)
        assert isinstance(result, Reply)
        assert result.server == second.address
    assert client.stats.failovers == 2
    assert client.health.is_down(0)
    before = fault.count()
    result = ask(client)
    assert isinstance(result, Reply)
    assert fault.count() == before  # a down server is not tried first any more
    fault.default = Action("answer")
    wait_until(lambda: client.probe_once() == [0], timeout=3)
    assert not client.health.is_down(0)
    assert client.stats.recovered == 1
    result = ask(client)
    assert isinstance(result, Reply)
    assert result.server == fault.address


def test_background_prober_brings_a_server_back(
    fault: FaultUpstream, second: FaultUpstream
) -> None:
    fault.default = Action("drop")
    client = client_for(fault, second, max_fails=1, probe_interval_s=0.05)
    client.start()
    try:
        ask(client)
        assert client.health.is_down(0)
        fault.default = Action("answer")
        wait_until(lambda: not client.health.is_down(0), timeout=3)
    finally:
        client.close()


def test_servfail_asks_the_next_server_but_stays_healthy(
    fault: FaultUpstream, second: FaultUpstream
) -> None:
    fault.default = Action("servfail")
    client = client_for(fault, second, max_fails=1)
    result = ask(client)
    assert isinstance(result, Reply)
    assert result.server == second.address
    assert not client.health.is_down(0)
    second.default = Action("refused")
    result = ask(client)
    assert isinstance(result, Failure)
    assert result.reason in ("servfail", "refused")
    assert result.answered


def test_unreachable_server_fails_fast() -> None:
    with FaultUpstream() as dead:
        address = dead.address
    client = UpstreamClient(UpstreamConfig((address,), try_timeout_s=2, overall_timeout_s=2))
    started = time.monotonic()
    result = client.query(zone.to_wire(WWW), 1, 1)
    assert isinstance(result, Failure)
    assert result.reason == "unreachable"  # ICMP port unreachable on the connected socket
    assert time.monotonic() - started < 1.0  # not the 2 s try timeout, and no busy retrying
    assert client.stats.unreachable == 1


def test_formerr_to_edns_retries_without_it(fault: FaultUpstream) -> None:
    fault.plan(WWW, "formerr_edns")
    client = client_for(fault)
    result = ask(client)
    assert isinstance(result, Reply)
    assert [seen.edns for seen in fault.seen] == [True, False]


def test_delay_within_the_try_timeout_is_fine(fault: FaultUpstream) -> None:
    fault.plan(WWW, Action("delay", delay_s=0.1))
    assert isinstance(ask(client_for(fault)), Reply)


def test_concurrency_bound(fault: FaultUpstream) -> None:
    fault.plan(WWW, Action("delay", delay_s=0.3))
    client = client_for(fault, max_concurrent=1, try_timeout_s=1, overall_timeout_s=1)
    results: list[Reply | Failure] = []
    thread = threading.Thread(target=lambda: results.append(ask(client)))
    thread.start()
    wait_until(lambda: fault.count(WWW) == 1, timeout=2)
    second = ask(client)
    thread.join(timeout=3)
    assert isinstance(second, Failure)
    assert second.reason == "overloaded"
    assert isinstance(results[0], Reply)
    assert client.stats.overloaded == 1


# --- the resolver over real sockets: poisoning, chasing, stale -------------------------------


def resolver_for(
    cluster: FaultUpstream,
    default: tuple[str, int] | None,
    clock: FakeClock | None = None,
    stale: StaleConfig | None = None,
    patient: bool = False,
) -> Resolver:
    """``patient``: PATIENT timeouts on both routes, for a test that counts queries."""
    cluster_timeouts = PATIENT if patient else {"try_timeout_s": 0.5, "overall_timeout_s": 1}
    config = ResolverConfig(
        cluster_upstream=UpstreamConfig(
            (cluster.address,),
            transport=Transport.TCP,
            **cluster_timeouts,  # type: ignore[arg-type]
        ),
        upstream=None
        if default is None
        else UpstreamConfig((default,), **(PATIENT if patient else FAST)),  # type: ignore[arg-type]
        stale=stale or StaleConfig(verify_timeout_s=0.2),
    )
    clock = clock or FakeClock()
    cache = Cache(
        config.cache,
        prefetch=config.prefetch,
        stale=config.stale,
        ttl_policy=ttl_policy_for(config),
        clock=clock,
    )
    return Resolver(cache, Router.from_config(config), workers=4)


@pytest.mark.parametrize("kind", ["poison_cname", "poison_additional", "poison_answer"])
def test_poisoning_through_the_cluster_route(
    fault: FaultUpstream, second: FaultUpstream, kind: str
) -> None:
    """The cluster upstream is trusted for cluster.local only: nothing it says about other
    names is served, and an out-of-zone CNAME target is asked of its own route instead."""
    fault.plan("web.shop.svc.cluster.local.", kind)
    resolver = resolver_for(fault, second.address, patient=True)
    try:
        reply = parse(resolver.resolve(make_query("web.shop.svc.cluster.local.")))
    finally:
        resolver.close()
    text = reply.to_text()
    assert POISON_ADDRESS not in text
    assert "bank.test" not in text
    if kind == "poison_cname":
        # The target is asked of the default route (which has no such name).
        assert second.count("evil.attacker.test.") == 1
        assert reply.rcode() == dns.rcode.NXDOMAIN
    else:
        assert [rrset.to_text() for rrset in reply.answer] == [
            "web.shop.svc.cluster.local. 5 IN A 10.96.0.20"
        ]


def test_externalname_style_cname_is_chased(fault: FaultUpstream, second: FaultUpstream) -> None:
    resolver = resolver_for(fault, second.address, patient=True)
    try:
        reply = parse(resolver.resolve(make_query("pay.shop.svc.cluster.local.")))
    finally:
        resolver.close()
    assert [rrset.to_text() for rrset in reply.answer] == [
        "pay.shop.svc.cluster.local. 5 IN CNAME www.example.test.",
        "www.example.test. 5 IN A 192.0.2.1",
    ]
    assert fault.count(transport="tcp") == 1  # the cluster route is TCP (force_tcp)
    assert second.count(WWW, "udp") == 1


def test_stale_served_when_the_upstream_goes_silent(
    fault: FaultUpstream, second: FaultUpstream
) -> None:
    clock = FakeClock()
    resolver = resolver_for(fault, second.address, clock)
    try:
        first = parse(resolver.resolve(make_query(WWW)))
        assert first.answer[0].ttl == 30
        clock.advance(31)
        second.default = Action("drop")
        stale = parse(resolver.resolve(make_query(WWW, edns=True)))
        assert stale.rcode() == dns.rcode.NOERROR
        assert stale.answer[0].ttl == 30
        assert [(o.otype, o.code) for o in stale.options] == [(dns.edns.OptionType.EDE, 3)]
        other = parse(resolver.resolve(make_query("new.example.test.")))
        assert other.rcode() == dns.rcode.SERVFAIL  # never NXDOMAIN for a failure
    finally:
        resolver.close()


# --- a real authoritative peer: NSD ----------------------------------------------------------


@pytest.fixture(name="nsd", scope="module")
def _nsd() -> Iterator[tuple[str, int]]:
    with running_nsd() as server:
        yield server.address


@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP])
def test_nsd_through_the_client(nsd: tuple[str, int], transport: Transport) -> None:
    client = UpstreamClient(UpstreamConfig((nsd,), transport=transport))
    try:
        result = client.query(zone.to_wire("www.example.test"), 1, 1)
        assert isinstance(result, Reply)
        assert result.facts.records[0].ttl == 300
        nx = client.query(zone.to_wire("nope.example.test"), 1, 1)
        assert isinstance(nx, Reply)
        assert nx.facts.negative_ttl == 60
    finally:
        client.close()


def nsd_resolver(nsd: tuple[str, int], clock: FakeClock) -> Resolver:
    upstream = UpstreamClient(UpstreamConfig((nsd,)))
    cache = Cache(clock=clock)
    return Resolver(
        cache,
        Router([Route(zone.to_wire("example.test"), upstream, "stub:example.test")]),
        workers=2,
    )


def test_nsd_answers_cached_with_ttl_semantics(nsd: tuple[str, int]) -> None:
    clock = FakeClock()
    resolver = nsd_resolver(nsd, clock)
    try:
        chain = parse(resolver.resolve(make_query("chain1.example.test.")))
        assert [rrset.rdtype for rrset in chain.answer] == [
            dns.rdatatype.CNAME,
            dns.rdatatype.CNAME,
            dns.rdatatype.A,
        ]
        assert {rrset.ttl for rrset in chain.answer} == {30}
        nx = parse(resolver.resolve(make_query("nope.example.test.")))
        assert nx.rcode() == dns.rcode.NXDOMAIN
        assert nx.authority[0].ttl == 30  # min(SOA TTL 3600, MINIMUM 60), capped at 30
        short = parse(resolver.resolve(make_query("short.example.test.")))
        assert short.answer[0].ttl == 5
        srv = parse(resolver.resolve(make_query("_http._tcp.svc.example.test.", "SRV")))
        assert srv.answer[0][0].target.to_text() == "target.example.test."
        clock.advance(12)
        again = parse(resolver.resolve(make_query("CHAIN1.example.test.", query_id=99)))
        assert again.id == 99
        assert {rrset.ttl for rrset in again.answer} == {18}
        assert again.question[0].name.to_text() == "CHAIN1.example.test."
        nodata = parse(resolver.resolve(make_query("www.example.test.", "TXT")))
        assert nodata.rcode() == dns.rcode.NOERROR
        assert not nodata.answer
        assert resolver.stats.hits == 1
    finally:
        resolver.close()


def test_nsd_out_of_zone_cname_is_not_trusted(nsd: tuple[str, int]) -> None:
    """NSD is authoritative for example.test only: the target of ``away`` is someone else's
    and, with no route for it, only the CNAME is served."""
    resolver = nsd_resolver(nsd, FakeClock())
    try:
        reply = parse(resolver.resolve(make_query("away.example.test.")))
    finally:
        resolver.close()
    assert [rrset.to_text() for rrset in reply.answer] == [
        "away.example.test. 300 IN CNAME www.elsewhere.test."
    ]


def test_prefetch_thread_refreshes_a_popular_entry(
    fault: FaultUpstream, second: FaultUpstream
) -> None:
    clock = FakeClock()
    resolver = resolver_for(fault, second.address, clock, patient=True)
    resolver.start()
    try:
        resolver.resolve(make_query(WWW))
        resolver.resolve(make_query(WWW))  # popular: two queries in one lifetime
        assert second.count(WWW) == 1
        clock.advance(27)  # the prefetch point of a 30 s TTL
        key = Key.of(make_query(WWW))

        def refreshed() -> bool:
            entry = resolver.cache.peek(key)
            return entry is not None and entry.stored_at == clock.now

        wait_until(refreshed, timeout=3)  # the prefetched answer is stored, not just asked
        assert second.count(WWW) == 2
        clock.advance(10)  # past the first answer's expiry: the prefetched one serves
        reply = parse(resolver.resolve(make_query(WWW)))
        assert reply.answer[0].ttl == 20
        assert second.count(WWW) == 2
    finally:
        resolver.close()
