"""The wire package's one writer and one reader against dnspython, for random messages.

kdns.wire and kdns.resolver.message each had a compressing writer and a name codec; they are one
now (kdns.dns). These properties pin the merged code to an independent implementation:

* ``encode`` of a decided Answer writes the bytes dnspython writes for the same sections after
  the same question (same compression: first occurrence, case-insensitive suffixes), and when an
  SRV target is present (we remember its suffixes as compression targets, dnspython does not)
  dnspython still reads our bytes back to the same sections;
* ``inspect`` reads a dnspython-written reply (compressed, mixed case) to the records dnspython
  reads, and ``build`` writes those records back to dnspython's own bytes (ID 0, QR|RA).
"""

from __future__ import annotations

import ipaddress

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdns.dns import constants as c
from kdns.dns import names, reply, writer
from kdns.dns.records import RR, Answer
from kdns.resolver import message

LABELS = st.sampled_from(["a", "b", "svc", "cluster", "local", "ns", "x-1"])
NAMES = st.lists(LABELS, max_size=4).map(tuple)
TTLS = st.integers(0, 2**31 - 1)
U16 = st.integers(0, 65535)
U32 = st.integers(0, 2**32 - 1)

DATA = {
    c.A: st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    c.AAAA: st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
    c.CNAME: NAMES,
    c.NS: NAMES,
    c.PTR: NAMES,
    c.MX: st.tuples(U16, NAMES),
    c.SRV: st.tuples(U16, U16, U16, NAMES),
    c.TXT: st.lists(st.text("abcXYZ 09", max_size=12), min_size=1, max_size=3).map(tuple),
    c.SOA: st.tuples(NAMES, NAMES, U32, U32, U32, U32, U32),
}


def _text(name: tuple[str, ...]) -> str:
    return ".".join(name) + "."


def _presentation(rtype: int, data: object) -> str:
    if rtype in (c.A, c.AAAA):
        assert isinstance(data, str)
        return data
    assert isinstance(data, tuple)
    if rtype in (c.CNAME, c.NS, c.PTR):
        return _text(data)
    if rtype == c.MX:
        return f"{data[0]} {_text(data[1])}"
    if rtype == c.SRV:
        return f"{data[0]} {data[1]} {data[2]} {_text(data[3])}"
    if rtype == c.TXT:
        return " ".join(f'"{text}"' for text in data)
    return f"{_text(data[0])} {_text(data[1])} " + " ".join(str(n) for n in data[2:])


@st.composite
def rrsets(draw: st.DrawFn) -> tuple[RR, ...]:
    rtype = draw(st.sampled_from(sorted(DATA)))
    owner = draw(NAMES)
    ttl = draw(TTLS)
    datas = draw(st.lists(DATA[rtype], min_size=1, max_size=3, unique_by=repr))
    if rtype in (c.CNAME, c.SOA):
        datas = datas[:1]
    return tuple(RR(owner, rtype, ttl, data) for data in datas)


def _section() -> st.SearchStrategy[tuple[tuple[RR, ...], ...]]:
    # One RRset per (owner, type) in a section, as dnspython groups them.
    return st.lists(
        rrsets(), max_size=4, unique_by=lambda rrset: (rrset[0].owner, rrset[0].rtype)
    ).map(tuple)


def _dnspython(qname: tuple[str, ...], answer: Answer) -> dns.message.Message:
    msg = dns.message.Message(id=0)
    msg.question.append(dns.rrset.RRset(dns.name.from_text(_text(qname)), 1, c.A))
    for section, rrsets_ in zip(
        (msg.answer, msg.authority, msg.additional),
        (answer.answer, answer.authority, answer.additional),
        strict=True,
    ):
        for rrset in rrsets_:
            first = rrset[0]
            out = dns.rrset.RRset(dns.name.from_text(_text(first.owner)), 1, first.rtype)
            for rr in rrset:
                out.add(dns.rdata.from_text(1, rr.rtype, _presentation(rr.rtype, rr.data)), rr.ttl)
            section.append(out)
    return msg


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(qname=NAMES, an=_section(), ns=_section(), ar=_section())
def test_encode_writes_dnspython_bytes(
    qname: tuple[str, ...],
    an: tuple[tuple[RR, ...], ...],
    ns: tuple[tuple[RR, ...], ...],
    ar: tuple[tuple[RR, ...], ...],
) -> None:
    answer = Answer(c.NOERROR, an, ns, ar)
    encoded = writer.encode(qname, answer)
    theirs = _dnspython(qname, answer).to_wire(want_shuffle=False)  # our order
    question_end = c.HEADER_SIZE + len(names.from_labels(qname)) + 4
    assert encoded.counts == tuple(sum(len(s) for s in sec) for sec in (an, ns, ar))
    has_srv = any(rrset[0].rtype == c.SRV for sec in (an, ns, ar) for rrset in sec)
    if not has_srv:
        assert encoded.body == theirs[question_end:]
    ours = theirs[:question_end] + encoded.body
    back = dns.message.from_wire(ours)
    reference = dns.message.from_wire(theirs)
    assert (back.answer, back.authority, back.additional) == (
        reference.answer,
        reference.authority,
        reference.additional,
    )


MIXED = st.lists(st.sampled_from(["a", "B", "Svc", "cluster", "LOCAL", "ns"]), max_size=4).map(
    tuple
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(qname=MIXED, an=_section(), ns=_section(), ar=_section())
def test_inspect_and_build_round_trip_dnspython(
    qname: tuple[str, ...],
    an: tuple[tuple[RR, ...], ...],
    ns: tuple[tuple[RR, ...], ...],
    ar: tuple[tuple[RR, ...], ...],
) -> None:
    msg = _dnspython(qname, Answer(c.NOERROR, an, ns, ar))
    msg.flags = c.QR | c.RA
    theirs = msg.to_wire(want_shuffle=False)
    facts = reply.inspect(theirs)
    reference = dns.message.from_wire(theirs)
    expected = [
        (section, rrset.name.to_wire(), rrset.rdtype, rrset.ttl, rd.to_wire())
        for section, rrsets_ in enumerate(
            (reference.answer, reference.authority, reference.additional)
        )
        for rrset in rrsets_
        for rd in rrset
    ]
    got = [(r.section, r.owner, r.rtype, r.ttl, r.rdata) for r in facts.records]
    assert got == expected
    question = theirs[c.HEADER_SIZE : facts.question_end]
    built = message.build(
        question,
        facts.rcode,
        facts.answer,
        facts.authority,
        tuple(r for r in facts.records if r.section == 2),
    )
    has_srv = any(r.rtype == c.SRV for r in facts.records)
    if not has_srv:
        assert built.message == theirs
    assert dns.message.from_wire(built.message) == reference
