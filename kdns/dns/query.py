"""The screened query: the bad-input rules every server here shares (kdns and nodecache), the
``Query`` that passes them, and the two error replies built from a query.

``screen`` returns None to drop (short packets, responses), an error reply (NOTIMP, FORMERR,
BADVERS, REFUSED for AXFR/IXFR unless allowed, and for non-IN classes), or the parsed ``Query``.

The two error replies differ on purpose:

* ``error_reply`` answers what ``screen`` rejects, and the authoritative server's own REFUSED
  and SERVFAIL: opcode, RD and CD copied, RA clear (kdns itself does not recurse), the question
  echoed only when it parsed, an OPT (with the extended rcode bits, RFC 6891 §6.1.3) when the
  query had one.
* ``recursive_error`` answers a screened query on the resolver's behalf (SERVFAIL when the
  upstreams fail, a local NXDOMAIN): RA set (we offer recursion), and an Extended DNS Error
  option when given one (RFC 8914).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from kdns.dns.constants import (
    AXFR,
    BADVERS,
    CD,
    CLASS_IN,
    FORMERR,
    HEADER_SIZE,
    IXFR,
    NOTIMP,
    QR,
    RA,
    RD,
    REFUSED,
)
from kdns.dns.edns import opt_record, reply_opt, size_limit
from kdns.dns.header import variant_index
from kdns.dns.reader import Edns, Question, WireError, parse_question, parse_records


class ClientQuery(Protocol):
    """What the resolver reads of a screened query (``Query`` has exactly these fields; other
    shapes, such as the resolver's own internal queries, only need these)."""

    @property
    def packet(self) -> bytes: ...
    @property
    def question(self) -> Question: ...
    @property
    def edns(self) -> Edns | None: ...
    @property
    def flags(self) -> int: ...
    @property
    def max_udp_size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Query:
    """A query that passed ``screen``: its question, EDNS facts and the flags to copy."""

    packet: bytes
    question: Question
    edns: Edns | None
    flags: int
    max_udp_size: int

    @property
    def question_bytes(self) -> bytes:
        """The client's question section, byte for byte (its case included)."""
        return self.packet[HEADER_SIZE : self.question.end]

    @property
    def head_index(self) -> int:
        """Which header variant fits (``kdns.dns.header``): RD | CD << 1 | EDNS << 2."""
        return variant_index(self)

    @property
    def opt(self) -> bytes:
        return reply_opt(self)

    def size_limit(self, tcp: bool) -> int:
        """512 without EDNS; the client's EDNS size within [512, max_udp_size]; 65535 on TCP."""
        return size_limit(self, tcp)

    def error(self, rcode: int) -> bytes:
        return error_reply(
            self.packet, self.flags, rcode, self.question, self.edns, self.max_udp_size
        )


def screen(packet: bytes, max_udp_size: int, allow_transfer: bool = False) -> Query | bytes | None:
    """Drop (None), reject (an error reply) or accept (a ``Query``) one query's bytes."""
    if len(packet) < HEADER_SIZE:
        return None
    flags, qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHHH", packet, 2)
    if flags & QR:
        return None  # a response: never answer it (reflection loops)
    question: Question | None = None
    if qdcount == 1:
        try:
            question = parse_question(packet)
        except WireError:
            question = None
    if (flags >> 11) & 0xF != 0:
        return error_reply(packet, flags, NOTIMP, question, None, max_udp_size)
    if qdcount != 1 or question is None:
        return error_reply(packet, flags, FORMERR, None, None, max_udp_size)
    try:
        edns = parse_records(packet, question.end, (ancount, nscount, arcount))
    except WireError:
        return error_reply(packet, flags, FORMERR, question, None, max_udp_size)
    if edns is not None and edns.version != 0:
        return error_reply(packet, flags, BADVERS, question, edns, max_udp_size)
    transfer = question.qtype in (AXFR, IXFR)
    if question.qclass != CLASS_IN or (transfer and not allow_transfer):
        return error_reply(packet, flags, REFUSED, question, edns, max_udp_size)
    return Query(packet, question, edns, flags, max_udp_size)


def error_reply(
    packet: bytes,
    flags: int,
    rcode: int,
    question: Question | None,
    edns: Edns | None,
    max_udp_size: int,
) -> bytes:
    """A reply with no records (FORMERR, NOTIMP, REFUSED, SERVFAIL, BADVERS): the question is
    echoed when it parsed, opcode, RD and CD are copied, and an OPT answers an OPT."""
    copy_flags = flags & 0x7910
    qd = 1 if question is not None else 0
    ar = 1 if edns is not None else 0
    header = packet[:2] + struct.pack(">HHHHH", QR | copy_flags | (rcode & 0xF), qd, 0, 0, ar)
    body = packet[HEADER_SIZE : question.end] if question is not None else b""
    if edns is not None:
        body += opt_record(max_udp_size, edns.do_bit, rcode >> 4)
    return header + body


def recursive_error(query: ClientQuery, rcode: int, ede: int | None = None) -> bytes:
    """SERVFAIL (or another error) for ``query``: its ID, RD and CD, RA set, its question, no
    records, and an OPT (with ``ede``) when it had one."""
    packet = query.packet
    flags = QR | RA | (query.flags & (RD | CD)) | (rcode & 0xF)
    opt = reply_opt(query, ede)
    header = packet[:2] + struct.pack(">HHHHH", flags, 1, 0, 0, 1 if opt else 0)
    return header + packet[HEADER_SIZE : query.question.end] + opt
