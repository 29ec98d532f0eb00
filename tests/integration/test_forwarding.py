"""kdns forwarding through the shared resolver core, against a scriptable upstream on loopback.

Names outside the cluster zones are forwarded with RA set; ExternalName targets outside the
zones are chased (our CNAME plus the upstream's records); an upstream failure is SERVFAIL,
never NXDOMAIN; cluster names never reach the upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.rcode
import pytest

from kdns.config import ZoneConfig
from kdns.resolver.config import ResolverConfig, StaleConfig, StaleMode, UpstreamConfig
from kdns.resolver.core import Resolver
from kdns.serve.forward import Forwarder
from tests.support.cluster import fixture_objects
from tests.support.dnscase import Case, check, soa
from tests.support.fault_upstream import FaultUpstream, fault_upstream
from tests.support.servers import RunningServer, running_server

pytestmark = pytest.mark.integration

UPSTREAM_RECORDS = [
    "interwebs.test. 300 IN SOA ns.interwebs.test. admin.interwebs.test. 1 7200 1800 86400 60",
    "ext.interwebs.test. 300 IN A 192.0.2.7",
    "www.example.test. 300 IN A 192.0.2.1",
    "example.test. 300 IN SOA ns.example.test. admin.example.test. 1 7200 1800 86400 60",
    "1.2.0.192.in-addr.arpa. 300 IN PTR www.example.test.",
    "2.0.192.in-addr.arpa. 300 IN SOA ns.example.test. admin.example.test. 1 7200 1800 86400 60",
]
T = "testns.svc.cluster.local."


@dataclass
class Setup:
    server: RunningServer
    upstream: FaultUpstream


@pytest.fixture(name="setup")
def _setup() -> Iterator[Setup]:
    with fault_upstream(UPSTREAM_RECORDS) as upstream:
        resolver = Resolver.from_config(
            ResolverConfig(
                cluster_upstream=None,
                reverse_zones=(),
                upstream=UpstreamConfig(
                    (upstream.address,), try_timeout_s=0.3, overall_timeout_s=0.6
                ),
                stale=StaleConfig(mode=StaleMode.OFF),
            )
        )
        resolver.start()
        try:
            with running_server(
                fixture_objects(), ZoneConfig(), forwarder=Forwarder(resolver)
            ) as server:
                yield Setup(server, upstream)
        finally:
            resolver.close()


def ask(setup: Setup, name: str, qtype: str = "A", transport: str = "udp") -> dns.message.Message:
    return setup.server.query(dns.message.make_query(name, qtype), transport)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_out_of_zone_names_are_forwarded_with_ra(setup: Setup, transport: str) -> None:
    reply = ask(setup, "www.example.test.", transport=transport)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer[0][0].address == "192.0.2.1"
    assert reply.flags & dns.flags.RA
    assert not reply.flags & dns.flags.AA


def test_unknown_reverse_names_are_forwarded(setup: Setup) -> None:
    reply = ask(setup, "1.2.0.192.in-addr.arpa.", "PTR")
    assert reply.answer[0][0].target.to_text() == "www.example.test."


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_external_name_target_is_chased(setup: Setup, transport: str) -> None:
    case = Case(
        "R6.2-ExternalName-chased-upstream",
        f"ext.{T}",
        "A",
        answer=(
            f"ext.{T} 5 IN CNAME ext.interwebs.test.",
            "ext.interwebs.test. 30 IN A 192.0.2.7",
        ),  # forwarded TTLs are capped at 30 s, like kubeadm's "cache 30"
    )
    reply = ask(setup, case.qname, transport=transport)
    check(reply, case)
    assert reply.flags & dns.flags.RA


def test_external_name_cname_query_is_not_chased(setup: Setup) -> None:
    before = setup.upstream.count()
    reply = ask(setup, f"ext.{T}", "CNAME")
    assert [rr.to_text() for rr in reply.answer[0]] == ["ext.interwebs.test."]
    assert setup.upstream.count() == before


def test_external_name_target_missing_upstream_is_nxdomain_with_cname(setup: Setup) -> None:
    setup.upstream.plan("ext.interwebs.test.", "answer")
    reply = ask(setup, f"ext.{T}", "TXT")
    assert reply.rcode() == dns.rcode.NOERROR  # the target exists, without TXT
    assert reply.answer[0][0].target.to_text() == "ext.interwebs.test."


@pytest.mark.parametrize("fault", ["drop", "servfail", "garbage", "wrong_id"])
def test_upstream_failure_is_servfail_never_nxdomain(setup: Setup, fault: str) -> None:
    setup.upstream.plan(None, *[fault] * 20)
    reply = ask(setup, "fails.example.test.")
    assert reply.rcode() == dns.rcode.SERVFAIL


def test_chase_with_upstream_down_is_servfail(setup: Setup) -> None:
    setup.upstream.plan(None, *["drop"] * 20)
    reply = ask(setup, f"ext.{T}")
    assert reply.rcode() == dns.rcode.SERVFAIL


def test_cluster_names_never_reach_the_upstream(setup: Setup) -> None:
    before = setup.upstream.count()
    check(
        ask(setup, f"svc1.{T}"),
        Case("R3.1", f"svc1.{T}", "A", answer=(f"svc1.{T} 5 IN A 10.0.0.1",)),
    )
    check(ask(setup, f"nope.{T}"), Case("R8", f"nope.{T}", "A", "NXDOMAIN", authority=(soa(),)))
    assert setup.upstream.count() == before
