"""The whole per-query decision: query bytes in, reply bytes (or None: drop) out. Pure and sync.

``Responder.answer`` is the hot path, in the shape kdns.serve.hotpath defines once (and the C
loop mirrors): ``fast_key`` finds the end of the name and lower-cases the name bytes (never the
type and class bytes, R1.2), one dict lookup finds the entry, and ``assemble`` joins the query's
ID, a prebuilt header, the client's own question bytes (its exact case) and a prebuilt body. A
plain query and one with a single EDNS OPT (dig's, with a cookie) both take it.

Everything else goes to ``answer_slow``, which parses the whole message and handles bad input:
short packets and responses are dropped; a readable header with a broken body is FORMERR;
qdcount other than 1 is FORMERR; opcodes other than QUERY are NOTIMP; EDNS versions other than 0
are BADVERS; AXFR/IXFR and other classes are REFUSED; names outside our zones are REFUSED; and an
answer too big for the client's payload is truncated at an RRset boundary with TC set.

Why the fast path may search for the first zero byte instead of walking labels: a hit in the
table means those bytes equal a well-formed name (table keys contain no other zero byte), so the
label walk would have ended at the same place.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import Final, Protocol

from kdns import wire
from kdns.names import Name
from kdns.rewrite import Rewritten
from kdns.serve import accel
from kdns.serve.hotpath import assemble, fast_key, udp_limit
from kdns.serve.reply import Reply
from kdns.table import AnswerTable


class Forwarding(Protocol):
    """What the Responder needs from a forwarder (``kdns.serve.forward.Forwarder``)."""

    def forward(self, query: Query, tcp: bool) -> Reply: ...
    def chase(self, query: Query, target: Name, cname_ttl: int, tcp: bool) -> Reply: ...
    def forward_rewritten(self, query: Query, rewritten: Rewritten, tcp: bool) -> Reply: ...


logger = logging.getLogger(__name__)

_MIN_UDP: Final = wire.MIN_UDP_SIZE


class Responder:
    """Holds the published table and the per-server constants; safe to share between threads.

    ``fast_path`` is the C loop's contract (kdns.serve.accel.FastPath: the table's dicts it
    serves hits from, the OPT variants, the size ceiling, this Responder's ``answer`` for the
    rest), or None when the accelerator is off; publishing a ``table`` keeps it current.
    """

    def __init__(self, max_udp_size: int = 1232) -> None:
        self._table: AnswerTable | None = None
        self.forwarder: Forwarding | None = None
        """Set to forward names outside our zones (and chase ExternalNames) upstream."""
        self.max_udp_size = max_udp_size
        self.opts = (wire.opt_record(max_udp_size), wire.opt_record(max_udp_size, do_bit=True))
        """The OPT a hot-path reply carries: DO clear, DO set (``hotpath.assemble``)."""
        self.errors = 0
        self.fast_path = accel.fast_path(self.opts, max_udp_size, self.answer, self.count_error)

    @property
    def table(self) -> AnswerTable | None:
        return self._table

    @table.setter
    def table(self, table: AnswerTable | None) -> None:
        """The atomic publish (a reference swap), passed on to the C loop's contract."""
        self._table = table
        if self.fast_path is not None:
            self.fast_path.publish(table)

    def count_error(self) -> None:
        """One internal error (coredns_panics_total); the C loop counts its own through this."""
        self.errors += 1

    def answer(self, packet: bytes, tcp: bool = False) -> Reply:
        """Reply to one query; None means drop it. Never raises."""
        try:
            table = self._table
            fast = fast_key(packet) if table is not None else None
            if fast is not None:
                assert table is not None
                key, qend, variant = fast
                entry = table.records.get(key)
                if entry is None:
                    entry = table.cached(key)
                if entry is not None:
                    body = entry[1]
                    if isinstance(body, tuple):  # loadbalance: the rotation is the query ID's
                        body = body[((packet[0] << 8) | packet[1]) % len(body)]
                    reply = assemble(packet, qend, variant, entry[0], body, self.opts)
                    size = len(reply)
                    # Any limit is at least 512: most replies need no udp_limit call.
                    if (
                        tcp
                        or size <= _MIN_UDP
                        or size <= udp_limit(packet, qend, variant, self.max_udp_size)
                    ):
                        return reply
            return self.answer_slow(packet, tcp)
        except Exception:
            self.errors += 1
            logger.exception("internal error answering a query; dropped")
            return None

    def answer_slow(self, packet: bytes, tcp: bool = False) -> Reply:
        """The fully checked path, for everything the fast path does not take."""
        screened = screen(packet, self.max_udp_size)
        if not isinstance(screened, Query):
            return screened
        query = screened
        table = self.table
        if table is None:
            return query.error(wire.SERVFAIL)
        question = query.question
        forwarder = self.forwarder
        if forwarder is not None and table.chase and question.qtype != wire.CNAME:
            # Before the table lookup: a chased answer depends on the upstream, so it must
            # never reach the memo, which the fast path serves without asking the forwarder.
            target = table.chase.get(question.wire_lower)
            if target is not None:
                return forwarder.chase(query, target, table.index.config.ttl_s, tcp)
        key = question.wire_lower + packet[question.end - 4 : question.end]
        compiled = table.lookup(key, question.name, question.qtype)
        if compiled is None:
            if forwarder is None:
                return query.error(wire.REFUSED)
            rules = table.index.config.rewrite
            rewritten = rules.apply(question.name, question.qtype) if rules else None
            if rewritten is not None:
                return forwarder.forward_rewritten(query, rewritten, tcp)
            return forwarder.forward(query, tcp)
        limit = query.size_limit(tcp)
        heads, body = compiled
        reply: bytes = (
            packet[:2]
            + heads[query.head_index]
            + query.question_bytes
            + wire.pick_body(body, packet)
            + query.opt
        )
        if len(reply) <= limit:
            return reply
        return self._truncated(table, query, limit)

    def _truncated(self, table: AnswerTable, query: Query, limit: int) -> bytes:
        question = query.question
        answer = table.decide(question.name, question.qtype)  # only big answers come this way
        assert answer is not None
        encoded = wire.encode(question.name, answer)
        room = limit - question.end - len(query.opt)
        body, (an, ns, ar), tc = wire.truncate(encoded, room)
        heads = wire.heads(encoded.rcode, encoded.authoritative, tc, an, ns, ar)
        return query.packet[:2] + heads[query.head_index] + query.question_bytes + body + query.opt


