"""Pure functions over DNS reply bytes: read an upstream reply, keep only what we trust, store
it in one normalized form, and patch a stored reply for the client that asked.

Stdlib only; no state, no clock, no sockets. It owns five jobs:

* ``inspect(reply) -> ReplyFacts``: every fact the cache and the upstream client need from a
  reply: header, rcode (with the OPT's extended bits), question, each RR (except OPT) with its
  TTL offset and its RDATA with embedded names decompressed, the CNAME chain, the SOA of a
  negative answer, and whether it is positive, NXDOMAIN or NODATA (RFC 2308 §2).
* ``sanitize(facts, zone) -> Sanitized``: the bailiwick rule (below).
* ``build(...) -> Built``: the stored form: ID 0, normalized flags, the question, the kept RRs
  re-compressed against the question, no OPT. Built from parsed records rather than copied, so a
  stored answer never carries an upstream's odd compression (or the pointer tricks of RFC 9267).
* ``patch(...)``: a cache hit: one copy of the stored bytes with the client's ID, RD and CD, the
  client's own question bytes (its exact case, which answer owners share through the 0xC00C
  pointer) and every TTL set to the same remaining value, plus an OPT when the client sent one.
* ``error_reply`` and ``truncated_reply``: SERVFAIL (and friends) and TC replies built from a
  query.

Names are read with bounded, strictly backward compression pointers (RFC 9267 §2-3: no loops,
no forward or self pointers, no pointers into the header, 255 octets at most, label types
0x40/0x80 rejected). RDATA names are decompressed for the types RFC 3597 §4 lists as possibly
compressed (RFC 1035 types, plus RP, AFSDB, RT, PX, SRV, NAPTR and DNAME); when writing, only
the RFC 1035 types are compressed again (RFC 3597 §4, RFC 2782).

**The bailiwick rule** (what an upstream is trusted for). An upstream is asked because a route
sends a zone to it (``core.Router``); that route zone is its bailiwick (``.`` for the default
``--upstream`` servers, which are recursive resolvers trusted for every name). Then:

1. *Answer section.* The chain starts at the question name and follows CNAMEs found in the
   answer (in any order, at most ``MAX_CHAIN`` hops, loops cut; qtype CNAME and ANY are not
   followed, RFC 1034 §3.6.2). An answer RR is kept only if its owner is a chain name inside the
   bailiwick, or it is a DNAME (RFC 6672) owned inside the bailiwick by an ancestor of such a
   name. The chain is cut at the first name outside the bailiwick: the CNAME that points there
   is kept (its owner is ours), but nothing owned by the target is, and the resolver asks the
   target's own route instead (``Sanitized.chase``; RFC 1034 §4.3.2 step 3). Records for names
   that are not on the chain (the classic injected "extra answer") are dropped.
2. *Authority section.* Kept only if owned inside the bailiwick by the chain's last trusted name
   or one of its ancestors (the SOA of a negative answer, RFC 2308 §2; NS of the zone), plus
   DNSSEC proof records (NSEC, NSEC3, RRSIG) owned inside the bailiwick.
3. *Additional section.* Kept only if owned inside the bailiwick by a name that a kept record
   points at (NS, MX, SRV... targets) or by a chain name; RFC 2181 §5.4.1 ranks this data
   lowest. OPT is never stored: each reply gets its own.

And the invariant that makes the rest safe: **a reply only ever fills the cache entry of the
question it answers**. Records are never split out into entries for other names, so a spoofed
or out-of-bailiwick record can at worst travel with the answer it arrived in, and the rules
above remove it from there too.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol

from kdns import wire
from kdns.resolver import zone

MAX_CHAIN: Final = 16
"""CNAME hops followed inside one reply, and by the resolver across replies (loops are cut)."""
MAX_POINTER_HOPS: Final = 127
MAX_NAME: Final = 255

# RR types used here beyond kdns.wire's constants.
DNAME: Final = 39
RRSIG: Final = 46
NSEC: Final = 47
NSEC3: Final = 50
DNSSEC_PROOF: Final = frozenset({RRSIG, NSEC, NSEC3})

# RFC 8914 extended DNS error codes we send.
EDE_STALE_ANSWER: Final = 3
EDE_NO_REACHABLE_AUTHORITY: Final = 22
EDE_OPTION: Final = 15

# Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.2 for AD/CD).
QR: Final = 0x8000
AA: Final = 0x0400
TC: Final = 0x0200
RD: Final = 0x0100
RA: Final = 0x0080
AD: Final = 0x0020
CD: Final = 0x0010

# RDATA layouts: "N" a name, "S" a character-string, a digit run = that many fixed octets.
# The boolean says whether the names may be compressed when we write them (RFC 3597 §4).
_LAYOUTS: Final[dict[int, tuple[tuple[str, ...], bool]]] = {
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


class MessageError(wire.WireError):
    """A reply that cannot be read safely; it is dropped, never cached or served."""


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
class Record:
    """One RR of a reply, its names decompressed."""

    section: int
    """0 answer, 1 authority, 2 additional."""
    owner: bytes
    """Uncompressed wire form, case as sent."""
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes
    """RDATA with embedded names decompressed (``_LAYOUTS``); other types byte for byte."""
    ttl_offset: int
    """Where the TTL field sits in the message this record was read from."""

    @property
    def owner_lower(self) -> bytes:
        return self.owner.lower()

    def names(self) -> list[bytes]:
        """Names inside the RDATA (targets of NS, MX, SRV, CNAME...), lower-cased."""
        layout = _LAYOUTS.get(self.rtype)
        if layout is None:
            return []
        return [part.lower() for kind, part in _split_rdata(self.rdata, layout[0]) if kind == "N"]

    def with_names(self, rename: Callable[[bytes], bytes]) -> Record:
        """This record with ``rename`` applied to its owner and the names in its RDATA."""
        layout = _LAYOUTS.get(self.rtype)
        rdata = self.rdata
        if layout is not None:
            parts = _split_rdata(rdata, layout[0])
            rdata = b"".join(rename(part) if kind == "N" else part for kind, part in parts)
        return replace(self, owner=rename(self.owner), rdata=rdata)


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
    edns: wire.Edns | None
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
        return _negative_soa(self.authority, self.chain[-1])

    @property
    def negative_ttl(self) -> int | None:
        """min(SOA TTL, SOA MINIMUM) for NXDOMAIN/NODATA (RFC 2308 §5); None without an SOA."""
        return _negative_ttl(self.authority, self.chain[-1])

    def in_bailiwick(self, zone_name: bytes) -> bool:
        """True if ``sanitize(self, zone_name)`` would keep every record and chase nothing."""
        kept = sanitize(self, zone_name)
        return kept.chase is None and kept.dropped == 0


@dataclass(frozen=True, slots=True)
class Sanitized:
    """The records of a reply that the bailiwick rule keeps."""

    answer: tuple[Record, ...]
    authority: tuple[Record, ...]
    additional: tuple[Record, ...]
    chase: bytes | None
    """A CNAME target outside the bailiwick that the resolver must ask its own route for
    (case as in the reply), or None."""
    dropped: int
    """How many records were removed (poisoning attempts, or an over-eager upstream)."""


@dataclass(frozen=True, slots=True)
class Built:
    """A reply in the form the cache stores and ``patch`` serves."""

    message: bytes
    """ID 0, flags QR|RA|rcode, the question, records compressed, no OPT."""
    question_end: int
    ttl_offsets: tuple[int, ...]
    rcode: int
    kind: Kind
    min_ttl: int | None
    negative_ttl: int | None
    """min(SOA TTL, SOA MINIMUM) of the negative answer's SOA (RFC 2308 §5), None without."""


