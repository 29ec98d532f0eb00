"""``rewrite:`` rules (CoreDNS ``rewrite name``/``rewrite type`` semantics) over real sockets:
both UDP loops (C and Python), UDP with EDNS, and TCP, against the fixture cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest

from kdns.config import ConfigError, build_config
from tests.support.cluster import fixture_objects
from tests.support.dnscase import Case, check, soa
from tests.support.fault_upstream import FaultUpstream, fault_upstream
from tests.support.servers import RunningServer, forwarder_to, running_server

pytestmark = pytest.mark.integration

T = "testns.svc.cluster.local."
SOA = soa()
NAME_RULES = [
    "name suffix .corp.example. .svc.cluster.local. answer auto",
    "rewrite name exact legacy-db.example. svc1.testns.svc.cluster.local. answer auto",
    "name raw.example. svc1.testns.svc.cluster.local.",
    "name prefix legacy-svc svc answer auto",
    "name substring .mesh. .svc. answer auto",
    r"name regex ^(.+)\.(.+)\.internal\.$ {1}.{2}.svc.cluster.local. answer auto",
    r"name regex ^db-(.+)\.example\.$ {1}.testns.svc.cluster.local. "
    r"answer name ^(.+)\.testns\.svc\.cluster\.local\.$ db-{1}.example.",
    f"name exact svc6.{T} hdls-noport.{T} answer auto",
    "continue name exact two.example. one.example.",
    f"name exact one.example. svc1.{T} answer auto",
]
TYPE_RULES = ["stop type AAAA A"]
C = "testns.corp.example."

CASES = [
    Case("suffix-answer-auto-A", f"svc1.{C}", "A", answer=(f"svc1.{C} 5 IN A 10.0.0.1",)),
    Case("suffix-keeps-client-case", "SVC1.TestNS.Corp.Example.", "A",
         answer=(f"svc1.{C} 5 IN A 10.0.0.1",)),
    Case("suffix-SRV-targets-and-glue-turned-back", f"_http._tcp.svc1.{C}", "SRV",
         answer=(f"_http._tcp.svc1.{C} 5 IN SRV 0 100 80 svc1.{C}",),
         additional=(f"svc1.{C} 5 IN A 10.0.0.1",)),
    Case("suffix-headless", f"hdls-noport.{C}", "A", answer=(f"hdls-noport.{C} 5 IN A 172.0.3.1",)),
    Case("suffix-missing-is-NXDOMAIN-with-cluster-SOA", f"nope.{C}", "A", "NXDOMAIN", authority=(SOA,)),
    Case("suffix-NODATA", f"svc1.{C}", "AAAA", authority=(SOA,)),
    Case("exact-answer-auto", "legacy-db.example.", "A", answer=("legacy-db.example. 5 IN A 10.0.0.1",)),
    Case("exact-without-answer-keeps-rewritten-owner", "raw.example.", "A",
         answer=(f"svc1.{T} 5 IN A 10.0.0.1",)),
    Case("prefix-answer-auto", f"legacy-svc1.{T}", "A", answer=(f"legacy-svc1.{T} 5 IN A 10.0.0.1",)),
    Case("substring-answer-auto", "svc1.testns.mesh.cluster.local.", "A",
         answer=("svc1.testns.mesh.cluster.local. 5 IN A 10.0.0.1",)),
    Case("regex-groups-answer-auto", "svc1.testns.internal.", "A",
         answer=("svc1.testns.internal. 5 IN A 10.0.0.1",)),
    Case("regex-answer-name", "db-svc1.example.", "A", answer=("db-svc1.example. 5 IN A 10.0.0.1",)),
    Case("rule-over-a-compiled-cluster-name", f"svc6.{T}", "A", answer=(f"svc6.{T} 5 IN A 172.0.3.1",)),
    Case("continue-then-stop-only-the-auto-rule-turns-back", "two.example.", "A",
         answer=("one.example. 5 IN A 10.0.0.1",)),
    Case("unmatched-names-unchanged", f"svc1.{T}", "A", answer=(f"svc1.{T} 5 IN A 10.0.0.1",)),
    Case("unmatched-outside-names-not-ours", "other.example.", "A", "REFUSED", aa=False),
    Case("type-AAAA-answered-as-A", f"svc1.{T}", "AAAA", answer=(f"svc1.{T} 5 IN A 10.0.0.1",),
         options={"rules": "type"}),
    Case("type-AAAA-as-A-NODATA", f"svc6.{T}", "AAAA", authority=(SOA,), options={"rules": "type"}),
    Case("type-rule-leaves-A-alone", f"svc1.{T}", "A", answer=(f"svc1.{T} 5 IN A 10.0.0.1",),
         options={"rules": "type"}),
]  # fmt: skip

TRANSPORTS = ["udp-c-loop", "udp-python-loop", "udp-edns", "tcp"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[tuple[str, bool], RunningServer]]:
    configs = {
        "name": build_config({"rewrite": NAME_RULES, "upstream": "none"}).zone,
        "type": build_config({"rewrite": TYPE_RULES, "upstream": "none"}).zone,
    }
    contexts: list[Any] = []
    out: dict[tuple[str, bool], RunningServer] = {}
    for key, config in configs.items():
        for python_loop in (False, True):
            context = running_server(fixture_objects(), config, python_udp_loop=python_loop)
            contexts.append(context)
            out[key, python_loop] = context.__enter__()
    yield out
    for context in contexts:
        context.__exit__(None, None, None)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rewrite(
    case: Case, transport: str, servers: dict[tuple[str, bool], RunningServer]
) -> None:
    server = servers[case.options.get("rules", "name"), transport == "udp-python-loop"]
    query = dns.message.make_query(
        case.qname, case.qtype, use_edns=0 if transport == "udp-edns" else None
    )
    for _ in range(2):  # the second answer comes from the memo
        reply = server.query(query, "tcp" if transport == "tcp" else "udp")
        check(reply, case)
        assert reply.question[0].name == query.question[0].name  # the client's question, kept


BAD_RULES = [
    ("unknown-field", ["name suffix a. b.", "class CH IN"], "rewrite[1]: 'class CH IN': expected"),
    ("missing-to", ["name suffix .a."], "rewrite[0]: 'name suffix .a.': name rules need FROM and TO"),
    ("bad-regex", ["name regex ([ x."], "rewrite[0]: 'name regex ([ x.': bad regular expression"),
    ("bad-type", ["type AAAA BOGUS"], "rewrite[0]: 'type AAAA BOGUS': type rules are FROM TO"),
    ("bad-answer", ["name a. b. answer value x y"], "expected 'answer auto'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rules", "message"), [c[1:] for c in BAD_RULES], ids=[c[0] for c in BAD_RULES]
)
def test_bad_rules_name_the_field(rules: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build_config({"rewrite": rules})
    assert message in str(raised.value)


# --- rules whose result kdns does not hold: the rewritten question is forwarded ---------------

UPSTREAM = [
    "www.example.test. 300 IN A 192.0.2.1",
    "alias.example.test. 300 IN CNAME www.example.test.",
    "example.test. 300 IN SOA ns.example.test. admin.example.test. 1 7200 1800 86400 60",
]
FORWARD_RULES = [
    "name suffix .old.test. .example.test. answer auto",
    "name exact plain.test. www.example.test.",
]
UPSTREAM_SOA = "example.test. 30 IN SOA ns.example.test. admin.example.test. 1 7200 1800 86400 60"
FORWARDED = [
    Case("forwarded-suffix-answer-auto", "www.old.test.", "A", answer=("www.old.test. 30 IN A 192.0.2.1",),
         aa=False),
    Case("forwarded-CNAME-chain-turned-back", "alias.old.test.", "A",
         answer=("alias.old.test. 30 IN CNAME www.old.test.", "www.old.test. 30 IN A 192.0.2.1"), aa=False),
    Case("forwarded-NXDOMAIN-keeps-upstream-SOA", "nope.old.test.", "A", "NXDOMAIN",
         authority=(UPSTREAM_SOA,), aa=False),
    Case("forwarded-without-answer-keeps-rewritten-owner", "plain.test.", "A",
         answer=("www.example.test. 30 IN A 192.0.2.1",), aa=False),
]  # fmt: skip


@pytest.fixture(scope="module")
def forwarding() -> Iterator[tuple[RunningServer, FaultUpstream]]:
    config = build_config({"rewrite": FORWARD_RULES}).zone
    with (
        fault_upstream(UPSTREAM) as upstream,
        forwarder_to(upstream.address) as forwarder,
        running_server(fixture_objects(), config, forwarder=forwarder) as server,
    ):
        yield server, upstream


@pytest.mark.parametrize("transport", ["udp", "udp-edns", "tcp"])
@pytest.mark.parametrize("case", FORWARDED, ids=lambda c: c.id)
def test_a_rewritten_name_kdns_does_not_hold_is_asked_upstream(
    case: Case, transport: str, forwarding: tuple[RunningServer, FaultUpstream]
) -> None:
    server, _ = forwarding
    query = dns.message.make_query(
        case.qname, case.qtype, use_edns=0 if transport == "udp-edns" else None
    )
    reply = server.query(query, "tcp" if transport == "tcp" else "udp")
    check(reply, case)
    assert reply.question[0].name == query.question[0].name
    assert reply.flags & dns.flags.RA


def test_a_rewritten_question_whose_upstream_fails_is_servfail(
    forwarding: tuple[RunningServer, FaultUpstream],
) -> None:
    server, upstream = forwarding
    upstream.plan("down.example.test.", *["servfail"] * 20)  # the name the rule asks for
    reply = server.query(dns.message.make_query("down.old.test.", "A"), "udp")
    assert dns.rcode.to_text(reply.rcode()) == "SERVFAIL"
