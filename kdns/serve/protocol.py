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
import struct
from typing import Final

from kdns import wire
from kdns.table import AnswerTable

logger = logging.getLogger(__name__)

_QD_ONLY: Final = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_QD_AND_AR: Final = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_OPT_PREFIX: Final = b"\x00\x00\x29"
_MAX_LABELED_TYPE: Final = 127


class Responder:
    """Holds the published table and the per-server constants; safe to share between threads."""

    def __init__(self, max_udp_size: int = 1232) -> None:
        self.table: AnswerTable | None = None
        self.max_udp_size = max_udp_size
        self._opt = wire.opt_record(max_udp_size)
        self._opt_do = wire.opt_record(max_udp_size, do_bit=True)
        self.queries_fast = 0
        self.errors = 0

    def answer(self, packet: bytes, tcp: bool = False) -> bytes | None:
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
                    counts = packet[4:12]
                    flag_index = (packet[2] & 1) | ((packet[3] & 0x10) >> 3)
                    if counts == _QD_ONLY and len(packet) == qend:
                        reply = packet[:2] + entry[0][flag_index] + packet[12:qend] + entry[1]
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
                            + entry[1]
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

    def answer_slow(self, packet: bytes, tcp: bool = False) -> bytes | None:
        """The fully checked path, for everything the fast path does not take."""
        if len(packet) < wire.HEADER_SIZE:
            return None
        query_id, flags, qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHHHH", packet)
        if flags & 0x8000:
            return None  # a response: never answer it (reflection loops)
        opcode = (flags >> 11) & 0xF
        copy_flags = flags & 0x7910  # opcode, RD, CD
        question: wire.Question | None = None
        if qdcount == 1:
            try:
                question = wire.parse_question(packet)
            except wire.WireError:
                question = None
        if opcode != 0:
            return self._error(query_id, copy_flags, wire.NOTIMP, packet, question, None)
        if qdcount != 1 or question is None:
            return self._error(query_id, copy_flags, wire.FORMERR, packet, None, None)
        try:
            edns = wire.parse_records(packet, question.end, (ancount, nscount, arcount))
        except wire.WireError:
            return self._error(query_id, copy_flags, wire.FORMERR, packet, question, None)
        if edns is not None and edns.version != 0:
            return self._error(query_id, copy_flags, wire.BADVERS, packet, question, edns)
        if question.qclass != wire.CLASS_IN or question.qtype in (wire.AXFR, wire.IXFR):
            return self._error(query_id, copy_flags, wire.REFUSED, packet, question, edns)
        table = self.table
        if table is None:
            return self._error(query_id, copy_flags, wire.SERVFAIL, packet, question, edns)
        key = question.wire_lower + packet[question.end - 4 : question.end]
        compiled = table.lookup(key, question.name, question.qtype)
        if compiled is None:
            return self._error(query_id, copy_flags, wire.REFUSED, packet, question, edns)
        if tcp:
            limit = wire.TCP_MAX_SIZE
        elif edns is None:
            limit = wire.MIN_UDP_SIZE
        else:
            limit = min(max(edns.udp_size, wire.MIN_UDP_SIZE), self.max_udp_size)
        opt = b"" if edns is None else (self._opt_do if edns.do_bit else self._opt)
        heads, body = compiled
        question_bytes = packet[wire.HEADER_SIZE : question.end]
        head_index = (flags >> 8 & 1) | (flags >> 3 & 2) | (4 if edns is not None else 0)
        reply: bytes = packet[:2] + heads[head_index] + question_bytes + body + opt
        if len(reply) <= limit:
            return reply
        return self._truncated(packet, table, question, flags, edns, limit, opt)

    def _truncated(
        self,
        packet: bytes,
        table: AnswerTable,
        question: wire.Question,
        flags: int,
        edns: wire.Edns | None,
        limit: int,
        opt: bytes,
    ) -> bytes:
        from kdns.synth.resolve import resolve  # only big answers come this way

        answer = resolve(table.index, question.name, question.qtype)
        assert answer is not None
        encoded = wire.encode(question.name, answer)
        room = limit - (question.end) - len(opt)
        body, (an, ns, ar), tc = wire.truncate(encoded, room)
        heads = wire.heads(encoded.rcode, encoded.authoritative, tc, an, ns, ar)
        head_index = (flags >> 8 & 1) | (flags >> 3 & 2) | (4 if edns is not None else 0)
        return packet[:2] + heads[head_index] + packet[wire.HEADER_SIZE : question.end] + body + opt

    def _error(
        self,
        query_id: int,
        copy_flags: int,
        rcode: int,
        packet: bytes,
        question: wire.Question | None,
        edns: wire.Edns | None,
    ) -> bytes:
        """A reply with no records: FORMERR, NOTIMP, REFUSED, SERVFAIL or BADVERS."""
        qd = 1 if question is not None else 0
        ar = 1 if edns is not None else 0
        header = struct.pack(">HHHHHH", query_id, 0x8000 | copy_flags | (rcode & 0xF), qd, 0, 0, ar)
        body = packet[wire.HEADER_SIZE : question.end] if question is not None else b""
        if edns is not None:
            body += wire.opt_record(self.max_udp_size, edns.do_bit, rcode >> 4)
        return header + body