class ClientQuery(Protocol):
    """What the resolver needs from a screened client query (``kdns.serve.protocol.Query``
    has exactly these fields; we name the shape here so the core never imports the server)."""

    @property
    def packet(self) -> bytes: ...
    @property
    def question(self) -> wire.Question: ...
    @property
    def edns(self) -> wire.Edns | None: ...
    @property
    def flags(self) -> int: ...
    @property
    def max_udp_size(self) -> int: ...


# --- reading ---------------------------------------------------------------------------------


def read_name(message: bytes, offset: int) -> tuple[bytes, int]:
    """Decompress the name at ``offset``: (uncompressed wire, case kept; offset just after it).

    Pointers must point strictly backward and past the header (RFC 9267 §2-3), so the walk
    always ends; the hop count and the 255-octet limit bound it further.
    """
    out = bytearray()
    end = -1
    hops = 0
    position = offset
    size = len(message)
    while True:
        if position >= size:
            raise MessageError("name runs past the end of the message")
        length = message[position]
        if length >= 0xC0:
            if position + 1 >= size:
                raise MessageError("compression pointer runs past the end")
            target = ((length & 0x3F) << 8) | message[position + 1]
            if target >= position or target < wire.HEADER_SIZE:
                raise MessageError("compression pointer is not strictly backward")
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise MessageError("too many compression pointers")
            if end < 0:
                end = position + 2
            position = target
            continue
        if length > 63:
            raise MessageError("unknown label type")
        if length == 0:
            out.append(0)
            if len(out) > MAX_NAME:
                raise MessageError("name longer than 255 octets")
            return bytes(out), (end if end >= 0 else position + 1)
        if position + 1 + length > size:
            raise MessageError("label runs past the end of the message")
        out += message[position : position + 1 + length]
        if len(out) >= MAX_NAME:
            raise MessageError("name longer than 255 octets")
        position += 1 + length


