"""Reply parsing, the bailiwick rule, the stored form and hit patching (kdns/resolver/message.py).

Replies are made with dnspython; malformed ones are literal bytes. No sockets, no clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdns import wire
from kdns.dns import names as zone
from kdns.resolver import message
from kdns.resolver.message import Kind, MessageError
from tests.unit.resolver.fakes import make_query, make_reply, parse, soa

HEADER = struct.pack(">HHHHHH", 7, 0x8180, 1, 1, 0, 0)
QUESTION = b"\x03www\x07example\x04test\x00\x00\x01\x00\x01"


def test_inspect_positive_with_chain() -> None:
    reply = make_reply(
        "www.Example.test.",
        answer=[
            "www.example.test. 300 IN CNAME web.example.test.",
            "web.example.test. 60 IN A 192.0.2.1",
        ],
    )
    facts = message.inspect(reply)
    assert facts.kind is Kind.POSITIVE
    assert facts.chain == (zone.to_wire("www.example.test"), zone.to_wire("web.example.test"))
    assert facts.min_ttl == 60
    assert facts.qname == b"\x03www\x07Example\x04test\x00"
    # Every TTL offset points at the TTL field of its record.
    found = [struct.unpack_from(">I", reply, off)[0] for off in facts.ttl_offsets]
    assert found == [300, 60]
    assert facts.in_bailiwick(zone.to_wire("example.test"))


@pytest.mark.parametrize(
    ("soa_ttl", "minimum", "cname_ttl", "expected"),
    [(3600, 60, None, 60), (30, 60, None, 30), (3600, 60, 10, 60)],
    ids=["minimum-lower", "soa-ttl-lower", "cname-not-in-negative-ttl"],
)
def test_inspect_negative_ttl_rfc2308(
    soa_ttl: int, minimum: int, cname_ttl: int | None, expected: int
) -> None:
    answer = (
        [] if cname_ttl is None else [f"nope.example.test. {cname_ttl} IN CNAME gone.example.test."]
    )
    reply = make_reply(
        "nope.example.test.",
        answer=answer,
        authority=[soa(ttl=soa_ttl, minimum=minimum)],
        rcode=dns.rcode.NXDOMAIN,
    )
    facts = message.inspect(reply)
    assert facts.kind is Kind.NXDOMAIN
    assert facts.negative_ttl == expected


def test_inspect_nodata_and_soa_of_other_zone() -> None:
    reply = make_reply("www.example.test.", "AAAA", authority=[soa()])
    facts = message.inspect(reply)
    assert facts.kind is Kind.NODATA
    assert facts.negative_ttl == 60
    unrelated = make_reply("www.example.test.", "AAAA", authority=[soa("other.test.")])
    assert message.inspect(unrelated).negative_ttl is None


def test_inspect_reads_edns_extended_rcode_and_skips_opt() -> None:
    query = dns.message.make_query("www.example.test.", "A", use_edns=0)
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.BADVERS)
    facts = message.inspect(response.to_wire())
    assert facts.rcode == 16
    assert facts.kind is Kind.ERROR
    assert facts.edns is not None
    assert facts.records == ()


def test_ttl_with_top_bit_is_zero_rfc2181() -> None:
    reply = bytearray(
        make_reply("www.example.test.", answer=["www.example.test. 5 IN A 192.0.2.1"])
    )
    facts = message.inspect(bytes(reply))
    struct.pack_into(">I", reply, facts.ttl_offsets[0], 0x80000005)
    assert message.inspect(bytes(reply)).records[0].ttl == 0


def _answer_rr(name: bytes, rtype: int = 1, rdata: bytes = b"\xc0\x00\x02\x01") -> bytes:
    return name + struct.pack(">HHIH", rtype, 1, 60, len(rdata)) + rdata


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (b"\x00" * 11, "shorter than a header"),
        (struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + QUESTION, "not a response"),
        (struct.pack(">HHHHHH", 7, 0x8180, 2, 0, 0, 0) + QUESTION * 2, "two questions"),
        (HEADER + QUESTION + _answer_rr(b"\xc0\x2d"), "pointer to itself"),
        (HEADER + QUESTION + _answer_rr(b"\xc0\x40"), "forward pointer"),
        (HEADER + QUESTION + _answer_rr(b"\xc0\x02"), "pointer into the header"),
        (HEADER + QUESTION + _answer_rr(b"\x41abc\x00"), "extended label type"),
        (HEADER + QUESTION + _answer_rr(b"\xc0\x0c")[:-2], "rdata runs past the end"),
        (HEADER + QUESTION + _answer_rr(b"\xc0\x0c") + b"\x00", "trailing byte"),
        (HEADER + QUESTION + _answer_rr(b"\xc0\x0c", 5, b"\x03www"), "CNAME rdata cut"),
        (HEADER + QUESTION + _answer_rr(b"\xc0\x0c", 5, b"\x00\x00"), "CNAME rdata too long"),
        (HEADER + QUESTION + _answer_rr(b"\xc0\x0c", 6, b"\x00\x00" + b"\x00" * 19), "SOA short"),
        (HEADER + QUESTION + _answer_rr(b"\x00", 41, b""), "OPT in the answer section"),
        (
            HEADER[:4] + b"\x00\x01\x00\x01\x00\x00\x00\x00" + b"\x3f" + b"a" * 63 + b"\x00",
            "question runs out",
        ),
    ],
)
def test_inspect_rejects(packet: bytes, why: str) -> None:
    with pytest.raises(MessageError):
        message.inspect(packet)


def test_name_longer_than_255_is_rejected() -> None:
    labels = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00"  # 257 octets
    packet = HEADER[:4] + b"\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x01\x00\x01"
    with pytest.raises(MessageError):
        message.inspect(packet)


def test_pointer_chain_is_bounded_and_backward() -> None:
    # A chain of pointers each pointing one step back is legal but ends at a real name.
    base = HEADER + QUESTION
    rr = _answer_rr(b"\x01x\xc0\x0c")
    facts = message.inspect(base + rr)
    assert facts.records[0].owner == b"\x01x\x03www\x07example\x04test\x00"


def test_truncated_reply_with_broken_records_is_still_described() -> None:
    header = struct.pack(">HHHHHH", 7, 0x8380, 1, 5, 0, 0)  # TC=1, claims 5 answers
    facts = message.inspect(header + QUESTION + b"\xc0")
    assert facts.truncated
    assert facts.records == ()


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_inspect_never_raises_other_errors_on_random_bytes(data: bytes) -> None:
    try:
        message.inspect(data)
    except MessageError:
        pass


@given(st.integers(0, 200), st.integers(0, 255))
@settings(max_examples=300, deadline=None)
def test_inspect_never_raises_other_errors_on_mutations(position: int, value: int) -> None:
    reply = bytearray(
        make_reply(
            "www.example.test.",
            "SRV",
            answer=["www.example.test. 60 IN SRV 0 1 80 target.example.test."],
            authority=["example.test. 60 IN NS ns1.example.test."],
            additional=["target.example.test. 60 IN A 192.0.2.1"],
        )
    )
    reply[position % len(reply)] = value
    try:
        facts = message.inspect(bytes(reply))
    except MessageError:
        return
    # Whatever parsed must also build and re-parse.
    kept = message.sanitize(facts, zone.ROOT)
    built = message.build(
        bytes(reply[12 : facts.question_end]),
        facts.rcode,
        kept.answer,
        kept.authority,
        kept.additional,
    )
    message.inspect(built.message)


# --- the bailiwick rule ----------------------------------------------------------------------


@dataclass(frozen=True)
class BailiwickCase:
    id: str
    bailiwick: str
    answer: tuple[str, ...] = ()
    authority: tuple[str, ...] = ()
    additional: tuple[str, ...] = ()
    qtype: str = "A"
    kept_answer: tuple[str, ...] = ()
    kept_authority: int = 0
    kept_additional: tuple[str, ...] = ()
    chase: str | None = None
    dropped: int = 0


Q = "web.shop.svc.cluster.local."
BAILIWICK_CASES = [
    BailiwickCase(
        "clean-positive",
        "cluster.local",
        answer=(f"{Q} 5 IN A 10.0.0.1",),
        kept_answer=("A",),
    ),
    BailiwickCase(
        "unrelated-answer-record-dropped",
        "cluster.local",
        answer=(f"{Q} 5 IN A 10.0.0.1", "www.bank.test. 86400 IN A 203.0.113.66"),
        kept_answer=("A",),
        dropped=1,
    ),
    BailiwickCase(
        "unrelated-in-zone-answer-dropped",
        "cluster.local",
        answer=(f"{Q} 5 IN A 10.0.0.1", "other.shop.svc.cluster.local. 5 IN A 10.9.9.9"),
        kept_answer=("A",),
        dropped=1,
    ),
    BailiwickCase(
        "cname-out-of-bailiwick-is-chased",
        "cluster.local",
        answer=(
            f"{Q} 5 IN CNAME payments.example.com.",
            "payments.example.com. 300 IN A 203.0.113.66",
        ),
        kept_answer=("CNAME",),
        chase="payments.example.com.",
        dropped=1,
    ),
    BailiwickCase(
        "cname-chain-in-bailiwick",
        "cluster.local",
        answer=(
            f"{Q} 5 IN CNAME api.shop.svc.cluster.local.",
            "api.shop.svc.cluster.local. 5 IN A 10.0.0.2",
        ),
        kept_answer=("CNAME", "A"),
    ),
    BailiwickCase(
        "default-route-trusts-every-chain-name",
        ".",
        answer=(
            f"{Q} 5 IN CNAME payments.example.com.",
            "payments.example.com. 300 IN A 192.0.2.9",
        ),
        kept_answer=("CNAME", "A"),
    ),
    BailiwickCase(
        "additional-out-of-bailiwick-dropped",
        "cluster.local",
        answer=(f"{Q} 5 IN A 10.0.0.1",),
        additional=("www.bank.test. 86400 IN A 203.0.113.66",),
        kept_answer=("A",),
        dropped=1,
    ),
    BailiwickCase(
        "additional-unreferenced-dropped-even-at-root",
        ".",
        answer=(f"{Q} 5 IN A 10.0.0.1",),
        additional=("www.bank.test. 86400 IN A 203.0.113.66",),
        kept_answer=("A",),
        dropped=1,
    ),
    BailiwickCase(
        "srv-target-address-kept",
        "cluster.local",
        qtype="SRV",
        answer=(f"{Q} 5 IN SRV 0 100 80 pod-0.web.shop.svc.cluster.local.",),
        additional=(
            "pod-0.web.shop.svc.cluster.local. 5 IN A 10.1.0.1",
            "pod-0.web.shop.svc.cluster.local. 5 IN AAAA fd00::1",
        ),
        kept_answer=("SRV",),
        kept_additional=("A", "AAAA"),
    ),
    BailiwickCase(
        "negative-soa-kept-foreign-ns-dropped",
        "cluster.local",
        authority=(
            "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 2 3 4 5",
            "bank.test. 86400 IN NS ns.attacker.test.",
        ),
        kept_authority=1,
        dropped=1,
    ),
    BailiwickCase(
        "soa-of-a-sibling-zone-dropped",
        "cluster.local",
        authority=("other.local. 5 IN SOA ns.other.local. h.other.local. 1 2 3 4 5",),
        dropped=1,
    ),
    BailiwickCase(
        "dname-owner-in-bailiwick-kept",
        "cluster.local",
        answer=(
            "svc.cluster.local. 5 IN DNAME svc2.cluster.local.",
            f"{Q} 5 IN CNAME web.shop.svc2.cluster.local.",
            "web.shop.svc2.cluster.local. 5 IN A 10.0.0.3",
        ),
        kept_answer=("DNAME", "CNAME", "A"),
    ),
    BailiwickCase(
        "qtype-cname-not-followed",
        "cluster.local",
        qtype="CNAME",
        answer=(f"{Q} 5 IN CNAME x.example.com.",),
        kept_answer=("CNAME",),
    ),
]


@pytest.mark.parametrize("case", BAILIWICK_CASES, ids=lambda c: c.id)
def test_sanitize(case: BailiwickCase) -> None:
    reply = make_reply(Q, case.qtype, case.answer, case.authority, case.additional)
    facts = message.inspect(reply)
    kept = message.sanitize(facts, zone.to_wire(case.bailiwick))
    types = tuple(dns.rdatatype.to_text(r.rtype) for r in kept.answer)
    assert types == case.kept_answer
    assert len(kept.authority) == case.kept_authority
    assert tuple(dns.rdatatype.to_text(r.rtype) for r in kept.additional) == case.kept_additional
    assert (None if kept.chase is None else zone.to_text(kept.chase)) == case.chase
    assert kept.dropped == case.dropped
    assert facts.in_bailiwick(zone.to_wire(case.bailiwick)) is (
        case.dropped == 0 and case.chase is None
    )


# --- the stored form and patching ------------------------------------------------------------


def _built(reply: bytes) -> message.Built:
    facts = message.inspect(reply)
    kept = message.sanitize(facts, zone.ROOT)
    return message.build(
        reply[12 : facts.question_end], facts.rcode, kept.answer, kept.authority, kept.additional
    )


def test_build_normalizes_header_and_compresses() -> None:
    reply = make_reply(
        "www.example.test.",
        "SRV",
        answer=["www.example.test. 60 IN SRV 0 100 80 target.example.test."],
        additional=["target.example.test. 30 IN A 192.0.2.80"],
    )
    built = _built(reply)
    assert built.message[:2] == b"\x00\x00"
    flags = struct.unpack_from(">H", built.message, 2)[0]
    assert flags == message.QR | message.RA
    # The SRV owner is the question name: a pointer to offset 12 (client case echo for free).
    assert built.message[built.question_end : built.question_end + 2] == b"\xc0\x0c"
    # The SRV target is written out (RFC 2782); the additional owner compresses against it.
    assert b"\x06target" in built.message
    parsed = parse(built.message)
    assert parsed.answer[0][0].target.to_text() == "target.example.test."
    assert parsed.additional[0].name.to_text() == "target.example.test."
    assert built.min_ttl == 30
    assert built.kind is Kind.POSITIVE


def test_build_drops_aa_ad_and_opt() -> None:
    query = dns.message.make_query("www.example.test.", "A", use_edns=0)
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA | dns.flags.AD
    response.answer.append(dns.rrset.from_text("www.example.test.", 60, "IN", "A", "192.0.2.1"))
    built = _built(response.to_wire())
    parsed = parse(built.message)
    assert not parsed.flags & (dns.flags.AA | dns.flags.AD)
    assert parsed.edns == -1


def test_patch_sets_id_flags_question_ttls_and_opt() -> None:
    built = _built(
        make_reply(
            "www.example.test.",
            answer=[
                "www.example.test. 300 IN CNAME web.example.test.",
                "web.example.test. 60 IN A 192.0.2.1",
            ],
        )
    )
    before = built.message
    query = make_query("WWW.example.TEST.", edns=True, cd=True, query_id=0xBEEF)
    question = query.packet[12 : query.question.end]
    out = message.patch(
        built.message,
        query.packet[:2],
        query.flags,
        question,
        17,
        built.ttl_offsets,
        message.reply_opt(query),
    )
    parsed = parse(out)
    assert parsed.id == 0xBEEF
    assert parsed.flags & dns.flags.RD
    assert parsed.flags & dns.flags.CD
    assert parsed.flags & dns.flags.RA
    assert parsed.question[0].name.to_text() == "WWW.example.TEST."
    assert parsed.answer[0].name.to_text() == "WWW.example.TEST."  # owner via 0xC00C
    assert {rrset.ttl for rrset in parsed.answer} == {17}
    assert parsed.edns == 0
    assert built.message == before  # stored bytes are never mutated


def test_error_reply_servfail_with_ede() -> None:
    query = make_query("www.example.test.", edns=True, rd=False, query_id=9)
    reply = parse(message.error_reply(query, wire.SERVFAIL, message.EDE_NO_REACHABLE_AUTHORITY))
    assert reply.id == 9
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert reply.flags & dns.flags.RA
    assert not reply.flags & dns.flags.RD
    assert [(opt.otype, opt.code) for opt in reply.options] == [(dns.edns.OptionType.EDE, 22)]
    plain = parse(message.error_reply(make_query("www.example.test."), wire.SERVFAIL))
    assert plain.edns == -1
    assert plain.rcode() == dns.rcode.SERVFAIL


def test_truncated_reply_keeps_question_and_sets_tc() -> None:
    query = make_query("www.example.test.")
    built = _built(make_reply("www.example.test.", answer=["www.example.test. 60 IN A 192.0.2.1"]))
    full = message.patch(
        built.message,
        query.packet[:2],
        query.flags,
        query.packet[12 : query.question.end],
        5,
        built.ttl_offsets,
    )
    cut = parse(message.truncated_reply(full, query.question.end, b""))
    assert cut.flags & dns.flags.TC
    assert cut.question[0].name.to_text() == "www.example.test."
    assert not cut.answer


def test_make_query_with_and_without_edns() -> None:
    packet = message.make_query(42, zone.to_wire("x.test"), 1, 1, cd=True, do_bit=True)
    parsed = dns.message.from_wire(packet)
    assert parsed.id == 42
    assert parsed.flags & dns.flags.RD
    assert parsed.flags & dns.flags.CD
    assert parsed.edns == 0
    assert parsed.ednsflags & dns.flags.DO
    assert parsed.payload == 1232
    assert dns.message.from_wire(message.make_query(1, b"\x00", 2, 1, udp_size=None)).edns == -1
