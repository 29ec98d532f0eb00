"""nodecache end to end: the binary as a subprocess in front of real peers.

Peers: NSD (Debian ``nsd``, tests/support/nsd.py) authoritative for ``example.test``; kdns
in-process (tests/support/servers.py) serving the fixture cluster as the cluster upstream; a
scriptable fault upstream (tests/support/fault_upstream.py) as a stub domain. nodecache runs as
``python -m nodecache serve --listen 127.0.0.1:0 ...`` and reports its ports in its log.
Queries go through dnspython and dig over UDP and TCP. One in-process section proves the
cache-hit shortcut (kdns/resolver/front.py, through nodecache/handler.py) replies byte for byte as the resolver's own hit path.

TTL, prefetch and serve-stale semantics are unit-tested with an injected clock
(tests/unit/resolver); here they are only proven end to end where it is cheap: records with
1-2 s TTLs in NSD, short upstream timeouts, and ``wait_until`` deadlines instead of sleeps.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kdns.resolver.config import ResolverConfig, UpstreamConfig
from kdns.resolver.core import Resolver
from kdns.serve import accel
from kdns.serve.protocol import Query, screen
from nodecache.handler import QueryHandler
from nodecache.metrics import Metrics
from tests.support.cluster import fixture_objects
from tests.support.fault_upstream import Action, FaultUpstream
from tests.support.nsd import ZONE_TEXT, RunningNSD, running_nsd
from tests.support.programs import launched
from tests.support.servers import RunningServer, running_server
from tests.support.waiting import wait_until
from tests.unit.resolver.fakes import FakeClock, FakeUpstream, make_reply

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 3.0

# NSD's zone plus records with 1 and 2 s TTLs, so expiry and prefetch happen within a test.
NSD_ZONE = ZONE_TEXT + "brief   1    IN A    192.0.2.9\npref    2    IN A    192.0.2.10\n"
STUB_RECORDS = [
    "stub.test. 300 IN SOA ns.stub.test. hostmaster.stub.test. 1 7200 1800 86400 60",
    "www.stub.test. 300 IN A 198.51.100.1",
    "slow.stub.test. 300 IN A 198.51.100.2",
    *[f"big.stub.test. 300 IN A 198.51.100.{i}" for i in range(10, 50)],  # > 512 bytes
]
# Short upstream timeouts keep failure paths fast; TTL floors of 1 s let NSD's 1-2 s records
# expire (and be prefetched) within a test.
BASE_CONFIG = """\
upstream_options: {try_timeout_s: 0.3, overall_timeout_s: 0.8, probe_interval_s: 0.2}
serve_stale: {verify_timeout_s: 0.2}
prefetch: {min_ttl_s: 1}
zone_ttls:
  example.test: {success_min_s: 1, denial_min_s: 1}