def _plain_name_end(data: bytes, offset: int) -> int:
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


def _split_rdata(rdata: bytes, layout: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """Cut decompressed RDATA into its layout parts."""
    parts: list[tuple[str, bytes]] = []
    offset = 0
    for kind in layout:
        if kind == "N":
            end = _plain_name_end(rdata, offset)
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


def _read_rdata(message: bytes, rtype: int, start: int, end: int) -> bytes:
    layout = _LAYOUTS.get(rtype)
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


def read_question(message: bytes) -> tuple[bytes, int, int, int]:
    """(name, qtype, qclass, end) of the single question of a message."""
    if len(message) < wire.HEADER_SIZE:
        raise MessageError("shorter than a header")
    name, position = read_name(message, wire.HEADER_SIZE)
    if position + 4 > len(message):
        raise MessageError("question type and class missing")
    qtype, qclass = struct.unpack_from(">HH", message, position)
    return name, qtype, qclass, position + 4


def inspect(reply: bytes) -> ReplyFacts:
    """Read a whole reply. Raises ``MessageError`` for anything unsafe or malformed.

    A truncated reply (TC=1) whose records do not parse is still described (with no records):
    the caller only needs to know it must retry over TCP (RFC 2181 §9, RFC 7766 §5).
    """
    if len(reply) < wire.HEADER_SIZE:
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
) -> tuple[list[Record], wire.Edns | None, int]:
    records: list[Record] = []
    edns: wire.Edns | None = None
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
            if rtype == wire.OPT:
                if section != 2 or edns is not None or owner != zone.ROOT:
                    raise MessageError("misplaced or repeated OPT record")
                ext_rcode = ttl >> 24
                edns = wire.Edns(rclass, (ttl >> 16) & 0xFF, bool(ttl & 0x8000))
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
    if qtype in (wire.CNAME, wire.ANY):
        return tuple(chain)
    targets: dict[bytes, bytes] = {}
    for record in answer:
        if record.rtype == wire.CNAME:
            # RFC 2181 §10.1: one CNAME per owner; a second one is ignored, not trusted.
            targets.setdefault(record.owner_lower, record.rdata.lower())
    while len(chain) <= MAX_CHAIN:
        target = targets.get(chain[-1])
        if target is None or target in chain:
            break
        chain.append(target)
    return tuple(chain)


