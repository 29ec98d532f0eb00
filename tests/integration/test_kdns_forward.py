"""kdns's own forwarding config over real sockets: a stub domain served by a real NSD, the
CoreDNS forward options (force_tcp observed on the upstream, except falling through,
max_concurrent rejects counted in coredns_forward_max_concurrent_rejects_total).

Each case builds kdns's config from the settings an operator writes (``build_config``), starts
the forwarder as ``kdns serve`` does (``make_forwarder``), and asks kdns on 127.0.0.1:0.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dns.message
import dns.rcode
import pytest

from kdns.config import ZoneConfig, build_config
from kdns.forwarding import make_forwarder
from kdns.metrics import resolver_families
from kdns.serve.forward import Forwarder
from tests.support.cluster import fixture_objects
from tests.support.fault_upstream import Action, FaultUpstream, fault_upstream
from tests.support.nsd import RunningNSD, running_nsd
from tests.support.servers import RunningServer, running_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

UPSTREAM_RECORDS = [
    "interwebs.test. 300 IN SOA ns.interwebs.test. admin.interwebs.test. 1 7200 1800 86400 60",
    "www.interwebs.test. 300 IN A 192.0.2.7",
    "slow.interwebs.test. 300 IN A 192.0.2.8",
    "other.interwebs.test. 300 IN A 192.0.2.9",
    "lab.example.test. 300 IN A 192.0.2.77",
]


@dataclass
class Setup:
    server: RunningServer
    upstream: FaultUpstream
    nsd: RunningNSD
    forwarder: Forwarder


@pytest.fixture(name="nsd", scope="module")
def _nsd() -> Iterator[RunningNSD]:
    with running_nsd() as nsd:  # serves example.test
        yield nsd


@pytest.fixture(name="upstream")
def _upstream() -> Iterator[FaultUpstream]:
    with fault_upstream(UPSTREAM_RECORDS) as upstream:
        yield upstream


def serve(nsd: RunningNSD, upstream: FaultUpstream, forward: dict[str, Any]) -> Any:
    """kdns with ``example.test`` stubbed to NSD and everything else to ``upstream``."""
    host, port = nsd.address
    config = build_config(
        {
            "listen": ["127.0.0.1:0"],
            "upstream": [f"{upstream.address[0]}:{upstream.address[1]}"],
            # The stub's own except: lab.example.test is not NSD's.
            "stub_domains": {
                "example.test": {"servers": [f"{host}:{port}"], "except": ["lab.example.test"]}
            },
            "forward": forward,
        }
    )
    forwarder = make_forwarder(config)
    assert forwarder is not None
    return forwarder


@contextlib.contextmanager
def kdns(nsd: RunningNSD, upstream: FaultUpstream, forward: dict[str, Any]) -> Iterator[Setup]:
    forwarder = serve(nsd, upstream, forward)
    try:
        with running_server(fixture_objects(), ZoneConfig(), forwarder=forwarder) as server:
            yield Setup(server, upstream, nsd, forwarder)
    finally:
        forwarder.resolver.close()


@dataclass(frozen=True)
class Case:
    name: str
    rcode: int
    address: str | None
    """The A record expected; None: no answer."""
    upstream_transport: str | None
    """How the default upstream saw the query; None: it never saw it."""


FORWARD = {"force_tcp": True, "except": ["private.test"]}
CASES = [
    # The stub domain goes to NSD only (over UDP: the stub's default), never the upstream.
    Case("www.example.test.", dns.rcode.NOERROR, "192.0.2.1", None),
    # Everything else to the default upstream, over TCP (force_tcp), even for a UDP client.
    Case("www.interwebs.test.", dns.rcode.NOERROR, "192.0.2.7", "tcp"),
    # except on the default: no shorter route is left, so kdns does not forward it.
    Case("x.private.test.", dns.rcode.REFUSED, None, None),
    # except on the stub: the name falls through to the next shorter route, the default
    # upstream (over TCP: the shared forward section's force_tcp).
    Case("lab.example.test.", dns.rcode.NOERROR, "192.0.2.77", "tcp"),
]


@pytest.mark.parametrize("client", ["udp", "tcp"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stub_domain_force_tcp_and_except(
    nsd: RunningNSD, upstream: FaultUpstream, case: Case, client: str
) -> None:
    with kdns(nsd, upstream, FORWARD) as setup:
        reply = setup.server.query(dns.message.make_query(case.name, "A"), client)
    assert reply.rcode() == case.rcode
    addresses = [rr.address for rrset in reply.answer for rr in rrset if rrset.rdtype == 1]
    assert addresses == ([case.address] if case.address else [])
    bare = case.name.rstrip(".")
    seen = {t for t in ("udp", "tcp") if upstream.count(case.name, t) or upstream.count(bare, t)}
    assert seen == ({case.upstream_transport} if case.upstream_transport else set())


def rejects(forwarder: Forwarder) -> float:
    for family in resolver_families(forwarder.resolver, "dns://:53"):
        if family.name == "coredns_forward_max_concurrent_rejects":
            return sum(sample.value for sample in family.samples)
    raise AssertionError("no coredns_forward_max_concurrent_rejects_total family")


def test_max_concurrent_rejects_at_once_and_is_counted(
    nsd: RunningNSD, upstream: FaultUpstream
) -> None:
    # The upstream holds the first query (its own delay, not a sleep here) while a second
    # arrives: over max_concurrent 1 it is SERVFAIL at once, without reaching the upstream.
    upstream.plan("slow.interwebs.test.", Action("answer", delay_s=3.0))
    with (
        kdns(nsd, upstream, {"max_concurrent": 1}) as setup,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        slow = pool.submit(
            setup.server.query, dns.message.make_query("slow.interwebs.test.", "A"), "udp"
        )
        wait_until(lambda: upstream.count() >= 1, message="the upstream holds slow")
        reply = setup.server.query(dns.message.make_query("other.interwebs.test.", "A"))
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert rejects(setup.forwarder) == 1
        assert slow.result().rcode() == dns.rcode.NOERROR
    assert upstream.count("other.interwebs.test.") + upstream.count("other.interwebs.test") == 0
