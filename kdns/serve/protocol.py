"""The whole per-query decision: query bytes in, reply bytes (or None: drop) out. Pure and sync.

``Responder.answer`` is the hot path. It parses only the question: it finds the end of the name,
lower-cases the name bytes (never the type and class bytes, R1.2), does one dict lookup, and
joins the query's ID, a prebuilt header, the client's own question bytes (its exact case) and a
prebuilt body. A plain query and one with a single EDNS OPT (dig's, with a cookie) both take it.

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
from typing import Final, Protocol

from kdns import wire
from kdns.dns.query import Query as Query
from kdns.dns.query import error_reply as error_reply
from kdns.dns.query import screen as screen
from kdns.names import Name
from kdns.rewrite import Rewritten
from kdns.serve.reply import Reply
from kdns.table import AnswerTable


class Forwarding(Protocol):
    """What the Responder needs from a forwarder (``kdns.serve.forward.Forwarder``)."""

    def forward(self, query: Query, tcp: bool) -> Reply: ...
    def chase(self, query: Query, target: Name, cname_ttl: int, tcp: bool) -> Reply: ...
    def forward_rewritten(self, query: Query, rewritten: Rewritten, tcp: bool) -> Reply: ...


logger = logging.getLogger(__name__)

_QD_ONLY: Final = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_QD_AND_AR: Final = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_OPT_PREFIX: Final = b"\x00\x00\x29"
_MAX_LABELED_TYPE: Final = 127


class Responder:
    """Holds the published table and the per-server constants; safe to share between threads."""

    def __init__(self, max_udp_size: int = 1232) -> None:
        self.table: AnswerTable | None = None
        self.forwarder: Forwarding | None = None
        """Set to forward names outside our zones (and chase ExternalNames) upstream."""
        self.max_udp_size = max_udp_size
        self._opt = wire.opt_record(max_udp_size)
        self._opt_do = wire.opt_record(max_udp_size, do_bit=True)
        self.errors = 0

    def answer(self, packet: bytes, tcp: bool = False) -> Reply:
        """Reply to one query; None means drop it. Never raises."""
        try:
            table = self.table
            end = packet.find(b"\x00", 12)
            if table is not None and end > 0 and not packet[2] & 0xF8:
                qend = end + 5
                key = packet[12 : end + 1].lower() + packet[end + 1 : qend]
                entry = table.records.get(key)
                if entry is None and len(key) == end - 7:
                    entry = table.cached(key)
                if entry is not None:
                    body = entry[1]
                    if isinstance(body, tuple):  # loadbalance: the rotation is the query ID's
                        body = body[((packet[0] << 8) | packet[1]) % len(body)]
                    counts = packet[4:12]
                    flag_index = (packet[2] & 1) | ((packet[3] & 0x10) >> 3)
                    if counts == _QD_ONLY and len(packet) == qend:
                        reply = packet[:2] + entry[0][flag_index] + packet[12:qend] + body
                        if tcp or len(reply) <= wire.MIN_UDP_SIZE:
                            return reply
                    elif (
                        counts == _QD_AND_AR
                        and len(packet) >= qend + 11
                        and packet[qend : qend + 3] == _OPT_PREFIX
                        and packet[qend + 6] == 0
                        and len(packet) == qend + 11 + ((packet[qend + 9] << 8) | packet[qend + 10])
                    ):
                        do_bit = packet[qend + 7] & 0x80
                        reply = (
                            packet[:2]
                            + entry[0][4 | flag_index]
                            + packet[12:qend]
                            + body
                            + (self._opt_do if do_bit else self._opt)
                        )
                        if tcp or len(reply) <= min(
                            max((packet[qend + 3] << 8) | packet[qend + 4], wire.MIN_UDP_SIZE),
                            self.max_udp_size,
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
