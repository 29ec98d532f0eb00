"""The whole per-query decision: query bytes in, reply bytes (or None: drop) out. Pure and sync.

``Responder.answer`` is the hot path, in the shape kdns.dns.hotpath defines once (and the C
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
from typing import Final, Protocol

from kdns import wire
from kdns.dns.edns import hot_path_opts
from kdns.dns.hotpath import assemble, fast_key, udp_limit
from kdns.dns.query import Query as Query
from kdns.dns.query import error_reply as error_reply
from kdns.dns.query import screen as screen
from kdns.names import Name
from kdns.rewrite import Rewritten
from kdns.serve import accel
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
        self.opts = hot_path_opts(max_udp_size)
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
