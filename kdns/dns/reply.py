"""Reading a reply: ``inspect(reply) -> ReplyFacts``, every fact the cache and the upstream
client need from a reply: header, rcode (with the OPT's extended bits), question, each RR
(except OPT) with its TTL offset and its RDATA with embedded names decompressed, the CNAME
chain, the SOA of a negative answer, and whether it is positive, NXDOMAIN or NODATA (RFC 2308
§2). Names go through the one reader (``kdns.dns.reader.read_name``).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from kdns.dns.constants import ANY, CNAME, HEADER_SIZE, NOERROR, NXDOMAIN, OPT, QR, SOA, TC
from kdns.dns.names import ROOT, is_subdomain
from kdns.dns.reader import Edns, MessageError, read_name, read_question
from kdns.dns.records import LAYOUTS, Record

MAX_CHAIN: Final = 16
"""CNAME hops followed inside one reply, and by the resolver across replies (loops are cut)."""


class Kind(enum.Enum):
    """What a reply says about its question (RFC 2308 §1-2 vocabulary)."""

    POSITIVE = "positive"
    """NOERROR with data of the asked type at the end of the CNAME chain."""
    NXDOMAIN = "nxdomain"
    """Name error: the last name of the chain does not exist (RFC 6604 §2)."""
    NODATA = "nodata"
    """NOERROR, the name exists, but no data of the asked type (RFC 2308 §2.2)."""
    ERROR = "error"
    """Any other rcode (SERVFAIL, REFUSED, FORMERR...)."""


@dataclass(frozen=True, slots=True)
class ReplyFacts:
    """Everything ``inspect`` learns from one reply."""

    id: int
    flags: int
    """The 16 header flag bits, rcode included (low 4 bits)."""
    rcode: int
    """The full rcode: header bits plus the OPT's extended bits (RFC 6891 §6.1.3)."""
    qname: bytes
    """The question name, uncompressed, case as in the reply."""
    qtype: int
    qclass: int
    question_end: int
    counts: tuple[int, int, int]
    """Answer, authority, additional counts as in the header (the OPT counts in additional)."""
    records: tuple[Record, ...]
    """Every RR except the OPT, in message order."""
    edns: Edns | None
    chain: tuple[bytes, ...]
    """Lower-case names from the question name through the CNAMEs of the answer section."""
    kind: Kind

    @property
    def qname_lower(self) -> bytes:
        return self.qname.lower()

    @property
    def truncated(self) -> bool:
        return bool(self.flags & TC)

    @property
    def answer(self) -> tuple[Record, ...]:
        return tuple(record for record in self.records if record.section == 0)

    @property
    def authority(self) -> tuple[Record, ...]:
        return tuple(record for record in self.records if record.section == 1)

    @property
    def ttl_offsets(self) -> tuple[int, ...]:
        """TTL field offsets of every RR except the OPT."""
        return tuple(record.ttl_offset for record in self.records)

    @property
    def min_ttl(self) -> int | None:
        """Smallest TTL over all RRs except the OPT (CoreDNS ``MinimalTTL``), None if none."""
        return min((record.ttl for record in self.records), default=None)

    @property
    def soa(self) -> Record | None:
        """The SOA of a negative answer: the first authority SOA owned by the chain's last name
        or one of its ancestors (RFC 2308 §2)."""
        return negative_soa(self.authority, self.chain[-1])

    @property
    def negative_ttl(self) -> int | None:
        """min(SOA TTL, SOA MINIMUM) for NXDOMAIN/NODATA (RFC 2308 §5); None without an SOA."""
        return soa_negative_ttl(self.authority, self.chain[-1])

    def in_bailiwick(self, zone_name: bytes) -> bool:
        """True if ``sanitize(self, zone_name)`` would keep every record and chase nothing."""
        from kdns.dns.bailiwick import sanitize  # the rule reads these facts: a cycle otherwise

        kept = sanitize(self, zone_name)
        return kept.chase is None and kept.dropped == 0


def _read_rdata(message: bytes, rtype: int, start: int, end: int) -> bytes:
    layout = LAYOUTS.get(rtype)
    if layout is None:
        return message[start:end]
    out = bytearray()
    position = start
    for kind in layout[0]:
        if kind == "N":
            name, after = read_name(message, position)
            out += name
        elif kind == "S":
            if position >= end:
                raise MessageError("character-string runs past the RDATA")
            after = position + 1 + message[position]
            out += message[position:after]
        else:
            after = position + int(kind)
            out += message[position:after]
        if after > end:
            raise MessageError("RDATA field runs past RDLENGTH")
        position = after
    if position != end:
        raise MessageError("RDLENGTH does not match the RDATA")
    return bytes(out)


