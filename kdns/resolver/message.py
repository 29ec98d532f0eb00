"""The resolver's stored form of a reply, and the cache hit built from it.

Stdlib only; no state, no clock, no sockets. Reading a reply (``inspect``), the bailiwick rule
(``sanitize``), the OPT, header variants, error and truncated replies live in the wire package
``kdns.dns``; this module re-exports the names the resolver and nodecache use from it, and owns:

* ``build(...) -> Built``: the stored form: ID 0, normalized flags, the question, the kept RRs
  re-compressed against the question by the one writer (``kdns.dns.writer``), no OPT. Built
  from parsed records rather than copied, so a stored answer never carries an upstream's odd
  compression (or the pointer tricks of RFC 9267).
* ``patch(...)``: a cache hit: one copy of the stored bytes with the client's ID, RD and CD, the
  client's own question bytes (its exact case, which answer owners share through the 0xC00C
  pointer) and every TTL set to the same remaining value, plus an OPT when the client sent one.
* ``make_query``: a query as we send it upstream.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kdns.dns.bailiwick import Sanitized as Sanitized
from kdns.dns.bailiwick import sanitize as sanitize
from kdns.dns.constants import AA as AA
from kdns.dns.constants import AD as AD
from kdns.dns.constants import CD as CD
from kdns.dns.constants import DNAME as DNAME
from kdns.dns.constants import DNSSEC_PROOF as DNSSEC_PROOF
from kdns.dns.constants import EDE_NO_REACHABLE_AUTHORITY as EDE_NO_REACHABLE_AUTHORITY
from kdns.dns.constants import EDE_OPTION as EDE_OPTION
from kdns.dns.constants import EDE_STALE_ANSWER as EDE_STALE_ANSWER
from kdns.dns.constants import HEADER_SIZE
from kdns.dns.constants import NSEC as NSEC
from kdns.dns.constants import NSEC3 as NSEC3
from kdns.dns.constants import QR as QR
from kdns.dns.constants import RA as RA
from kdns.dns.constants import RD as RD
from kdns.dns.constants import RRSIG as RRSIG
from kdns.dns.constants import TC as TC
from kdns.dns.edns import opt_record
from kdns.dns.edns import reply_opt as reply_opt
from kdns.dns.edns import size_limit as size_limit
from kdns.dns.header import header_variants as header_variants
from kdns.dns.header import variant_index as variant_index
from kdns.dns.names import MAX_NAME as MAX_NAME
from kdns.dns.query import ClientQuery as ClientQuery
from kdns.dns.query import recursive_error
from kdns.dns.reader import MAX_POINTER_HOPS as MAX_POINTER_HOPS
from kdns.dns.reader import MessageError as MessageError
from kdns.dns.reader import read_name as read_name
from kdns.dns.reader import read_question as read_question
from kdns.dns.records import Record as Record
from kdns.dns.reply import MAX_CHAIN as MAX_CHAIN
from kdns.dns.reply import Kind as Kind
from kdns.dns.reply import ReplyFacts as ReplyFacts
from kdns.dns.reply import answer_chain as answer_chain
from kdns.dns.reply import classify as classify
from kdns.dns.reply import inspect as inspect
from kdns.dns.reply import soa_negative_ttl
from kdns.dns.truncate import truncated_reply as truncated_reply
from kdns.dns.writer import Writer

error_reply = recursive_error
"""The resolver's error reply (RA set, EDE), under the name its callers use."""


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
    writer = Writer(question)
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
        question_end=HEADER_SIZE + len(question),
        ttl_offsets=tuple(offsets),
        rcode=rcode,
        kind=classify(rcode, qtype, chain, answer),
        min_ttl=min((record.ttl for record in everything), default=None),
        negative_ttl=soa_negative_ttl(authority, chain[-1]),
    )


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
    buf[HEADER_SIZE : HEADER_SIZE + len(question)] = question
    pack_into = struct.pack_into
    for offset in offsets:
        pack_into(">I", buf, offset, ttl)
    if opt:
        arcount = (buf[10] << 8 | buf[11]) + 1
        buf[10] = arcount >> 8
        buf[11] = arcount & 0xFF
        buf += opt
    return bytes(buf)


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
    return header + body + opt_record(udp_size, do_bit)
