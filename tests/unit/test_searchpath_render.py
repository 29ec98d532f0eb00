"""nodecache.searchpath.render: the bytes of a local answer (NXDOMAIN with the zone's SOA, the
autopath CNAME answer) and the negative TTL, which is the cache's own rule
(``kdns.resolver.policy.cache_ttl``), from tables."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from kdns import wire
from kdns.resolver import message
from kdns.resolver.config import ZoneTTL
from kdns.resolver.message import Record
from kdns.serve.protocol import Query
from nodecache.searchpath import render
from tests.unit.resolver.fakes import make_query

ZONE = b"\x07cluster\x05local\x00"


def soa_record(ttl: int, minimum: int) -> Record:
    rdata = b"\x02ns\x00\x0ahostmaster\x00" + (1).to_bytes(4, "big") * 4
    return Record(0, ZONE, wire.SOA, wire.CLASS_IN, ttl, rdata + minimum.to_bytes(4, "big"), 0)


# (SOA TTL, SOA MINIMUM, zone floor and cap or None) -> seconds (RFC 2308 §5, then the zone's)
NEGATIVE_TTL = [
    (5, 5, ZoneTTL(), 5),
    (60, 30, ZoneTTL(), 30),  # min(TTL, MINIMUM), then capped at 30
    (60, 10, ZoneTTL(), 10),
    (2, 60, ZoneTTL(), 5),  # floored at denial_min_s
    (600, 600, ZoneTTL(denial_max_s=300), 300),
    (600, 120, None, 120),  # no cache (nothing bound): RFC 2308 alone
    (0, 0, None, 0),
    (0, 0, ZoneTTL(denial_min_s=0), 0),  # never negative, never None
]


@pytest.mark.parametrize(("ttl", "minimum", "limits", "expected"), NEGATIVE_TTL)
def test_negative_ttl(ttl: int, minimum: int, limits: ZoneTTL | None, expected: int) -> None:
    assert render.negative_ttl(soa_record(ttl, minimum), limits) == expected


def query_of(name: str, rdtype: str, edns: bool) -> Query:
    return make_query(name, rdtype, edns=edns)


# (name, type, EDNS, TTL) -> an NXDOMAIN with the SOA at that TTL, the question echoed
NXDOMAIN = [
    ("nope.shop.svc.cluster.local.", "A", False, 5),
    ("NoPe.shop.svc.cluster.local.", "AAAA", True, 30),
    ("x.y.z.svc.cluster.local.", "A", True, 0),
]


@pytest.mark.parametrize(("name", "rdtype", "edns", "ttl"), NXDOMAIN)
def test_nxdomain(name: str, rdtype: str, edns: bool, ttl: int) -> None:
    query = query_of(name, rdtype, edns)
    reply = dns.message.from_wire(render.nxdomain(query, soa_record(99, 99), ttl))
    assert reply.id == int.from_bytes(query.packet[:2], "big")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert str(reply.question[0].name) == name  # the query's case (docs/decisions.md A9)
    assert reply.answer == []
    assert [(r.rdtype, r.ttl) for r in reply.authority] == [(dns.rdatatype.SOA, ttl)]
    assert (reply.edns >= 0) is edns


# (first expansion, target, TTL, the target's records) -> CNAME first, then the records
AUTOPATH = [
    ("web.shop.svc.cluster.local.", b"\x03web\x04corp\x04test\x00", 5, 1),
    ("web.shop.svc.cluster.local.", b"\x03web\x04corp\x04test\x00", 3, 0),  # the CNAME alone
]


@pytest.mark.parametrize(("name", "target", "ttl", "records"), AUTOPATH)
def test_autopath_answer(name: str, target: bytes, ttl: int, records: int) -> None:
    query = query_of(name, "A", False)
    answer = tuple(
        Record(0, target, wire.A, wire.CLASS_IN, 60, bytes([192, 0, 2, 1]), 0)
        for _ in range(records)
    )
    reply = dns.message.from_wire(render.autopath_answer(query, target, ttl, answer, ()))
    assert reply.rcode() == dns.rcode.NOERROR
    kinds = [(r.rdtype, r.ttl) for r in reply.answer]
    assert kinds == [(dns.rdatatype.CNAME, ttl)] + [(dns.rdatatype.A, ttl)] * records
    assert str(reply.answer[0][0].target) == "web.corp.test."


def test_patch_is_message_patch() -> None:
    query = query_of("a.b.svc.cluster.local.", "A", True)
    built = message.build(query.packet[12 : query.question.end], wire.NXDOMAIN, (), ())
    assert render.patch(query, built, 7) == message.patch(
        built.message,
        query.packet[:2],
        query.flags,
        query.packet[12 : query.question.end],
        7,
        built.ttl_offsets,
        message.reply_opt(query),
    )
