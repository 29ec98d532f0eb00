"""DNS wire format: records to bytes, compiled answers, question parsing and truncation.

This module is stdlib-only and has no state. It owns three jobs:

* ``encode`` turns an ``Answer`` (RRsets grouped by section) into the bytes that follow the
  question, compressing names against the question at offset 12. Owners equal to the query name
  become the pointer ``0xC00C``, so every answer echoes the client's exact case (0x20) for free,
  and a compiled body is valid for any casing of the same name.
* ``Compiled`` is what the answer table stores: eight header variants (RD and CD copied from the
  query, with and without an OPT record) and one body (or, with loadbalance, one body per
  rotation of the answer's A/AAAA/SRV records). A reply is ``id + head + question + body``.
* ``parse_question`` and ``truncate`` serve the slower, fully checked path.

SRV targets are never compressed (RFC 2782); NS, CNAME, PTR, MX and SOA names are (RFC 1035
4.1.4).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from kdns.names import Name

# Types and classes (RFC 1035, 3596, 2782, 6891, 8482).
A: Final = 1
NS: Final = 2
CNAME: Final = 5
SOA: Final = 6
PTR: Final = 12
HINFO: Final = 13
MX: Final = 15
TXT: Final = 16
AAAA: Final = 28
SRV: Final = 33
OPT: Final = 41
IXFR: Final = 251
AXFR: Final = 252
ANY: Final = 255
CLASS_IN: Final = 1

# Response codes.
NOERROR: Final = 0
FORMERR: Final = 1
SERVFAIL: Final = 2
NXDOMAIN: Final = 3
NOTIMP: Final = 4
REFUSED: Final = 5
NOTAUTH: Final = 9
BADVERS: Final = 16

HEADER_SIZE: Final = 12
QUESTION_OFFSET: Final = 12
POINTER_TO_QUESTION: Final = b"\xc0\x0c"
MIN_UDP_SIZE: Final = 512
TCP_MAX_SIZE: Final = 65535


@dataclass(frozen=True, slots=True)
class RR:
    """One resource record. ``data`` depends on ``rtype``:

    A/AAAA: the address text; NS/CNAME/PTR: a Name; SRV: (priority, weight, port, target);
    MX: (preference, exchange);
    TXT: a tuple of strings; SOA: (mname, rname, serial, refresh, retry, expire, minimum).
    """

    owner: Name
    rtype: int
    ttl: int
    data: object


RRset = tuple[RR, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """A decided reply, before encoding: rcode, AA, and RRsets per section."""

    rcode: int
    answer: tuple[RRset, ...] = ()
    authority: tuple[RRset, ...] = ()
    additional: tuple[RRset, ...] = ()
    authoritative: bool = True


def name_wire(name: Name) -> bytes:
    """Uncompressed wire form of a Name, ending with the root label."""
    out = bytearray()
    for label in name:
        raw = label.encode("latin-1")  # query labels are decoded latin-1: any byte round-trips
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


@dataclass(slots=True)
class _Writer:
    """Appends RRs after a question, with RFC 1035 name compression."""

    base: int
    buf: bytearray = field(default_factory=bytearray)
    offsets: dict[Name, int] = field(default_factory=dict)

    def name(self, name: Name, compress: bool = True) -> None:
        for i in range(len(name)):
            suffix = name[i:]
            offset = self.offsets.get(suffix)
            if offset is not None and compress:
                self.buf += struct.pack(">H", 0xC000 | offset)
                return
            position = self.base + len(self.buf)
            if position < 0x3FFF and suffix not in self.offsets:
                self.offsets[suffix] = position
            raw = name[i].encode("latin-1")
            self.buf.append(len(raw))
            self.buf += raw
        self.buf.append(0)

    def rr(self, rr: RR) -> None:
        self.name(rr.owner)
        self.buf += struct.pack(">HHI", rr.rtype, CLASS_IN, rr.ttl)
        length_at = len(self.buf)
        self.buf += b"\x00\x00"
        self._rdata(rr)
        struct.pack_into(">H", self.buf, length_at, len(self.buf) - length_at - 2)

    def _rdata(self, rr: RR) -> None:
        data = rr.data
        if rr.rtype == A:
            assert isinstance(data, str)
            self.buf += bytes(int(octet) for octet in data.split("."))  # canonical dotted quad
        elif rr.rtype == AAAA:
            assert isinstance(data, str)
            self.buf += ipaddress.IPv6Address(data).packed
        elif rr.rtype in (CNAME, PTR, NS):
            assert isinstance(data, tuple)
            self.name(data)
        elif rr.rtype == MX:
            assert isinstance(data, tuple)
            preference, exchange = data
            self.buf += struct.pack(">H", preference)
            self.name(exchange)
        elif rr.rtype == SRV:
            assert isinstance(data, tuple)
            priority, weight, port, target = data
            self.buf += struct.pack(">HHH", priority, weight, port)
            self.name(target, compress=False)
        elif rr.rtype == TXT:
            assert isinstance(data, tuple)
            for text in data:
                raw = text.encode("utf-8")
                self.buf.append(len(raw))
                self.buf += raw
        elif rr.rtype == SOA:
            assert isinstance(data, tuple)
            mname, rname, *numbers = data
            self.name(mname)
            self.name(rname)
            self.buf += struct.pack(">IIIII", *numbers)
        else:
            raise ValueError(f"cannot encode RR type {rr.rtype}")


@dataclass(frozen=True, slots=True)
class Encoded:
    """An encoded reply body and where each RRset ends, for truncation at RRset boundaries."""

    rcode: int
    authoritative: bool
    body: bytes
    counts: tuple[int, int, int]
    boundaries: tuple[tuple[int, int, int], ...]
    """(section 0-2, records in the RRset, end offset in ``body``) per RRset, in order."""


def encode(qname: Name, answer: Answer) -> Encoded:
    """Encode the sections of ``answer`` as they follow a question for ``qname``."""
    qwire_len = len(name_wire(qname))
    writer = _Writer(base=QUESTION_OFFSET + qwire_len + 4)
    position = QUESTION_OFFSET
    for i in range(len(qname)):
        writer.offsets.setdefault(qname[i:], position)
        position += len(qname[i]) + 1
    boundaries: list[tuple[int, int, int]] = []
    counts = [0, 0, 0]
    for section, rrsets in enumerate((answer.answer, answer.authority, answer.additional)):
        for rrset in rrsets:
            for rr in rrset:
                writer.rr(rr)
            counts[section] += len(rrset)
            boundaries.append((section, len(rrset), len(writer.buf)))
    return Encoded(
        answer.rcode,
        answer.authoritative,
        bytes(writer.buf),
        (counts[0], counts[1], counts[2]),
        tuple(boundaries),
    )


def encode_batches(qname: Name, rrs: Iterable[RR], room: int) -> Iterator[tuple[bytes, int]]:
    """Records packed into message bodies of at most ``room`` bytes each (one RR always fits
    a message alone), each compressed on its own against the question: (body, record count).
    A zone transfer sends one message per batch."""
    qwire_len = len(name_wire(qname))

    def fresh() -> _Writer:
        writer = _Writer(base=QUESTION_OFFSET + qwire_len + 4)
        position = QUESTION_OFFSET
        for i in range(len(qname)):
            writer.offsets.setdefault(qname[i:], position)
            position += len(qname[i]) + 1
        return writer

    writer, count = fresh(), 0
    for rr in rrs:
        mark = len(writer.buf)
        writer.rr(rr)
        if len(writer.buf) > room and count:
            # Pointers only refer backwards, so the bytes before ``mark`` stand alone.
            yield bytes(writer.buf[:mark]), count
            writer, count = fresh(), 0
            writer.rr(rr)
        count += 1
    if count:
        yield bytes(writer.buf), count


def opt_record(udp_size: int, do_bit: bool = False, extended_rcode: int = 0) -> bytes:
    """The OPT pseudo-RR we append to replies to EDNS queries (RFC 6891 6.1.2)."""
    return struct.pack(">BHHBBHH", 0, OPT, udp_size, extended_rcode, 0, 0x8000 if do_bit else 0, 0)


_HEADS: dict[tuple[int, bool, bool, int, int, int], tuple[bytes, ...]] = {}


def heads(
    rcode: int, authoritative: bool, truncated: bool, an: int, ns: int, ar: int
) -> tuple[bytes, ...]:
    """Header bytes 2-11 for the 8 variants: index = RD | CD<<1 | EDNS<<2.

    Interned, because a table holds one per entry and most entries share a shape.
    """
    key = (rcode & 0xF, authoritative, truncated, an, ns, ar)
    found = _HEADS.get(key)
    if found is not None:
        return found
    flags = 0x80 | (0x04 if authoritative else 0) | (0x02 if truncated else 0)
    variants: list[bytes] = []
    for edns in (0, 1):
        for cd in (0, 1):
            for rd in (0, 1):
                variants.append(
                    struct.pack(
                        ">BBHHHH",
                        flags | rd,
                        (0x10 if cd else 0) | (rcode & 0xF),
                        1,
                        an,
                        ns,
                        ar + edns,
                    )
                )
    # index = rd | cd << 1 | edns << 2, matching the loop order above.
    ordered = tuple(variants)
    _HEADS[key] = ordered
    return ordered


Body = bytes | tuple[bytes, ...]
"""What follows the question: one body, or one per rotation (``compile_answer``)."""
Compiled = tuple[tuple[bytes, ...], Body]
"""What the answer table stores per key: (``heads(...)`` variants, body)."""


ROTATED_TYPES: Final = frozenset({A, AAAA, SRV})
"""RRsets whose order ``loadbalance: round_robin`` varies (CoreDNS's loadbalance plugin
shuffles A and AAAA; SRV too, since a headless Service's clients may take the first target)."""

MAX_ROTATIONS: Final = 16
"""Bodies compiled per rotated answer: every order for up to 16 records, else 16 evenly spaced
rotations (each of 16 evenly spaced records comes first in one of them)."""


def compile_answer(qname: Name, answer: Answer, rotate: bool = False) -> Compiled:
    """Compile ``answer``; with ``rotate``, an answer section holding an A, AAAA or SRV RRset of
    several records gets one body per rotation (``pick_body`` chooses one per query)."""
    encoded = encode(qname, answer)
    an, ns, ar = encoded.counts
    head = heads(encoded.rcode, encoded.authoritative, False, an, ns, ar)
    if rotate:
        orders = rotations(answer)
        if orders:
            return head, tuple(encode(qname, order).body for order in orders)
    return head, encoded.body


def rotations(answer: Answer) -> tuple[Answer, ...]:
    """``answer`` with each rotatable RRset of its answer section rotated by 0..k-1 steps of
    len/k records (k = min(longest such RRset, MAX_ROTATIONS)); () when nothing rotates."""
    longest = max(
        (len(rrset) for rrset in answer.answer if rrset and rrset[0].rtype in ROTATED_TYPES),
        default=0,
    )
    if longest < 2:
        return ()
    count = min(longest, MAX_ROTATIONS)

    def rotated(rrset: RRset, step: int) -> RRset:
        if len(rrset) < 2 or rrset[0].rtype not in ROTATED_TYPES:
            return rrset
        shift = step * len(rrset) // count % len(rrset)
        return rrset[shift:] + rrset[:shift]

    return tuple(
        Answer(
            answer.rcode,
            tuple(rotated(rrset, step) for rrset in answer.answer),
            answer.authority,
            answer.additional,
            answer.authoritative,
        )
        for step in range(count)
    )


def pick_body(body: Body, packet: bytes) -> bytes:
    """The body to send for ``packet``: a rotated entry's rotation is chosen by the query ID.

    Resolvers pick IDs at random (glibc, musl and dnspython all do), so clients spread evenly
    over the rotations with no shared counter to update, and one packet always gets the same
    bytes from every serving path (the C loop chooses the same way)."""
    if isinstance(body, bytes):
        return body
    return body[((packet[0] << 8) | packet[1]) % len(body)]


def truncate(encoded: Encoded, room: int) -> tuple[bytes, tuple[int, int, int], bool]:
    """Cut ``encoded`` to at most ``room`` bytes at an RRset boundary.

    Returns (body, counts, TC). TC is set only when answer or authority data is dropped;
    dropping additional data alone does not set it (RFC 2181 9).
    """
    if len(encoded.body) <= room:
        return encoded.body, encoded.counts, False
    counts = [0, 0, 0]
    end = 0
    truncated = False
    for section, count, boundary in encoded.boundaries:
        if boundary > room:
            truncated = section < 2
            break
        counts[section] += count
        end = boundary
    return encoded.body[:end], (counts[0], counts[1], counts[2]), truncated


@dataclass(frozen=True, slots=True)
class Question:
    """A fully parsed question section and the EDNS facts of its message."""

    name: Name
    wire_lower: bytes
    qtype: int
    qclass: int
    end: int
    """Offset just past the question."""


class WireError(ValueError):
    """The message body cannot be parsed; the answer is FORMERR."""


def parse_name(packet: bytes, offset: int) -> tuple[Name, int]:
    """Read an uncompressed question name (compression in a question is refused)."""
    labels: list[str] = []
    total = 0
    while True:
        if offset >= len(packet):
            raise WireError("name runs past the end of the message")
        length = packet[offset]
        if length == 0:
            return tuple(labels), offset + 1
        if length > 63:
            raise WireError("compressed or extended label in the question")
        raw = packet[offset + 1 : offset + 1 + length]
        if len(raw) != length:
            raise WireError("label runs past the end of the message")
        total += length + 1
        if total > 254:
            raise WireError("name longer than 255 octets")
        labels.append(raw.lower().decode("latin-1"))
        offset += 1 + length


def parse_question(packet: bytes) -> Question:
    name, end = parse_name(packet, HEADER_SIZE)
    if end + 4 > len(packet):
        raise WireError("question type and class missing")
    qtype, qclass = struct.unpack_from(">HH", packet, end)
    return Question(name, packet[HEADER_SIZE:end].lower(), qtype, qclass, end + 4)


@dataclass(frozen=True, slots=True)
class Edns:
    """The OPT record of a query: payload size, version and DO bit."""

    udp_size: int
    version: int
    do_bit: bool


def skip_rr(packet: bytes, offset: int) -> tuple[int, int, int]:
    """Skip one RR; returns (rtype, offset of its fixed part, offset after it)."""
    while True:
        if offset >= len(packet):
            raise WireError("record name runs past the end")
        length = packet[offset]
        if length >= 0xC0:
            offset += 2
            break
        if length > 63:
            raise WireError("bad label type")
        offset += 1 + length
        if length == 0:
            break
    if offset + 10 > len(packet):
        raise WireError("record header runs past the end")
    rtype, _cls, _ttl, rdlength = struct.unpack_from(">HHIH", packet, offset)
    after = offset + 10 + rdlength
    if after > len(packet):
        raise WireError("record data runs past the end")
    return rtype, offset, after


def parse_records(packet: bytes, offset: int, counts: Sequence[int]) -> Edns | None:
    """Walk the answer, authority and additional sections; return the OPT, if any."""
    edns: Edns | None = None
    for section, count in enumerate(counts):
        for _ in range(count):
            start = offset
            rtype, fixed, offset = skip_rr(packet, offset)
            if rtype == OPT:
                if section != 2 or edns is not None or packet[start] != 0:
                    raise WireError("misplaced or repeated OPT record")
                size, ext, version, flags = struct.unpack_from(">HBBH", packet, fixed + 2)
                del ext
                edns = Edns(size, version, bool(flags & 0x8000))
    if offset != len(packet):
        raise WireError("trailing bytes after the last record")
    return edns