@dataclass(frozen=True, slots=True)
class Query:
    """A query that passed ``screen``: its question, EDNS facts and the flags to copy."""

    packet: bytes
    question: wire.Question
    edns: wire.Edns | None
    flags: int
    max_udp_size: int

    @property
    def question_bytes(self) -> bytes:
        """The client's question section, byte for byte (its case included)."""
        return self.packet[wire.HEADER_SIZE : self.question.end]

    @property
    def head_index(self) -> int:
        """Which of ``wire.heads`` variants fits: RD | CD << 1 | EDNS << 2."""
        flags = self.flags
        return (flags >> 8 & 1) | (flags >> 3 & 2) | (4 if self.edns is not None else 0)

    @property
    def opt(self) -> bytes:
        if self.edns is None:
            return b""
        return wire.opt_record(self.max_udp_size, self.edns.do_bit)

    def size_limit(self, tcp: bool) -> int:
        """512 without EDNS; the client's EDNS size within [512, max_udp_size]; 65535 on TCP."""
        if tcp:
            return wire.TCP_MAX_SIZE
        if self.edns is None:
            return wire.MIN_UDP_SIZE
        return min(max(self.edns.udp_size, wire.MIN_UDP_SIZE), self.max_udp_size)

    def error(self, rcode: int) -> bytes:
        return error_reply(
            self.packet, self.flags, rcode, self.question, self.edns, self.max_udp_size
        )


def screen(packet: bytes, max_udp_size: int, allow_transfer: bool = False) -> Query | bytes | None:
    """The bad-input rules every server here shares (kdns and nodecache).

    Returns None to drop (short packets, responses), an error reply (NOTIMP, FORMERR, BADVERS,
    REFUSED for AXFR/IXFR unless ``allow_transfer``, and for non-IN classes), or the parsed
    ``Query`` to answer.
    """
    if len(packet) < wire.HEADER_SIZE:
        return None
    flags, qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHHH", packet, 2)
    if flags & 0x8000:
        return None  # a response: never answer it (reflection loops)
    question: wire.Question | None = None
    if qdcount == 1:
        try:
            question = wire.parse_question(packet)
        except wire.WireError:
            question = None
    if (flags >> 11) & 0xF != 0:
        return error_reply(packet, flags, wire.NOTIMP, question, None, max_udp_size)
    if qdcount != 1 or question is None:
        return error_reply(packet, flags, wire.FORMERR, None, None, max_udp_size)
    try:
        edns = wire.parse_records(packet, question.end, (ancount, nscount, arcount))
    except wire.WireError:
        return error_reply(packet, flags, wire.FORMERR, question, None, max_udp_size)
    if edns is not None and edns.version != 0:
        return error_reply(packet, flags, wire.BADVERS, question, edns, max_udp_size)
    transfer = question.qtype in (wire.AXFR, wire.IXFR)
    if question.qclass != wire.CLASS_IN or (transfer and not allow_transfer):
        return error_reply(packet, flags, wire.REFUSED, question, edns, max_udp_size)
    return Query(packet, question, edns, flags, max_udp_size)


def error_reply(
    packet: bytes,
    flags: int,
    rcode: int,
    question: wire.Question | None,
    edns: wire.Edns | None,
    max_udp_size: int,
) -> bytes:
    """A reply with no records (FORMERR, NOTIMP, REFUSED, SERVFAIL, BADVERS): the question is
    echoed when it parsed, opcode, RD and CD are copied, and an OPT answers an OPT."""
    copy_flags = flags & 0x7910
    qd = 1 if question is not None else 0
    ar = 1 if edns is not None else 0
    header = packet[:2] + struct.pack(">HHHHH", 0x8000 | copy_flags | (rcode & 0xF), qd, 0, 0, ar)
    body = packet[wire.HEADER_SIZE : question.end] if question is not None else b""
    if edns is not None:
        body += wire.opt_record(max_udp_size, edns.do_bit, rcode >> 4)
    return header + body
