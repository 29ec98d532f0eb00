"""The bytes of the search-path policy's own answers, and how long they hold.

Pure functions of a screened query and the facts a decision rests on (no clock, no lock, no
cache): the local NXDOMAIN with the zone's SOA, the autopath answer (``CNAME first -> target``
plus the target's records), and ``negative_ttl``, which is the resolver cache's own rule
(``kdns.resolver.policy.cache_ttl``: RFC 2308 §5, then the zone's denial floor and cap) so a
local NXDOMAIN never outlives the one the cache would serve.
"""

from __future__ import annotations

from kdns import dns as wire  # the wire package, under the name this module reads it by
from kdns.resolver import message, policy
from kdns.resolver.config import ZoneTTL
from kdns.resolver.message import ClientQuery, Record

_NO_LIMITS = ZoneTTL(
    success_min_s=0, success_max_s=2**31 - 1, denial_min_s=0, denial_max_s=2**31 - 1
)
"""No cache to take the zone's limits from: RFC 2308 §5 alone."""


def negative_ttl(soa: Record, limits: ZoneTTL | None) -> int:
    """Seconds an NXDOMAIN carrying ``soa`` is cached for under ``limits`` (the zone's
    ``ZoneTTL``; None: no cache, so no floor or cap); 0 when it is not cacheable."""
    question = soa.owner + b"\x00\x06\x00\x01"  # any question at the apex: the SOA is its own
    built = message.build(question, wire.NXDOMAIN, (), (_with_ttl(soa, soa.ttl),))
    ttl = policy.cache_ttl(built, limits or _NO_LIMITS, 0)
    return 0 if ttl is None else ttl


def nxdomain(query: ClientQuery, soa: Record, ttl: int) -> bytes:
    """NXDOMAIN for ``query`` with ``soa`` in the authority section, every TTL ``ttl``."""
    question = query.packet[wire.HEADER_SIZE : query.question.end]
    built = message.build(question, wire.NXDOMAIN, (), (_with_ttl(soa, ttl),))
    return patch(query, built, max(0, ttl))


def autopath_answer(
    query: ClientQuery,
    target: bytes,
    ttl: int,
    answer: tuple[Record, ...],
    authority: tuple[Record, ...],
) -> bytes:
    """``CNAME <the query's name> -> target`` then ``answer`` (the target's records of the
    asked type; empty for the CNAME alone) and ``authority`` (its SOA for NODATA), every TTL
    ``ttl``."""
    question = query.packet[wire.HEADER_SIZE : query.question.end]
    cname = Record(0, question[:-4], wire.CNAME, wire.CLASS_IN, ttl, target, 0)
    built = message.build(question, wire.NOERROR, (cname, *answer), authority)
    return patch(query, built, ttl)


def patch(query: ClientQuery, built: message.Built, ttl: int) -> bytes:
    """``built`` as the reply to ``query``: its ID, flags, question case and OPT; TTL ``ttl``."""
    packet = query.packet
    return message.patch(
        built.message,
        packet[:2],
        query.flags,
        packet[wire.HEADER_SIZE : query.question.end],
        ttl,
        built.ttl_offsets,
        message.reply_opt(query),
    )


def _with_ttl(soa: Record, ttl: int) -> Record:
    return Record(1, soa.owner, soa.rtype, soa.rclass, ttl, soa.rdata, 0)
