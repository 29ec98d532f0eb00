"""kdns forwarding: names outside the cluster zones go upstream through the shared resolver core
(the same upstream client and cache nodecache uses), and ExternalName targets outside the zones
are chased through it.

An ExternalName answer is our CNAME (authoritative) followed by the upstream's records for the
target, with the upstream's rcode (RFC 6604: the rcode describes the last name of the chain).
If the target cannot be resolved because the upstream failed, the reply is SERVFAIL: an upstream
failure is never turned into NXDOMAIN, and the CNAME alone would read as "no such data".
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from kdns import wire
from kdns.dns.query import Query, screen
from kdns.names import Name
from kdns.resolver import message
from kdns.resolver.core import Resolver
from kdns.rewrite import Rewritten, turn_back_wire
from kdns.serve.reply import Later, Reply

logger = logging.getLogger(__name__)


class Forwarder:
    """Sends queries kdns is not authoritative for to the resolver core."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    def forward(self, query: Query, tcp: bool) -> Reply:
        later = Later()

        def done(reply: bytes | None) -> None:
            if reply is not None:  # None: dropped after waiting too long; send nothing
                later.done(reply)

        immediate = self.resolver.answer(query, done, None, tcp=tcp)
        return immediate if immediate is not None else later

    def chase(self, query: Query, target: Name, cname_ttl: int, tcp: bool) -> Reply:
        """Our CNAME to ``target`` plus the upstream's answer for (target, qtype)."""
        return self._ask_instead(
            query,
            target,
            query.question.qtype,
            lambda reply: self.combine(query, target, cname_ttl, reply, tcp),
            "an ExternalName chase",
        )

    def forward_rewritten(self, query: Query, rewritten: Rewritten, tcp: bool) -> Reply:
        """A ``rewrite`` rule's question that kdns does not hold, asked upstream; the client
        gets its own question back, and the rule's ``answer`` clause turns the names back."""
        return self._ask_instead(
            query,
            rewritten.name,
            rewritten.qtype,
            lambda reply: self.rewritten_reply(query, rewritten, reply, tcp),
            "a rewritten question",
        )

    def _ask_instead(
        self,
        query: Query,
        name: Name,
        qtype: int,
        reply_from: Callable[[bytes], bytes],
        what: str,
    ) -> Reply:
        """Ask the upstreams (name, qtype) for ``query`` and reply with ``reply_from`` of the
        upstream's reply (SERVFAIL if that fails)."""
        sub_packet = message.make_query(
            0,
            wire.name_wire(name),
            qtype,
            query.question.qclass,
            cd=bool(query.flags & 0x0010),
            do_bit=query.edns is not None and query.edns.do_bit,
        )
        sub = screen(sub_packet, wire.TCP_MAX_SIZE)
        if not isinstance(sub, Query):
            return query.error(wire.SERVFAIL)
        later = Later()

        def finish(reply: bytes | None) -> None:
            if reply is None:  # dropped after waiting too long (never over TCP, as here)
                return
            try:
                later.done(reply_from(reply))
            except Exception:
                logger.exception("answering %s failed", what)
                later.done(query.error(wire.SERVFAIL))

        immediate = self.resolver.answer(sub, finish, None, tcp=True)
        if immediate is not None:
            finish(immediate)
        return later

    @staticmethod
    def rewritten_reply(query: Query, rewritten: Rewritten, upstream: bytes, tcp: bool) -> bytes:
        facts = message.inspect(upstream)
        if facts.kind is message.Kind.ERROR:
            return query.error(wire.SERVFAIL)
        reverses = rewritten.reverses

        def back(records: tuple[message.Record, ...]) -> list[message.Record]:
            if not reverses:
                return list(records)
            return [r.with_names(lambda name: turn_back_wire(name, reverses)) for r in records]

        built = message.build(
            query.question_bytes, facts.rcode, back(facts.answer), list(facts.authority)
        )
        return _client_reply(query, built, message.QR | message.RA, tcp)

    @staticmethod
    def combine(query: Query, target: Name, cname_ttl: int, upstream: bytes, tcp: bool) -> bytes:
        facts = message.inspect(upstream)
        if facts.kind is message.Kind.ERROR:
            return query.error(wire.SERVFAIL)
        question = query.question_bytes
        cname = message.Record(
            section=0,
            owner=question[: len(question) - 4],
            rtype=wire.CNAME,
            rclass=wire.CLASS_IN,
            ttl=cname_ttl,
            rdata=wire.name_wire(target),
            ttl_offset=0,
        )
        built = message.build(question, facts.rcode, [cname, *facts.answer], facts.authority)
        return _client_reply(query, built, message.QR | message.AA | message.RA, tcp)


def _client_reply(query: Query, built: message.Built, flags: int, tcp: bool) -> bytes:
    """``built`` as the reply to the client's ``query``: its ID, RD and CD, its OPT, and
    truncated to what its transport carries."""
    body = built.message
    flags |= (query.flags & (message.RD | message.CD)) | (built.rcode & 0xF)
    opt = query.opt
    an, ns, ar = struct.unpack_from(">HHH", body, 6)
    header = query.packet[:2] + struct.pack(">HHHHH", flags, 1, an, ns, ar + (1 if opt else 0))
    reply = header + body[wire.HEADER_SIZE :] + opt
    if len(reply) > query.size_limit(tcp):
        return message.truncated_reply(reply, query.question.end, opt)
    return reply