def classify(rcode: int, qtype: int, chain: Sequence[bytes], answer: Iterable[Record]) -> Kind:
    if rcode == wire.NXDOMAIN:
        return Kind.NXDOMAIN
    if rcode != wire.NOERROR:
        return Kind.ERROR
    end = chain[-1]
    for record in answer:
        if record.owner_lower == end and (record.rtype == qtype or qtype == wire.ANY):
            return Kind.POSITIVE
    return Kind.NODATA


def _negative_soa(authority: Iterable[Record], end: bytes) -> Record | None:
    for record in authority:
        if record.rtype == wire.SOA and zone.is_subdomain(end, record.owner_lower):
            return record
    return None


def _negative_ttl(authority: Iterable[Record], end: bytes) -> int | None:
    soa = _negative_soa(authority, end)
    if soa is None or len(soa.rdata) < 20:
        return None
    minimum: int = struct.unpack_from(">I", soa.rdata, len(soa.rdata) - 4)[0]
    return min(soa.ttl, minimum)


# --- the bailiwick rule ----------------------------------------------------------------------


def sanitize(facts: ReplyFacts, bailiwick: bytes) -> Sanitized:
    """Apply the bailiwick rule of the module docstring for an upstream trusted for
    ``bailiwick`` (a lower-case wire zone name)."""
    trusted: list[bytes] = []
    chase: bytes | None = None
    for name in facts.chain:
        if not zone.is_subdomain(name, bailiwick):
            chase = name
            break
        trusted.append(name)
    trusted_set = set(trusted)
    answer: list[Record] = []
    authority: list[Record] = []
    additional: list[Record] = []
    dropped = 0
    for record in facts.records:
        if record.section != 0:
            continue
        owner = record.owner_lower
        keep = owner in trusted_set or (
            record.rtype == DNAME
            and zone.is_subdomain(owner, bailiwick)
            and any(zone.is_subdomain(name, owner) and name != owner for name in trusted)
        )
        if keep:
            answer.append(record)
        else:
            dropped += 1
    end = trusted[-1] if trusted else facts.chain[0]
    for record in facts.records:
        if record.section != 1:
            continue
        owner = record.owner_lower
        if zone.is_subdomain(owner, bailiwick) and (
            record.rtype in DNSSEC_PROOF or zone.is_subdomain(end, owner)
        ):
            authority.append(record)
        else:
            dropped += 1
    referenced = set(trusted)
    for record in (*answer, *authority):
        referenced.update(record.names())
    for record in facts.records:
        if record.section != 2:
            continue
        owner = record.owner_lower
        if owner in referenced and zone.is_subdomain(owner, bailiwick):
            additional.append(record)
        else:
            dropped += 1
    if chase is not None:
        chase = _original_case(facts.records, chase)
    return Sanitized(tuple(answer), tuple(authority), tuple(additional), chase, dropped)


def _original_case(records: Iterable[Record], name_lower: bytes) -> bytes:
    for record in records:
        if record.rtype == wire.CNAME and record.rdata.lower() == name_lower:
            return record.rdata
    return name_lower


# --- building the stored form ----------------------------------------------------------------


