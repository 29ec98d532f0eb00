"""The RR model: ``RR`` (a record as the authoritative side decides it, RDATA as typed values),
``Record`` (a record as read from or written to the wire, RDATA as bytes with its names
uncompressed), the RDATA layouts that say where names sit in each type, and the one conversion
from typed RDATA to those parts (``rdata_parts``) that the writer consumes for both.

RDATA names are decompressed on reading for the types RFC 3597 §4 lists as possibly compressed
(RFC 1035 types, plus RP, AFSDB, RT, PX, SRV, NAPTR and DNAME); when writing, only the RFC 1035
types are compressed again (RFC 3597 §4; SRV targets never, RFC 2782).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from kdns.dns.constants import AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT, A
from kdns.dns.names import Labels, from_labels
from kdns.dns.reader import MessageError


@dataclass(frozen=True, slots=True)
class RR:
    """One resource record as decided. ``data`` depends on ``rtype``:

    A/AAAA: the address text; NS/CNAME/PTR: a Name; SRV: (priority, weight, port, target);
    MX: (preference, exchange);
    TXT: a tuple of strings; SOA: (mname, rname, serial, refresh, retry, expire, minimum).
    """

    owner: Labels
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


# RDATA layouts: "N" a name, "S" a character-string, a digit run = that many fixed octets.
# The boolean says whether the names may be compressed when we write them (RFC 3597 §4).
LAYOUTS: Final[dict[int, tuple[tuple[str, ...], bool]]] = {
    2: (("N",), True),  # NS
    3: (("N",), True),  # MD
    4: (("N",), True),  # MF
    5: (("N",), True),  # CNAME
    6: (("N", "N", "20"), True),  # SOA
    7: (("N",), True),  # MB
    8: (("N",), True),  # MG
    9: (("N",), True),  # MR
    12: (("N",), True),  # PTR
    14: (("N", "N"), True),  # MINFO
    15: (("2", "N"), True),  # MX
    17: (("N", "N"), False),  # RP
    18: (("2", "N"), False),  # AFSDB
    21: (("2", "N"), False),  # RT
    26: (("2", "N", "N"), False),  # PX
    33: (("6", "N"), False),  # SRV (RFC 2782: target not compressed)
    35: (("4", "S", "S", "S", "N"), False),  # NAPTR
    39: (("N",), False),  # DNAME (RFC 6672 §2.5)
}

Parts = list[tuple[str, bytes]]
"""RDATA cut into its layout parts: ("N", an uncompressed name) or (another kind, raw bytes)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One RR on the wire, its names decompressed."""

    section: int
    """0 answer, 1 authority, 2 additional."""
    owner: bytes
    """Uncompressed wire form, case as sent."""
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes
    """RDATA with embedded names decompressed (``LAYOUTS``); other types byte for byte."""
    ttl_offset: int
    """Where the TTL field sits in the message this record was read from."""

    @property
    def owner_lower(self) -> bytes:
        return self.owner.lower()

    def names(self) -> list[bytes]:
        """Names inside the RDATA (targets of NS, MX, SRV, CNAME...), lower-cased."""
        layout = LAYOUTS.get(self.rtype)
        if layout is None:
            return []
        return [part.lower() for kind, part in split_rdata(self.rdata, layout[0]) if kind == "N"]

    def with_names(self, rename: Callable[[bytes], bytes]) -> Record:
        """This record with ``rename`` applied to its owner and the names in its RDATA."""
        layout = LAYOUTS.get(self.rtype)
        rdata = self.rdata
        if layout is not None:
            parts = split_rdata(rdata, layout[0])
            rdata = b"".join(rename(part) if kind == "N" else part for kind, part in parts)
        return replace(self, owner=rename(self.owner), rdata=rdata)


def plain_name_end(data: bytes, offset: int) -> int:
    """End of an uncompressed name inside decompressed RDATA."""
    while True:
        if offset >= len(data):
            raise MessageError("name runs past the RDATA")
        length = data[offset]
        if length == 0:
            return offset + 1
        if length > 63:
            raise MessageError("compressed name in decompressed RDATA")
        offset += 1 + length


def split_rdata(rdata: bytes, layout: tuple[str, ...]) -> Parts:
    """Cut decompressed RDATA into its layout parts."""
    parts: Parts = []
    offset = 0
    for kind in layout:
        if kind == "N":
            end = plain_name_end(rdata, offset)
        elif kind == "S":
            if offset >= len(rdata):
                raise MessageError("character-string runs past the RDATA")
            end = offset + 1 + rdata[offset]
        else:
            end = offset + int(kind)
        if end > len(rdata):
            raise MessageError("RDATA shorter than its type needs")
        parts.append((kind, rdata[offset:end]))
        offset = end
    if offset != len(rdata):
        raise MessageError("RDATA longer than its type allows")
    return parts


def record_parts(record: Record) -> Parts:
    """A wire record's RDATA as parts (one raw part for types without names)."""
    layout = LAYOUTS.get(record.rtype)
    if layout is None:
        return [("", record.rdata)]
    return split_rdata(record.rdata, layout[0])


def rdata_parts(rr: RR, wire: Callable[[Labels], bytes] = from_labels) -> Parts:
    """A decided record's typed RDATA as wire parts, names uncompressed (``wire`` converts
    them: the writer passes its memo)."""
    data = rr.data
    rtype = rr.rtype
    if rtype == A:
        assert isinstance(data, str)
        return [("4", bytes(int(octet) for octet in data.split(".")))]  # canonical dotted quad
    if rtype == AAAA:
        assert isinstance(data, str)
        return [("16", ipaddress.IPv6Address(data).packed)]
    if rtype in (CNAME, PTR, NS):
        assert isinstance(data, tuple)
        return [("N", wire(data))]
    if rtype == MX:
        assert isinstance(data, tuple)
        preference, exchange = data
        return [("2", struct.pack(">H", preference)), ("N", wire(exchange))]
    if rtype == SRV:
        assert isinstance(data, tuple)
        priority, weight, port, target = data
        return [("6", struct.pack(">HHH", priority, weight, port)), ("N", wire(target))]
    if rtype == TXT:
        assert isinstance(data, tuple)
        out = bytearray()
        for text in data:
            raw = text.encode("utf-8")
            out.append(len(raw))
            out += raw
        return [("", bytes(out))]
    if rtype == SOA:
        assert isinstance(data, tuple)
        mname, rname, *numbers = data
        return [
            ("N", wire(mname)),
            ("N", wire(rname)),
            ("20", struct.pack(">IIIII", *numbers)),
        ]
    raise ValueError(f"cannot encode RR type {rtype}")