def inspect(reply: bytes) -> ReplyFacts:
    """Read a whole reply. Raises ``MessageError`` for anything unsafe or malformed.

    A truncated reply (TC=1) whose records do not parse is still described (with no records):
    the caller only needs to know it must retry over TCP (RFC 2181 §9, RFC 7766 §5).
    """
    if len(reply) < HEADER_SIZE:
        raise MessageError("shorter than a header")
    qid, flags, qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHHHH", reply)
    if not flags & QR:
        raise MessageError("not a response")
    if qdcount != 1:
        raise MessageError("a reply must carry exactly one question")
    qname, qtype, qclass, question_end = read_question(reply)
    counts = (ancount, nscount, arcount)
    try:
        records, edns, ext_rcode = _read_records(reply, question_end, counts)
    except MessageError:
        if not flags & TC:
            raise
        records, edns, ext_rcode = [], None, 0
    rcode = (ext_rcode << 4) | (flags & 0xF)
    answer = [record for record in records if record.section == 0]
    chain = answer_chain(qname.lower(), qtype, answer)
    return ReplyFacts(
        id=qid,
        flags=flags,
        rcode=rcode,
        qname=qname,
        qtype=qtype,
        qclass=qclass,
        question_end=question_end,
        counts=counts,
        records=tuple(records),
        edns=edns,
        chain=chain,
        kind=classify(rcode, qtype, chain, answer),
    )


def _read_records(
    reply: bytes, position: int, counts: Sequence[int]
) -> tuple[list[Record], Edns | None, int]:
    records: list[Record] = []
    edns: Edns | None = None
    ext_rcode = 0
    size = len(reply)
    for section, count in enumerate(counts):
        for _ in range(count):
            owner, position = read_name(reply, position)
            if position + 10 > size:
                raise MessageError("record header runs past the end")
            rtype, rclass, ttl, rdlength = struct.unpack_from(">HHIH", reply, position)
            ttl_offset = position + 4
            start = position + 10
            end = start + rdlength
            if end > size:
                raise MessageError("record data runs past the end")
            if rtype == OPT:
                if section != 2 or edns is not None or owner != ROOT:
                    raise MessageError("misplaced or repeated OPT record")
                ext_rcode = ttl >> 24
                edns = Edns(rclass, (ttl >> 16) & 0xFF, bool(ttl & 0x8000))
            else:
                if ttl & 0x80000000:
                    ttl = 0  # RFC 2181 §8: a TTL with the top bit set is read as zero
                rdata = _read_rdata(reply, rtype, start, end)
                records.append(Record(section, owner, rtype, rclass, ttl, rdata, ttl_offset))
            position = end
    if position != size:
        raise MessageError("trailing bytes after the last record")
    return records, edns, ext_rcode


def answer_chain(qname_lower: bytes, qtype: int, answer: Iterable[Record]) -> tuple[bytes, ...]:
    """The question name followed through the answer's CNAMEs (lower-case, loops cut)."""
    chain = [qname_lower]
    if qtype in (CNAME, ANY):
        return tuple(chain)
    targets: dict[bytes, bytes] = {}
    for record in answer:
        if record.rtype == CNAME:
            # RFC 2181 §10.1: one CNAME per owner; a second one is ignored, not trusted.
            targets.setdefault(record.owner_lower, record.rdata.lower())
    while len(chain) <= MAX_CHAIN:
        target = targets.get(chain[-1])
        if target is None or target in chain:
            break
        chain.append(target)
    return tuple(chain)


def classify(rcode: int, qtype: int, chain: Sequence[bytes], answer: Iterable[Record]) -> Kind:
    if rcode == NXDOMAIN:
        return Kind.NXDOMAIN
    if rcode != NOERROR:
        return Kind.ERROR
    end = chain[-1]
    for record in answer:
        if record.owner_lower == end and (record.rtype == qtype or qtype == ANY):
            return Kind.POSITIVE
    return Kind.NODATA


def negative_soa(authority: Iterable[Record], end: bytes) -> Record | None:
    for record in authority:
        if record.rtype == SOA and is_subdomain(end, record.owner_lower):
            return record
    return None


def soa_negative_ttl(authority: Iterable[Record], end: bytes) -> int | None:
    soa = negative_soa(authority, end)
    if soa is None or len(soa.rdata) < 20:
        return None
    minimum: int = struct.unpack_from(">I", soa.rdata, len(soa.rdata) - 4)[0]
    return min(soa.ttl, minimum)