class _Writer:
    """Appends records after a question, compressing names against earlier ones."""

    __slots__ = ("buf", "suffixes")

    def __init__(self, question: bytes) -> None:
        self.buf = bytearray(wire.HEADER_SIZE) + question
        self.suffixes: dict[bytes, int] = {}
        self._remember(question[: len(question) - 4], wire.HEADER_SIZE)

    def _remember(self, name: bytes, at: int) -> None:
        offset = 0
        while name[offset] and at + offset < 0x3FFF:
            self.suffixes.setdefault(name[offset:].lower(), at + offset)
            offset += 1 + name[offset]

    def name(self, name: bytes, compress: bool) -> None:
        buf = self.buf
        suffixes = self.suffixes
        offset = 0
        while name[offset]:
            suffix = name[offset:].lower()
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

    def record(self, record: Record) -> int:
        """Write one record; return the offset of its TTL field."""
        self.name(record.owner, compress=True)
        buf = self.buf
        ttl_offset = len(buf) + 4
        buf += struct.pack(">HHIH", record.rtype, record.rclass, record.ttl, 0)
        start = len(buf)
        layout = _LAYOUTS.get(record.rtype)
        if layout is None:
            buf += record.rdata
        else:
            for kind, part in _split_rdata(record.rdata, layout[0]):
                if kind == "N":
                    self.name(part, compress=layout[1])
                else:
                    buf += part
        struct.pack_into(">H", buf, start - 2, len(buf) - start)
        return ttl_offset


def build(
    question: bytes,
    rcode: int,
    answer: Sequence[Record],
    authority: Sequence[Record] = (),
    additional: Sequence[Record] = (),
) -> Built:
    """The stored form of a reply to ``question`` (the question section: name, type, class).

    The header is normalized: ID 0; QR and RA set (we offer recursion); AA clear (a cached answer
    is not authoritative, RFC 1035 §4.1.1); TC clear (truncated replies are never built); AD
    clear (we do not validate, RFC 6840 §5.8); RD and CD clear (``patch`` copies the client's).
    """
    qname_end = len(question) - 4
    qname = question[:qname_end]
    qtype = struct.unpack_from(">H", question, qname_end)[0]
    writer = _Writer(question)
    offsets: list[int] = []
    for record in (*answer, *authority, *additional):
        offsets.append(writer.record(record))
    buf = writer.buf
    struct.pack_into(
        ">HHHHHH",
        buf,
        0,
        0,
        QR | RA | (rcode & 0xF),
        1,
        len(answer),
        len(authority),
        len(additional),
    )
    everything = (*answer, *authority, *additional)
    chain = answer_chain(qname.lower(), qtype, answer)
    return Built(
        message=bytes(buf),
        question_end=wire.HEADER_SIZE + len(question),
        ttl_offsets=tuple(offsets),
        rcode=rcode,
        kind=classify(rcode, qtype, chain, answer),
        min_ttl=min((record.ttl for record in everything), default=None),
        negative_ttl=_negative_ttl(authority, chain[-1]),
    )


# --- replies to clients ----------------------------------------------------------------------


def opt_record(udp_size: int, do_bit: bool, ede: int | None = None, ext_rcode: int = 0) -> bytes:
    """Our OPT (RFC 6891 §6.1.2), with an Extended DNS Error option when ``ede`` is set
    (RFC 8914 §2: INFO-CODE only, no text)."""
    if ede is None:
        return wire.opt_record(udp_size, do_bit, ext_rcode)
    option = struct.pack(">HHH", EDE_OPTION, 2, ede)
    return (
        struct.pack(
            ">BHHBBHH",
            0,
            wire.OPT,
            udp_size,
            ext_rcode,
            0,
            0x8000 if do_bit else 0,
            len(option),
        )
        + option
    )


_OPTS: dict[tuple[int, bool, int | None], bytes] = {}


def reply_opt(query: ClientQuery, ede: int | None = None) -> bytes:
    """The OPT a reply to ``query`` carries: none without EDNS (RFC 6891 §7). Interned: a
    server sees a handful of distinct ones."""
    edns = query.edns
    if edns is None:
        return b""
    shape = (query.max_udp_size, edns.do_bit, ede)
    opt = _OPTS.get(shape)
    if opt is None:
        opt = opt_record(query.max_udp_size, edns.do_bit, ede)
        if len(_OPTS) < 64:
            _OPTS[shape] = opt
    return opt


