"""The one compressing writer: records appended after a question, names compressed against
the question and earlier names (RFC 1035 §4.1.4), and the two encoders built on it: ``encode``
for the authoritative side's decided ``Answer`` and ``Writer.record`` for wire ``Record``s (the
resolver's stored replies).

Owners equal to the query name become the pointer ``0xC00C``, so an answer echoes the client's
exact case (0x20) for free, and an encoded body is valid for any casing of the same name.
Compression targets are looked up lower-cased and only offsets below 0x3FFF are remembered (a
pointer has 14 bits).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kdns.dns.constants import CLASS_IN, HEADER_SIZE
from kdns.dns.names import Labels, from_labels
from kdns.dns.records import LAYOUTS, RR, Answer, Parts, Record, rdata_parts, record_parts

_WIRE: dict[Labels, bytes] = {}
_WIRE_MAX = 1 << 16


def wire_of(name: Labels) -> bytes:
    """``from_labels``, memoized: a table compiles every answer through the writer and the same
    names (owners, targets, the zone's SOA names) recur across answers and rebuilds. Bounded:
    cleared when full, then refilled by the names in use."""
    found = _WIRE.get(name)
    if found is None:
        if len(_WIRE) >= _WIRE_MAX:
            _WIRE.clear()
        found = _WIRE[name] = from_labels(name)
    return found


class Writer:
    """A message under construction: a zeroed header, the question, then records."""

    __slots__ = ("buf", "suffixes")

    def __init__(self, question: bytes) -> None:
        """``question``: the question section (name, type, class), uncompressed."""
        self.buf = bytearray(HEADER_SIZE) + question
        self.suffixes: dict[bytes, int] = {}
        self._remember(question[: len(question) - 4], HEADER_SIZE)

    def _remember(self, name: bytes, at: int) -> None:
        offset = 0
        while name[offset] and at + offset < 0x3FFF:
            self.suffixes.setdefault(name[offset:].lower(), at + offset)
            offset += 1 + name[offset]

    def name(self, name: bytes, compress: bool, folded: bool = False) -> None:
        """Append ``name``; ``folded`` says it is lower-case already (decided names are)."""
        buf = self.buf
        suffixes = self.suffixes
        offset = 0
        while name[offset]:
            suffix = name[offset:] if folded else name[offset:].lower()
            if compress:
                target = suffixes.get(suffix)
                if target is not None:
                    buf += struct.pack(">H", 0xC000 | target)
                    return
            position = len(buf)
            if position < 0x3FFF:
                suffixes.setdefault(suffix, position)
            length = name[offset]
            buf += name[offset : offset + 1 + length]
            offset += 1 + length
        buf.append(0)

    def rr(
        self, owner: bytes, rtype: int, rclass: int, ttl: int, parts: Parts, folded: bool = False
    ) -> int:
        """Write one record from its RDATA parts; return the offset of its TTL field."""
        self.name(owner, True, folded)
        buf = self.buf
        ttl_offset = len(buf) + 4
        buf += struct.pack(">HHIH", rtype, rclass, ttl, 0)
        start = len(buf)
        layout = LAYOUTS.get(rtype)
        compress = layout is not None and layout[1]
        for kind, part in parts:
            if kind == "N":
                self.name(part, compress, folded)
            else:
                buf += part
        struct.pack_into(">H", buf, start - 2, len(buf) - start)
        return ttl_offset

    def record(self, record: Record) -> int:
        """Write one wire record; return the offset of its TTL field."""
        return self.rr(record.owner, record.rtype, record.rclass, record.ttl, record_parts(record))

    def decided(self, rr: RR) -> None:
        """Write one decided record (class IN; its names are lower-case label tuples)."""
        self.rr(wire_of(rr.owner), rr.rtype, CLASS_IN, rr.ttl, rdata_parts(rr, wire_of), True)


@dataclass(frozen=True, slots=True)
class Encoded:
    """An encoded reply body and where each RRset ends, for truncation at RRset boundaries."""

    rcode: int
    authoritative: bool
    body: bytes
    counts: tuple[int, int, int]
    boundaries: tuple[tuple[int, int, int], ...]
    """(section 0-2, records in the RRset, end offset in ``body``) per RRset, in order."""


def _question(qname: Labels) -> bytes:
    # Type and class do not affect compression; zeros stand in for them.
    return wire_of(qname) + b"\x00\x00\x00\x00"


def encode(qname: Labels, answer: Answer) -> Encoded:
    """Encode the sections of ``answer`` as they follow a question for ``qname``."""
    writer = Writer(_question(qname))
    base = len(writer.buf)
    boundaries: list[tuple[int, int, int]] = []
    counts = [0, 0, 0]
    for section, rrsets in enumerate((answer.answer, answer.authority, answer.additional)):
        for rrset in rrsets:
            for rr in rrset:
                writer.decided(rr)
            counts[section] += len(rrset)
            boundaries.append((section, len(rrset), len(writer.buf) - base))
    return Encoded(
        answer.rcode,
        answer.authoritative,
        bytes(writer.buf[base:]),
        (counts[0], counts[1], counts[2]),
        tuple(boundaries),
    )


def encode_batches(qname: Labels, rrs: Iterable[RR], room: int) -> Iterator[tuple[bytes, int]]:
    """Records packed into message bodies of at most ``room`` bytes each (one RR always fits
    a message alone), each compressed on its own against the question: (body, record count).
    A zone transfer sends one message per batch."""
    question = _question(qname)
    base = HEADER_SIZE + len(question)
    writer, count = Writer(question), 0
    for rr in rrs:
        mark = len(writer.buf)
        writer.decided(rr)
        if len(writer.buf) - base > room and count:
            # Pointers only refer backwards, so the bytes before ``mark`` stand alone.
            yield bytes(writer.buf[base:mark]), count
            writer, count = Writer(question), 0
            writer.decided(rr)
        count += 1
    if count:
        yield bytes(writer.buf[base:]), count