"""

EDE = 15  # EDNS option code (RFC 8914)
EDE_STALE = 3
EDE_NO_REACHABLE = 22


# --- the nodecache process -------------------------------------------------------------------


@dataclass
class NodeCache:
    process: subprocess.Popen[str]
    port: int
    health_port: int
    log: list[str]
    config: Path
    host: str = "127.0.0.1"
    extra: dict[str, object] = field(default_factory=dict)

    def query(
        self, name: str, rdtype: str = "A", transport: str = "udp", **options: object
    ) -> dns.message.Message:
        message = dns.message.make_query(name, rdtype, **options)  # type: ignore[arg-type]
        if transport == "udp":
            return dns.query.udp(message, self.host, port=self.port, timeout=TIMEOUT_S)
        return dns.query.tcp(message, self.host, port=self.port, timeout=TIMEOUT_S)

    def raw_udp(self, packet: bytes, timeout: float = 0.5) -> bytes | None:
        return _raw_udp((self.host, self.port), packet, timeout)

    def http(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metric(self, name: str, labels: str = "") -> float:
        """One sample's value; ``labels`` as written in the text (``{a="x",b="y"}``), in any
        order (prometheus-client writes them sorted)."""
        _status, text = self.http("/metrics")
        return sample_value(text, name, labels)

    def logged(self, text: str) -> bool:
        return any(text in line for line in list(self.log))


def sample_value(text: str, name: str, labels: str = "") -> float:
    wanted = dict(re.findall(r'(\w+)="([^"]*)"', labels))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == wanted:
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not in /metrics")


def _raw_udp(address: tuple[str, int], packet: bytes, timeout: float) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, address)
        try:
            return sock.recv(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None


@contextlib.contextmanager
def nodecache(directory: Path, *flags: str, config: str = BASE_CONFIG) -> Iterator[NodeCache]:
    path = directory / "nodecache.yaml"
    path.write_text(config)
    with launched("nodecache", "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0",
                  "--config", str(path), *flags, kill=True) as started:  # fmt: skip
        port = started.port(r"serving on 127\.0\.0\.1:(\d+)", timeout=15)
        health = started.port(r"health on 127\.0\.0\.1:(\d+)", timeout=5)
        yield NodeCache(started.process, port, health, started.log, path)


def stop_nsd(nsd: RunningNSD) -> None:
    nsd.process.terminate()
    nsd.process.wait(timeout=5)


def ede_codes(reply: dns.message.Message) -> list[int]:
    return [
        int.from_bytes(option.to_wire()[:2], "big")
        for option in reply.options
        if option.otype == EDE
    ]


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(rr.to_text() for rrset in reply.answer for rr in rrset)


# --- shared peers and one nodecache in front of them ---------------------------------------------


@pytest.fixture(name="kdns", scope="module")
def _kdns() -> Iterator[RunningServer]:
    with running_server(fixture_objects()) as server:
        yield server


@pytest.fixture(name="nsd", scope="module")
def _nsd() -> Iterator[RunningNSD]:
    with running_nsd(zone_text=NSD_ZONE) as server:
        yield server


@pytest.fixture(name="stub", scope="module")
def _stub() -> Iterator[FaultUpstream]:
    with FaultUpstream(STUB_RECORDS) as upstream:
        yield upstream


def _stub_config(stub: FaultUpstream) -> str:
    return BASE_CONFIG + f"stub_domains:\n  stub.test: ['127.0.0.1:{stub.port}']\n"


@pytest.fixture(name="node", scope="module")
def _node(
    kdns: RunningServer,
    nsd: RunningNSD,
    stub: FaultUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NodeCache]:
    with nodecache(
        tmp_path_factory.mktemp("nodecache"),
        "--cluster-upstream", f"127.0.0.1:{kdns.port}",
        "--upstream", f"127.0.0.1:{nsd.port}",
        config=_stub_config(stub),
    ) as node:  # fmt: skip
        yield node


# --- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_cluster_names_come_from_kdns(node: NodeCache, kdns: RunningServer, transport: str) -> None:
    reply = node.query("svc1.testns.svc.cluster.local.", "A", transport)
    assert reply.rcode() == dns.rcode.NOERROR
    assert addresses(reply) == ["10.0.0.1"]
    assert reply.flags & dns.flags.RA
    direct = kdns.query(dns.message.make_query("svc1.testns.svc.cluster.local.", "SRV"))
    through = node.query("svc1.testns.svc.cluster.local.", "SRV", transport)
    assert addresses(through) == addresses(direct)
    missing = node.query("nope.testns.svc.cluster.local.", "A", transport)
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.authority[0].name.to_text() == "cluster.local."
    assert missing.authority[0].ttl <= 5  # NodeLocal's cluster denial cap


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_external_names_come_from_nsd(node: NodeCache, transport: str) -> None:
    reply = node.query("www.example.test.", "A", transport)
    assert reply.rcode() == dns.rcode.NOERROR
    assert addresses(reply) == ["192.0.2.1"]
    assert reply.answer[0].ttl <= 30  # NSD says 300; NodeLocal's `cache 30` caps it
    chain = node.query("chain1.example.test.", "A", transport)
    assert [rrset.rdtype for rrset in chain.answer] == [
        dns.rdatatype.CNAME,
        dns.rdatatype.CNAME,
        dns.rdatatype.A,
    ]
    missing = node.query("nope.example.test.", "A", transport)
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.authority[0].rdtype == dns.rdatatype.SOA
    assert missing.authority[0].ttl <= 30  # min(SOA TTL, MINIMUM) = 60, capped at 30


def test_reverse_names_go_to_the_cluster_upstream(node: NodeCache) -> None:
    # NSD is not authoritative for in-addr.arpa: only kdns can answer this.
    reply = node.query("1.0.0.10.in-addr.arpa.", "PTR")
    assert reply.rcode() == dns.rcode.NOERROR
    assert addresses(reply) == ["svc1.testns.svc.cluster.local."]


def test_stub_domain_goes_to_its_own_servers(node: NodeCache, stub: FaultUpstream) -> None:
    before = stub.count("www.stub.test.")
    reply = node.query("www.stub.test.", "A")
    assert addresses(reply) == ["198.51.100.1"]
    assert stub.count("www.stub.test.") == before + (0 if before else 1)
    # Names outside the stub zone never reach it.
    node.query("www.example.test.", "A")
    assert stub.count("www.example.test.") == 0


def test_dig_over_udp_and_tcp(node: NodeCache) -> None:
    if shutil.which("dig") is None:
        pytest.skip("dig is not installed (Debian package dnsutils)")
    for name, expected in [
        ("svc1.testns.svc.cluster.local", "10.0.0.1"),
        ("www.example.test", "192.0.2.1"),
    ]:
        for mode in ("+notcp", "+tcp"):
            out = subprocess.run(
                ["dig", "@127.0.0.1", "-p", str(node.port), name, "A", mode, "+tries=1", "+time=3"],
                capture_output=True, text=True, timeout=10, check=False,
            )  # fmt: skip
            assert "status: NOERROR" in out.stdout, out.stdout
            assert re.search(
                rf"^{re.escape(name)}\.\s+\d+\s+IN\s+A\s+{expected}$", out.stdout, re.M
            )


def test_big_answer_truncated_over_udp_whole_over_tcp(node: NodeCache) -> None:
    for _ in range(2):  # a miss, then a cache hit: both paths truncate the same way
        small = node.query("big.stub.test.", "A", "udp", use_edns=False)
        assert small.flags & dns.flags.TC
        assert not small.answer
    whole = node.query("big.stub.test.", "A", "tcp")
    assert len(addresses(whole)) == 40
    fits = node.query("big.stub.test.", "A", "udp", use_edns=0, payload=1232)
    assert not fits.flags & dns.flags.TC
    assert len(addresses(fits)) == 40


# --- the cache, end to end ---------------------------------------------------------------------


def test_second_query_is_a_cache_hit_with_the_clients_id_and_case(node: NodeCache) -> None:
    node.query("txt.example.test.", "TXT")
    hits = node.metric("nodecache_cache_hits_total")
    upstream = node.metric("nodecache_upstream_queries_total", '{upstream="default"}')
    reply = node.query("TXT.Example.TEST.", "TXT", use_edns=0)
    assert reply.question[0].name.to_text() == "TXT.Example.TEST."  # dnspython checks the ID
    assert reply.answer[0].to_text().endswith('"hello world"')
    assert node.metric("nodecache_cache_hits_total") == hits + 1
    assert node.metric("nodecache_upstream_queries_total", '{upstream="default"}') == upstream


@pytest.mark.skipif(not accel.available, reason=f"no C accelerator: {accel.reason}")
def test_repeated_udp_hits_are_served_by_the_c_loop_and_counted(node: NodeCache) -> None:
    # The first hit of a query shape is Python's (it installs the entry's view); C serves the
    # rest with the TTL counting down, and /metrics absorbs its hits (Resolver.absorb_hits).
    node.query("target.example.test.")
    node.query("target.example.test.")
    hits = node.metric("nodecache_cache_hits_total")
    c_hits = node.metric("nodecache_cache_c_hits_total")
    upstream = node.metric("nodecache_upstream_queries_total", '{upstream="default"}')
    previous_ttl = None
    for _ in range(20):
        reply = node.query("TARGET.example.test.")
        assert reply.question[0].name.to_text() == "TARGET.example.test."
        assert addresses(reply) == ["192.0.2.80"]
        ttl = reply.answer[0].ttl
        assert previous_ttl is None or ttl <= previous_ttl
        previous_ttl = ttl
    assert node.metric("nodecache_cache_c_hits_total") == c_hits + 20
    assert node.metric("nodecache_cache_hits_total") == hits + 20
    assert node.metric("nodecache_upstream_queries_total", '{upstream="default"}') == upstream


def test_popular_short_lived_name_is_prefetched(node: NodeCache) -> None:
    # pref has a 2 s TTL: two hits make it popular, so it is refreshed before it expires.
    before = node.metric("nodecache_cache_prefetches_total")
    for _ in range(3):
        assert addresses(node.query("pref.example.test.")) == ["192.0.2.10"]
    wait_until(
        lambda: node.metric("nodecache_cache_prefetches_total") > before,
        timeout=5,
        interval=0.1,
        message="a prefetch of pref.example.test",
    )


def test_nsd_stopped_cached_answers_stale_answers_and_servfail_never_nxdomain(
    kdns: RunningServer, tmp_path: Path
) -> None:
    with running_nsd(zone_text=NSD_ZONE) as nsd, nodecache(
        tmp_path, "--cluster-upstream", f"127.0.0.1:{kdns.port}", "--upstream",
        f"127.0.0.1:{nsd.port}",
    ) as node:  # fmt: skip
        assert addresses(node.query("www.example.test.")) == ["192.0.2.1"]
        assert addresses(node.query("brief.example.test.")) == ["192.0.2.9"]
        stop_nsd(nsd)

        # Cached: answered although NSD is gone, fresh (no stale marker).
        cached = node.query("www.example.test.", use_edns=0)
        assert addresses(cached) == ["192.0.2.1"]
        assert ede_codes(cached) == []

        # Never cached: SERVFAIL with "No Reachable Authority", never NXDOMAIN.
        unknown = node.query("other.example.test.", use_edns=0)
        assert unknown.rcode() == dns.rcode.SERVFAIL
        assert ede_codes(unknown) == [EDE_NO_REACHABLE]

        # brief (1 s) expires; serve-stale answers it with TTL 30 and EDE "Stale Answer".
        def stale() -> dns.message.Message | None:
            reply = node.query("brief.example.test.", use_edns=0)
            return reply if EDE_STALE in ede_codes(reply) else None

        reply = wait_until(stale, timeout=5, interval=0.1, message="a stale answer")
        assert reply is not None
        assert reply.rcode() == dns.rcode.NOERROR
        assert addresses(reply) == ["192.0.2.9"]
        assert reply.answer[0].ttl == 30
        assert node.metric("nodecache_cache_stale_served_total") >= 1


def test_cluster_upstream_down_is_servfail_and_health_stays_ok(
    nsd: RunningNSD, tmp_path: Path
) -> None:
    with socket.socket() as placeholder:  # a port nothing listens on
        placeholder.bind(("127.0.0.1", 0))
        dead = placeholder.getsockname()[1]
    with nodecache(
        tmp_path, "--cluster-upstream", f"127.0.0.1:{dead}", "--upstream", f"127.0.0.1:{nsd.port}"
    ) as node:
        reply = node.query("svc1.testns.svc.cluster.local.")
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert (
            node.query("svc1.testns.svc.cluster.local.", "A", "tcp").rcode() == dns.rcode.SERVFAIL
        )
        # A second failing name (the first SERVFAIL is cached): max_fails 2 marks it down.
        assert node.query("svc6.testns.svc.cluster.local.").rcode() == dns.rcode.SERVFAIL
        assert addresses(node.query("www.example.test.")) == ["192.0.2.1"]  # others still work
        assert node.http("/health") == (200, "ok\n")
        wait_until(lambda: node.metric("nodecache_upstream_up", f'{{upstream="cluster",server="127.0.0.1:{dead}"}}') == 0,
                   timeout=5, interval=0.1)  # fmt: skip
        status, body = node.http("/ready")
        assert status == 200  # readiness does not hang on a shared upstream (README)
        assert f"127.0.0.1:{dead} down" in body
        assert node.metric("nodecache_upstream_failures_total", '{upstream="cluster"}') >= 1


# --- bad input: the same rules as kdns -------------------------------------------------------------


def _query(name: str = "svc1.testns.svc.cluster.local.", rdtype: str = "A", **kw: object) -> bytes:
    message = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    message.id = 0x4242
    return message.to_wire()


def _edit(packet: bytes, offset: int, value: bytes) -> bytes:
    return packet[:offset] + value + packet[offset + len(value) :]


BAD_INPUT = {
    "runt": b"\x12\x34\x01",
    "header only": _query()[:12],
    "response": _edit(_query(), 2, b"\x81\x00"),
    "opcode NOTIFY": _edit(_query(), 2, b"\x21\x00"),
    "opcode UPDATE": _edit(_query(), 2, b"\x29\x00"),
    "qdcount 0": _edit(_query(), 4, b"\x00\x00"),
    "qdcount 2": _edit(_query(), 4, b"\x00\x02"),
    "name past the end": _query()[:20],
    "compressed question name": _query()[:12] + b"\xc0\x0c\x00\x01\x00\x01",
    "trailing bytes": _query() + b"\x00\x00",
    "EDNS version 1": _query(use_edns=1),
    "two OPT records": _edit(_query(use_edns=0), 10, b"\x00\x02") + _query(use_edns=0)[-11:],
    "AXFR": _query(rdtype="AXFR"),
    "IXFR": _query(rdtype="IXFR"),
    "class CH": _query(rdclass="CH", rdtype="TXT", name="version.bind."),
    "class ANY": _edit(_query(), len(_query()) - 2, b"\x00\xff"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_rules_are_kdns_rules(node: NodeCache, kdns: RunningServer, case: str) -> None:
    packet = BAD_INPUT[case]
    expected = _raw_udp((kdns.host, kdns.port), packet, 0.3)
    got = node.raw_udp(packet, timeout=0.3)
    assert got == expected
    if expected is not None:  # the byte-for-byte error reply of kdns.serve.protocol.screen
        assert struct.unpack(">H", expected[2:4])[0] & 0x8000


# --- the cache-hit shortcut answers byte for byte as the resolver does (in process) ----------------


BIG = [f"big.example.test. 300 IN A 198.51.100.{i}" for i in range(10, 50)]


def _fake_reply(name: str, rdtype: str) -> bytes:
    if name == "big.example.test.":
        return make_reply(name, rdtype, BIG)
    if rdtype == "TXT":
        return make_reply(name, rdtype, [f'{name} 300 IN TXT "hello world"'])
    return make_reply(name, rdtype, [f"{name} 300 IN A 192.0.2.1"])


def _wire(name: str, rdtype: str, rd: bool, cd: bool, edns: tuple[int, bool, bool] | None) -> bytes:
    """A query; ``edns`` is (payload, DO, with a cookie option) or None."""
    if edns is None:
        message = dns.message.make_query(name, rdtype, use_edns=False)
    else:
        payload, do_bit, cookie = edns
        options = (
            [dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"01234567")] if cookie else []
        )
        message = dns.message.make_query(name, rdtype, use_edns=0, payload=payload,
                                         want_dnssec=do_bit, options=options)  # fmt: skip
    message.id = 0xBEEF
    if not rd:
        message.flags &= ~dns.flags.RD
    if cd:
        message.flags |= dns.flags.CD
    return message.to_wire()


SHAPES = [
    (name, rdtype, rd, cd, edns, tcp)
    for name, rdtype in [("www.example.test.", "A"), ("WwW.ExAmPlE.tEsT.", "TXT"),
                         ("big.example.test.", "A")]
    for rd in (True, False)
    for cd in (False, True)
    for edns in (None, (512, False, False), (1232, True, False), (4096, False, True))
    for tcp in (False, True)
]  # fmt: skip


@pytest.mark.parametrize(("name", "rdtype", "rd", "cd", "edns", "tcp"), SHAPES)
def test_shortcut_reply_is_the_resolvers_hit_reply(
    name: str, rdtype: str, rd: bool, cd: bool, edns: tuple[int, bool, bool] | None, tcp: bool
) -> None:
    clock = FakeClock()
    upstream = FakeUpstream(handler=_fake_reply)
    config = ResolverConfig(cluster_upstream=None, upstream=UpstreamConfig((("192.0.2.53", 53),)))
    resolver = Resolver.from_config(config, make_upstream=lambda _c: upstream, clock=clock)
    handler = QueryHandler(resolver)
    try:
        packet = _wire(name, rdtype, rd, cd, edns)
        warm = screen(packet, 1232)
        assert isinstance(warm, Query)
        resolver.resolve(warm, tcp=tcp)  # the miss stores the entry
        clock.advance(3)  # TTLs have counted down: the patched TTL must match too

        peer = ("127.0.0.1", 5)
        answer = handler.tcp if tcp else handler.udp
        # The first hit builds the reply; the next (another ID) comes from the memo; a second
        # later the TTL has changed and it is rebuilt. Each must be the resolver's own reply.
        for step, advance in enumerate((0, 0, 1)):
            clock.advance(advance)
            packet = packet[:1] + bytes([step]) + packet[2:]  # a new ID
            via_shortcut = answer(packet, peer)
            assert handler.stats.fast_hits == step + 1
            screened = screen(packet, 1232)
            assert isinstance(screened, Query)
            via_resolver = resolver.answer(screened, lambda _reply: None, peer, tcp=tcp)
            assert isinstance(via_shortcut, bytes)
            assert via_shortcut == via_resolver
        assert upstream.count() == 1
        if name.startswith("big") and not tcp and (edns is None or edns[0] < 1000):
            assert dns.message.from_wire(via_shortcut).flags & dns.flags.TC

        clock.advance(400)  # expired: the shortcut steps aside for the resolver (stale path)
        answer(packet, peer)
        assert handler.stats.fast_hits == 3
    finally:
        resolver.close()


# --- operations --------------------------------------------------------------------------------


def test_health_ready_and_metrics(node: NodeCache) -> None:
    assert node.http("/health") == (200, "ok\n")
    status, body = node.http("/ready")
    assert status == 200
    assert body.startswith("ready\n")
    assert "upstream cluster (tcp): 127.0.0.1:" in body
    assert "upstream default (udp): 127.0.0.1:" in body
    status, text = node.http("/metrics")
    assert status == 200
    for name in (
        "nodecache_cache_hits_total", "nodecache_cache_misses_total",
        "nodecache_cache_stale_served_total", "nodecache_cache_prefetches_total",
        "nodecache_upstream_failures_total", "nodecache_upstream_timeouts_total",
        "nodecache_upstream_mismatched_total", "nodecache_cache_entries",
        "nodecache_reloads_total",
    ):  # fmt: skip
        assert f"\n{name}" in text, name
    assert node.metric("nodecache_health_probes_total") >= 1
    assert node.http("/nope")[0] == 404


def test_sighup_and_file_change_reload_keep_the_cache_and_reject_bad_config(
    kdns: RunningServer, stub: FaultUpstream, tmp_path: Path
) -> None:
    with running_nsd(zone_text=NSD_ZONE) as nsd, nodecache(
        tmp_path, "--cluster-upstream", f"127.0.0.1:{kdns.port}", "--upstream",
        f"127.0.0.1:{nsd.port}",
    ) as node:  # fmt: skip
        assert addresses(node.query("www.example.test.")) == ["192.0.2.1"]
        # No stub route yet: NSD is asked and refuses. (This SERVFAIL is cached for 5 s, and a
        # reload keeps the cache, so the checks below ask another name.)
        assert node.query("slow.stub.test.").rcode() == dns.rcode.SERVFAIL
        stop_nsd(nsd)

        # SIGHUP with a new stub domain: applied, and the cached answer is still served
        # while its upstream is down.
        node.config.write_text(_stub_config(stub))
        node.process.send_signal(signal.SIGHUP)
        wait_until(lambda: node.logged("config reloaded (SIGHUP)"), timeout=5)
        assert addresses(node.query("www.example.test.")) == ["192.0.2.1"]
        assert addresses(node.query("www.stub.test.")) == ["198.51.100.1"]

        # A bad file, noticed by the mtime poll: rejected naming the field; the old config
        # (and the cache) stay.
        node.config.write_text(_stub_config(stub) + "serve_stale: {mode: sometimes}\n")
        wait_until(lambda: node.logged("rejected: serve_stale.mode"), timeout=5)
        assert addresses(node.query("www.stub.test.")) == ["198.51.100.1"]
        assert addresses(node.query("www.example.test.")) == ["192.0.2.1"]
        assert node.metric("nodecache_reloads_total", '{result="applied"}') == 1
        assert node.metric("nodecache_reloads_total", '{result="rejected"}') == 1
        assert node.process.poll() is None


def test_sigterm_finishes_the_query_in_flight_and_exits_0(
    kdns: RunningServer, tmp_path: Path
) -> None:
    with FaultUpstream(STUB_RECORDS) as slow, nodecache(
        tmp_path, "--cluster-upstream", f"127.0.0.1:{kdns.port}", "--upstream", "none",
        config=BASE_CONFIG + f"stub_domains:\n  stub.test: ['127.0.0.1:{slow.port}']\n"
        + "upstream_options: {try_timeout_s: 2, overall_timeout_s: 3}\n",
    ) as node:  # fmt: skip
        slow.plan("slow.stub.test.", Action("delay", delay_s=0.7))
        replies: list[dns.message.Message] = []
        asking = threading.Thread(target=lambda: replies.append(node.query("slow.stub.test.")))
        asking.start()
        wait_until(lambda: slow.count("slow.stub.test.") == 1, timeout=5)
        node.process.send_signal(signal.SIGTERM)
        wait_until(lambda: node.logged("shutting down"), timeout=5)
        assert node.raw_udp(_query("www.stub.test."), timeout=0.2) is None  # not taken
        asking.join(timeout=5)
        assert replies
        assert addresses(replies[0]) == ["198.51.100.2"]  # the one in flight was finished
        assert node.process.wait(timeout=10) == 0
        assert node.logged("stopped")


def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("cluster_upstream: 10.96.0.11\nupstream: none\ncache: {max_entries: 0}\n")
    result = subprocess.run(
        [sys.executable, "-m", "nodecache", "serve", "--listen", "127.0.0.1:0", "--config", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("nodecache: error: cache.max_entries: ")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_an_internal_error_is_dropped_and_counted_as_a_panic(transport: str) -> None:
    """coredns_panics_total counts queries an internal error dropped (issue 13)."""
    config = ResolverConfig(cluster_upstream=None, upstream=UpstreamConfig((("192.0.2.53", 53),)))
    resolver = Resolver.from_config(config, make_upstream=lambda _c: FakeUpstream())
    handler = QueryHandler(resolver)

    def broken(*_args: object, **_kwargs: object) -> bytes:
        raise RuntimeError("boom")

    resolver.answer = broken  # type: ignore[method-assign]
    try:
        answer = handler.udp if transport == "udp" else handler.tcp
        assert answer(_wire("www.example.test.", "A", True, False, None), ("127.0.0.1", 5)) is None
        assert handler.stats.internal_errors == 1
        assert "\ncoredns_panics_total 1.0\n" in Metrics(resolver, handler).render()
    finally:
        resolver.close()
