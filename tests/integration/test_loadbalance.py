"""loadbalance (CoreDNS's plugin, on by default as in kubeadm's Corefile): answers with several
A, AAAA or SRV records come in rotating orders, so clients that take the first address spread
over the endpoints. Proven statistically over real sockets, through both UDP loops and TCP.

The rotation is chosen by the query ID (``wire.pick_body``); dnspython picks IDs at random as
glibc and musl do, so the first record of the answer should be uniform over the rotations.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import dns.message
import dns.rdatatype
import pytest

from kdns.config import ZoneConfig
from kdns.model import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    KubeObject,
    Namespace,
    Service,
    ServicePort,
)
from kdns.serve import accel
from tests.support.servers import RunningServer, running_server

pytestmark = pytest.mark.integration

QUERIES = 320
CHI2_999: dict[int, float] = {1: 10.83, 2: 13.82, 4: 18.47, 15: 37.70}
"""Chi-square critical values at p = 0.001 by degrees of freedom: a uniform spread fails less
than once in a thousand runs."""


def _headless(name: str, family: str, addresses: list[str]) -> list[KubeObject]:
    endpoints = tuple(Endpoint((ip,), True, f"{name}-{i}") for i, ip in enumerate(addresses))
    return [
        Service("lb", name, headless=True, ports=(ServicePort("http", 80),)),
        EndpointSlice("lb", f"{name}-1", name, family, endpoints, (EndpointPort("http", 80),)),
    ]


OBJECTS = [
    Namespace("lb"),
    *_headless("five", "IPv4", [f"10.1.0.{i}" for i in range(1, 6)]),
    *_headless("three6", "IPv6", [f"fd00::{i}" for i in range(1, 4)]),
    *_headless("twenty", "IPv4", [f"10.2.0.{i}" for i in range(1, 21)]),
]


@dataclass(frozen=True)
class SpreadCase:
    id: str
    qname: str
    qtype: str
    records: int
    firsts: int
    """How many distinct records come first (min(records, wire.MAX_ROTATIONS))."""


CASES = [
    SpreadCase("R5.1-loadbalance-A-5-endpoints", "five.lb.svc.cluster.local.", "A", 5, 5),
    SpreadCase("R5.1-loadbalance-AAAA-3", "three6.lb.svc.cluster.local.", "AAAA", 3, 3),
    SpreadCase("R5.2-loadbalance-SRV-5", "_http._tcp.five.lb.svc.cluster.local.", "SRV", 5, 5),
    SpreadCase("R5.1-loadbalance-A-20-16-rotations", "twenty.lb.svc.cluster.local.", "A", 20, 16),
]


@pytest.fixture(name="server", params=["c-loop", "python-loop"])
def _server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningServer]:
    if request.param == "python-loop":
        monkeypatch.setattr(accel, "available", False)
    elif not accel.available:
        pytest.skip(f"the C loop: {accel.reason}")
    with running_server(OBJECTS, ZoneConfig()) as server:
        yield server


def first_records(
    server: RunningServer, case: SpreadCase, transport: str, use_edns: bool
) -> Counter[str]:
    firsts: Counter[str] = Counter()
    # Query IDs pick the rotation; drawn from a seeded generator so the chi-square check is a
    # fixed sample (with dnspython's random IDs, 1 run in 1,000 per case fails by chance).
    ids = random.Random(f"{case.id}-{transport}-{use_edns}")
    for _ in range(QUERIES):
        query = dns.message.make_query(
            case.qname, case.qtype, use_edns=use_edns, id=ids.randrange(0x10000)
        )
        reply = server.query(query, transport)
        [rrset] = [r for r in reply.answer if r.rdtype == dns.rdatatype.from_text(case.qtype)]
        assert len(rrset) == case.records, reply.to_text()
        firsts[next(iter(rrset)).to_text()] += 1
    return firsts


@pytest.mark.parametrize("transport", ["udp", "udp-edns", "tcp"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_first_record_is_spread_uniformly(
    server: RunningServer, case: SpreadCase, transport: str
) -> None:
    firsts = first_records(
        server, case, transport.removesuffix("-edns"), transport.endswith("edns")
    )
    assert len(firsts) == case.firsts, firsts
    expected = QUERIES / case.firsts
    chi2 = sum((seen - expected) ** 2 / expected for seen in firsts.values())
    assert chi2 < CHI2_999[case.firsts - 1], (chi2, firsts)


def test_loadbalance_off_keeps_one_order() -> None:
    with running_server(OBJECTS, ZoneConfig(loadbalance="off")) as server:
        case = CASES[0]
        orders = set()
        for _ in range(50):
            reply = server.query(dns.message.make_query(case.qname, case.qtype), "udp")
            orders.add(tuple(rr.to_text() for rr in reply.answer[0]))
        assert len(orders) == 1, orders