def header_variants(stored: bytes) -> tuple[bytes, ...]:
    """Header bytes 2-11 of ``stored`` for the 8 query shapes, index RD | CD << 1 | EDNS << 2:
    RD and CD copied in, and one more additional record when an OPT will be appended. What
    ``patch`` does to the header, precomputed once per entry."""
    flags, qd, an, ns, ar = struct.unpack_from(">HHHHH", stored, 2)
    variants = []
    for index in range(8):
        variant_flags = flags | (RD if index & 1 else 0) | (CD if index & 2 else 0)
        variant_ar = ar + (1 if index & 4 else 0)
        variants.append(struct.pack(">HHHHH", variant_flags, qd, an, ns, variant_ar))
    return tuple(variants)


def variant_index(query: ClientQuery) -> int:
    """Which ``header_variants`` entry fits ``query``."""
    flags = query.flags
    return (flags >> 8 & 1) | (flags >> 3 & 2) | (4 if query.edns is not None else 0)


def patch(
    stored: bytes,
    query_id: bytes,
    query_flags: int,
    question: bytes,
    ttl: int,
    offsets: Iterable[int],
    opt: bytes = b"",
) -> bytes:
    """A cache hit's reply: one copy of ``stored`` with the client's ID, RD and CD, the client's
    question bytes (same length as the stored question: same key), every TTL set to ``ttl``,
    and ``opt`` appended (and counted) when non-empty."""
    buf = bytearray(stored)
    buf[0:2] = query_id
    buf[2] |= (query_flags >> 8) & 0x01  # RD (stored bytes have it clear)
    buf[3] |= query_flags & CD
    buf[wire.HEADER_SIZE : wire.HEADER_SIZE + len(question)] = question
    pack_into = struct.pack_into
    for offset in offsets:
        pack_into(">I", buf, offset, ttl)
    if opt:
        arcount = (buf[10] << 8 | buf[11]) + 1
        buf[10] = arcount >> 8
        buf[11] = arcount & 0xFF
        buf += opt
    return bytes(buf)


def error_reply(query: ClientQuery, rcode: int, ede: int | None = None) -> bytes:
    """SERVFAIL (or another error) for ``query``: its ID, RD and CD, RA set, its question, no
    records, and an OPT (with ``ede``) when it had one."""
    packet = query.packet
    flags = QR | RA | (query.flags & (RD | CD)) | (rcode & 0xF)
    opt = reply_opt(query, ede)
    header = packet[:2] + struct.pack(">HHHHH", flags, 1, 0, 0, 1 if opt else 0)
    return header + packet[wire.HEADER_SIZE : query.question.end] + opt


def truncated_reply(reply: bytes, question_end: int, opt: bytes) -> bytes:
    """``reply`` cut to its header and question with TC set, for a UDP client it does not fit
    (RFC 2181 §9: the client retries over TCP)."""
    counts = struct.pack(">HHHH", 1, 0, 0, 1 if opt else 0)
    return reply[:2] + bytes((reply[2] | 0x02, reply[3])) + counts + reply[12:question_end] + opt


def size_limit(query: ClientQuery, tcp: bool) -> int:
    """512 without EDNS; the client's EDNS size within [512, max_udp_size]; 65535 on TCP."""
    if tcp:
        return wire.TCP_MAX_SIZE
    if query.edns is None:
        return wire.MIN_UDP_SIZE
    return min(max(query.edns.udp_size, wire.MIN_UDP_SIZE), query.max_udp_size)


def make_query(
    query_id: int,
    qname: bytes,
    qtype: int,
    qclass: int,
    *,
    cd: bool = False,
    do_bit: bool = False,
    udp_size: int | None = 1232,
) -> bytes:
    """A recursive query (RD=1) as we send it upstream, with an OPT unless ``udp_size`` is
    None (the RFC 6891 §7 retry without EDNS)."""
    flags = RD | (CD if cd else 0)
    header = struct.pack(">HHHHHH", query_id, flags, 1, 0, 0, 0 if udp_size is None else 1)
    body = qname + struct.pack(">HH", qtype, qclass)
    if udp_size is None:
        return header + body
    return header + body + wire.opt_record(udp_size, do_bit)
