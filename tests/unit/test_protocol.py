"""Protocol handling with literal bytes: bad input, EDNS, truncation, case echo, flags.

These feed ``Responder.answer`` directly (no sockets); the socket behaviour of the same rules is
covered in tests/integration/test_transport.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from kdns.config import ZoneConfig
from kdns.model import Endpoint, EndpointPort, EndpointSlice, Service, ServicePort
from kdns.runtime import Runtime
from kdns.serve.protocol import Responder
from tests.support.cluster import fixture_objects

BIG = [Endpoint((f"10.1.{i // 250}.{i % 250 + 1}",), True, f"host-{i}") for i in range(120)]


@pytest.fixture(name="responder", scope="module")
def _responder() -> Responder:
    responder = Responder(max_udp_size=1232)
    objects = [
        *fixture_objects(),
        Service("testns", "big", headless=True, ports=(ServicePort("http", 80),)),
        EndpointSlice("testns", "big-1", "big", "IPv4", tuple(BIG), (EndpointPort("http", 80),)),
    ]
    Runtime(ZoneConfig(), responder).replace(objects)
    return responder


def header(
    qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def qname_wire(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def question(name: str = "svc1.testns.svc.cluster.local", qtype: int = 1, qclass: int = 1) -> bytes:
    return qname_wire(name) + struct.pack(">HH", qtype, qclass)


OPT = b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00"


def parse(reply: bytes | None) -> dns.message.Message:
    assert reply is not None
    return dns.message.from_wire(reply)


@dataclass(frozen=True)
class ByteCase:
    id: str
    packet: bytes
    rcode: str | None
    """None: the packet must be dropped."""
    question_echoed: bool = True


BAD_INPUT = [
    ByteCase("drop-empty", b"", None),
    ByteCase("drop-shorter-than-header", b"\x12\x34\x01\x00\x00\x01", None),
    ByteCase("drop-response-QR", header(flags=0x8100) + question(), None),
    ByteCase("drop-response-QR-garbage", header(flags=0x8000, qd=9) + b"\xff" * 7, None),
    ByteCase("NOTIMP-opcode-notify", header(flags=0x2000) + question(), "NOTIMP"),
    ByteCase("NOTIMP-opcode-status", header(flags=0x1000) + question(), "NOTIMP"),
    ByteCase("NOTIMP-opcode-update", header(flags=0x2800) + question(), "NOTIMP"),
    ByteCase("FORMERR-qdcount-0", header(qd=0), "FORMERR", question_echoed=False),
    ByteCase("FORMERR-qdcount-2", header(qd=2) + question() + question(), "FORMERR", False),
    ByteCase("FORMERR-name-runs-off-end", header() + b"\x05svc1", "FORMERR", False),
    ByteCase("FORMERR-missing-type-class", header() + qname_wire("a.b"), "FORMERR", False),
    ByteCase(
        "FORMERR-pointer-in-question", header() + b"\xc0\x0c\x00\x01\x00\x01", "FORMERR", False
    ),
    ByteCase("FORMERR-trailing-garbage", header() + question() + b"\x00\x01", "FORMERR"),
    ByteCase("FORMERR-truncated-opt", header(ar=1) + question() + OPT[:7], "FORMERR"),
    ByteCase("FORMERR-two-opts", header(ar=2) + question() + OPT + OPT, "FORMERR"),
    ByteCase("FORMERR-arcount-lies", header(ar=3) + question() + OPT, "FORMERR"),
    ByteCase("REFUSED-AXFR", header() + question("cluster.local", 252), "REFUSED"),
    ByteCase("REFUSED-IXFR", header() + question("cluster.local", 251), "REFUSED"),
    ByteCase("REFUSED-class-CH", header() + question("version.bind", 16, 3), "REFUSED"),
    ByteCase("REFUSED-class-ANY", header() + question(qclass=255), "REFUSED"),
    ByteCase("REFUSED-root-name", header() + question("", 2)[1:], "REFUSED"),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=lambda c: c.id)
def test_bad_input(case: ByteCase, responder: Responder) -> None:
    errors_before = responder.errors
    reply = responder.answer(case.packet)
    assert responder.errors == errors_before, "must be handled, not caught as an internal error"
    if case.rcode is None:
        assert reply is None
        return
    assert reply is not None
    assert reply[:2] == case.packet[:2]
    assert reply[2] & 0x80, "QR set"
    assert reply[2] & 0x78 == case.packet[2] & 0x78, "opcode copied"
    assert dns.rcode.to_text(reply[3] & 0xF) == case.rcode
    qdcount = struct.unpack_from(">H", reply, 4)[0]
    if case.question_echoed:
        assert qdcount == 1
        end = 12 + len(case.packet[12:].split(b"\x00", 1)[0]) + 5
        assert reply[12:end] == case.packet[12:end]
    else:
        assert qdcount == 0


def test_badvers_for_edns_version_1(responder: Responder) -> None:
    query = dns.message.make_query("svc1.testns.svc.cluster.local", "A", use_edns=1)
    reply = parse(responder.answer(query.to_wire()))
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0


def test_case_is_echoed_exactly_0x20(responder: Responder) -> None:
    packet = header() + question("SvC1.tEsTnS.SVC.cluster.LOCAL")
    reply = responder.answer(packet)
    assert reply is not None
    end = len(packet)
    assert reply[12:end] == packet[12:end]
    assert reply[end : end + 2] == b"\xc0\x0c", "answer owner points at the question"
    assert parse(reply).answer[0].name.to_text() == "SvC1.tEsTnS.SVC.cluster.LOCAL."


def test_type_bytes_are_not_case_folded(responder: Responder) -> None:
    # Type 65 is 0x0041 ("A"); folding it would ask for type 97.
    packet = header() + question(qtype=65)
    reply = parse(responder.answer(packet))
    assert reply.question[0].rdtype == 65
    assert reply.rcode() == dns.rcode.NOERROR
    assert not reply.answer


@pytest.mark.parametrize(
    ("flags", "rd", "cd"),
    [(0x0000, False, False), (0x0100, True, False), (0x0010, False, True), (0x0110, True, True)],
)
def test_rd_and_cd_are_copied_aa_set_ra_clear(
    responder: Responder, flags: int, rd: bool, cd: bool
) -> None:
    reply = parse(responder.answer(header(flags=flags) + question()))
    assert bool(reply.flags & dns.flags.RD) == rd
    assert bool(reply.flags & dns.flags.CD) == cd
    assert reply.flags & dns.flags.AA
    assert not reply.flags & dns.flags.RA


EDNS_CASES: list[tuple[str, Callable[[], dns.message.Message]]] = [
    ("plain-opt", lambda: dns.message.make_query("svc1.testns.svc.cluster.local", "A", use_edns=0)),
    ("opt-with-cookie", lambda: dns.message.make_query(
        "svc1.testns.svc.cluster.local", "A", use_edns=0,
        options=[dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)])),
    ("opt-nodata", lambda: dns.message.make_query("svc1.testns.svc.cluster.local", "AAAA", use_edns=0)),
    ("opt-nxdomain", lambda: dns.message.make_query("nope.testns.svc.cluster.local", "A", use_edns=0)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make"), EDNS_CASES, ids=[c[0] for c in EDNS_CASES])
def test_edns_takes_the_fast_path_and_gets_opt(
    responder: Responder,
    name: str,
    make: Callable[[], dns.message.Message],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    query = make()
    responder.answer(query.to_wire())  # warm the memo for names outside the table

    def no_slow_path(*_: object, **__: object) -> None:
        raise AssertionError("slow path taken")

    monkeypatch.setattr(responder, "answer_slow", no_slow_path)
    reply = parse(responder.answer(query.to_wire()))
    assert reply.edns == 0
    assert reply.payload == 1232


def test_do_bit_is_echoed(responder: Responder) -> None:
    query = dns.message.make_query("svc1.testns.svc.cluster.local", "A", want_dnssec=True)
    reply = parse(responder.answer(query.to_wire()))
    assert reply.ednsflags & dns.flags.DO


def test_no_opt_without_edns(responder: Responder) -> None:
    reply = parse(responder.answer(header() + question()))
    assert reply.edns == -1


def big_query(use_edns: int | None, payload: int = 1232, qtype: str = "A") -> bytes:
    return dns.message.make_query(
        "big.testns.svc.cluster.local", qtype, use_edns=use_edns, payload=payload
    ).to_wire()


TRUNCATION = [
    # id, packet, tcp, expect TC, size limit
    ("udp-no-edns-512", big_query(None), False, True, 512),
    ("udp-edns-small-payload-floor-512", big_query(0, payload=200), False, True, 512),
    ("udp-edns-4096-capped-at-max", big_query(0, payload=4096), False, True, 1232),
    ("tcp-never-truncated", big_query(None), True, False, 65535),
]


@pytest.mark.parametrize(
    ("id_", "packet", "tcp", "tc", "limit"), TRUNCATION, ids=[t[0] for t in TRUNCATION]
)
def test_truncation_at_rrset_boundary(
    responder: Responder, id_: str, packet: bytes, tcp: bool, tc: bool, limit: int
) -> None:
    raw = responder.answer(packet, tcp=tcp)
    assert raw is not None
    assert len(raw) <= limit
    reply = parse(raw)
    assert bool(reply.flags & dns.flags.TC) == tc
    assert reply.question[0].name.to_text() == "big.testns.svc.cluster.local."
    if tc:
        assert reply.answer == [], "the A RRset does not fit: it is dropped whole"
    else:
        assert len(reply.answer[0]) == len(BIG)


def test_additional_dropped_without_tc(responder: Responder) -> None:
    # SRV for one host fits; its 120 additional A records would not: RFC 2181 9, no TC.
    query = dns.message.make_query("host-7.big.testns.svc.cluster.local", "A")
    reply = parse(responder.answer(query.to_wire()))
    assert not reply.flags & dns.flags.TC
    srv = parse(responder.answer(big_query(None, qtype="SRV")))
    assert srv.flags & dns.flags.TC  # 120 SRV records exceed 512 bytes


def test_unsynced_nxdomain_becomes_servfail() -> None:
    responder = Responder()
    Runtime(ZoneConfig(), responder, synced=False).replace(fixture_objects())
    missing = parse(responder.answer(header() + question("nope.testns.svc.cluster.local")))
    assert missing.rcode() == dns.rcode.SERVFAIL
    assert missing.authority, "SERVFAIL carries the SOA (R8.2)"
    present = parse(responder.answer(header() + question()))
    assert present.rcode() == dns.rcode.NOERROR
    assert present.answer


def test_no_table_yet_is_servfail() -> None:
    reply = parse(Responder().answer(header() + question()))
    assert reply.rcode() == dns.rcode.SERVFAIL


def test_table_bytes_unchanged_by_queries(responder: Responder) -> None:
    table = responder.table
    assert table is not None
    before = dict(table.records)
    for _ in range(50):
        responder.answer(header(qid=_) + question("SVC1.testns.svc.cluster.local"))
    assert table.records == before


@pytest.mark.parametrize("qtype", ["A", "AAAA", "TXT", "MX"])
def test_memo_never_holds_an_answer_that_depends_on_the_upstream(qtype: str) -> None:
    # Issue 11 finding 2: a chased ExternalName answer is our CNAME plus the upstream's records;
    # had the table memoized the CNAME alone, the fast path would serve it without the chase.
    runtime = Runtime(ZoneConfig(), Responder())
    runtime.builder.chase_external = True
    runtime.replace(fixture_objects())
    table = runtime.responder.table
    assert table is not None
    name = dns.name.from_text("ext.testns.svc.cluster.local.")
    key = name.to_wire().lower() + struct.pack(">HH", dns.rdatatype.from_text(qtype), 1)
    labels = tuple(label.decode() for label in name.labels[:-1])
    assert table.lookup(key, labels, dns.rdatatype.from_text(qtype)) is not None
    assert table.cached(key) is None
