"""Reading messages: the one name reader (with bounded decompression), the question of a query
or a reply, and the walk over a query's records that finds its OPT.

Names are read with bounded, strictly backward compression pointers (RFC 9267 §2-3: no loops,
no forward or self pointers, no pointers into the header, 255 octets at most, label types
0x40/0x80 rejected). A query's question may not be compressed at all (``compressed=False``):
nothing precedes it to point at, and a server that followed such pointers could be looped.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from kdns.dns.constants import HEADER_SIZE, OPT
from kdns.dns.names import MAX_NAME, Labels, to_labels

MAX_POINTER_HOPS: Final = 127


class WireError(ValueError):
    """The message body cannot be parsed; the answer to such a query is FORMERR."""


class MessageError(WireError):
    """A reply that cannot be read safely; it is dropped, never cached or served."""


def read_name(message: bytes, offset: int, compressed: bool = True) -> tuple[bytes, int]:
    """The name at ``offset``: (uncompressed wire, case kept; offset just after it).

    Pointers must point strictly backward and past the header (RFC 9267 §2-3), so the walk
    always ends; the hop count and the 255-octet limit bound it further. With ``compressed``
    false any pointer is an error (a query's question).
    """
    size = len(message)
    position = offset
    total = 0  # octets of the name so far, root label excluded
    start = offset  # where the labels not yet copied begin
    pieces: list[bytes] | None = None  # only once a pointer is followed: most names have none
    end = -1
    hops = 0
    while True:
        if position >= size:
            raise MessageError("name runs past the end of the message")
        length = message[position]
        if length == 0:
            if pieces is None:
                return message[offset : position + 1], position + 1
            pieces.append(message[start : position + 1])
            return b"".join(pieces), end
        if length > 63:
            if not compressed:
                raise MessageError("compressed or extended label in the question")
            if length < 0xC0:
                raise MessageError("unknown label type")
            if position + 1 >= size:
                raise MessageError("compression pointer runs past the end")
            target = ((length & 0x3F) << 8) | message[position + 1]
            if target >= position or target < HEADER_SIZE:
                raise MessageError("compression pointer is not strictly backward")
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise MessageError("too many compression pointers")
            if pieces is None:
                pieces = []
                end = position + 2
            pieces.append(message[start:position])
            start = position = target
            continue
        if position + 1 + length > size:
            raise MessageError("label runs past the end of the message")
        total += length + 1
        if total >= MAX_NAME:
            raise MessageError("name longer than 255 octets")
        position += 1 + length


@dataclass(frozen=True, slots=True)
class Question:
    """A fully parsed question section of a query."""

    name: Labels
    wire_lower: bytes
    qtype: int
    qclass: int
    end: int
    """Offset just past the question."""


@dataclass(frozen=True, slots=True)
class Edns:
    """The OPT record of a message: payload size, version and DO bit."""

    udp_size: int
    version: int
    do_bit: bool


def parse_name(packet: bytes, offset: int) -> tuple[Labels, int]:
    """Read an uncompressed question name as lower-case labels (compression is refused)."""
    name, end = read_name(packet, offset, compressed=False)
    return to_labels(name.lower()), end


def parse_question(packet: bytes) -> Question:
    """The question of a query (no compression allowed), its name lower-cased."""
    name, end = read_name(packet, HEADER_SIZE, compressed=False)
    if end + 4 > len(packet):
        raise MessageError("question type and class missing")
    qtype, qclass = struct.unpack_from(">HH", packet, end)
    wire_lower = name.lower()
    return Question(to_labels(wire_lower), wire_lower, qtype, qclass, end + 4)


def read_question(message: bytes) -> tuple[bytes, int, int, int]:
    """(name, qtype, qclass, end) of the single question of a reply (compression allowed)."""
    if len(message) < HEADER_SIZE:
        raise MessageError("shorter than a header")
    name, position = read_name(message, HEADER_SIZE)
    if position + 4 > len(message):
        raise MessageError("question type and class missing")
    qtype, qclass = struct.unpack_from(">HH", message, position)
    return name, qtype, qclass, position + 4


def skip_rr(packet: bytes, offset: int) -> tuple[int, int, int]:
    """Skip one RR of a query without reading its name; returns (rtype, offset of its fixed
    part, offset after it). A query's records are only walked to find the OPT, so their names
    are stepped over, not decompressed."""
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
    """Walk a query's answer, authority and additional sections; return the OPT, if any."""
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
