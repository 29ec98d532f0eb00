"""One lookup, query by query: a libc's plan (``libc``) run against an answerer.

``run(name, options, libc, answerer)`` asks the answerer each candidate's A and AAAA (the libc
sends both at once), judges the pair with the libc's rules, and stops where the libc stops. The
``Answerer`` says, for each query, what the application's stub got (rcode, TTL, addresses), how
it was answered (``how``: on the node by the zone's ``shape``, a namespace ``cut``, a learned
``name`` NXDOMAIN or ``autopath``; from the ``cache``; by ``kdns``; ``upstream``; or ``server``
when a live server does not say), which queries left the node for it, and how long it took.

Latency: a candidate costs the slower of its two queries (they go out together), and the
lookup is the sum over its candidates.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from kdns import wire
from kdns.admin import libc
from kdns.names import name_to_text
from kdns.resolver import message
from kdns.resolver.message import Kind

RCODES = {
    wire.NOERROR: "NOERROR",
    wire.FORMERR: "FORMERR",
    wire.SERVFAIL: "SERVFAIL",
    wire.NXDOMAIN: "NXDOMAIN",
    wire.NOTIMP: "NOTIMP",
    wire.REFUSED: "REFUSED",
}
QTYPES = {wire.A: "A", wire.AAAA: "AAAA"}
FORWARDED = ", forwarded upstream"
"""The end of a ``left`` entry for a query kdns forwarded upstream (``kdns explain``)."""


@dataclass(frozen=True, slots=True)
class Answered:
    """What one query got."""

    qname: str
    qtype: int
    rcode: str
    reply: libc.Reply
    ttl: int | None
    """The smallest TTL of the answer, or the negative TTL of a denial; None without either."""
    addresses: tuple[str, ...]
    how: str
    left: tuple[str, ...]
    """Queries that left the node because of this one: ``"kdns NAME TYPE"``,
    ``"upstream NAME TYPE"``."""
    latency_ms: float
    cname: str = ""
    """The first CNAME target of the answer (an autopath answer or an alias)."""
    assumed: bool = False
    """Offline only: the answer is an assumption about a name outside the cluster."""
    size: int = 0
    """The reply's length in bytes."""


class Answerer(Protocol):
    def ask(self, qname: str, qtype: int) -> Answered: ...


@dataclass(frozen=True, slots=True)
class Step:
    candidate: str
    a: Answered
    aaaa: Answered
    verdict: libc.Verdict

    @property
    def latency_ms(self) -> float:
        return max(self.a.latency_ms, self.aaaa.latency_ms)


@dataclass(frozen=True, slots=True)
class Lookup:
    name: str
    libc: str
    label: str
    """Which variant: ``as typed``, ``trailing dot``, ``absorption off``..."""
    candidates: tuple[str, ...]
    steps: tuple[Step, ...]
    addresses: tuple[str, ...]
    error: str = ""
    assumed: bool = False

    @property
    def queries_sent(self) -> int:
        return 2 * len(self.steps)

    @property
    def queries_left(self) -> int:
        return sum(len(step.a.left) + len(step.aaaa.left) for step in self.steps)

    def left_to(self, where: str) -> int:
        """Queries that left the node for ``where`` (``kdns`` or ``upstream``); ``upstream``
        also counts the queries kdns forwarded (``kdns NAME TYPE, forwarded upstream``)."""
        prefix = where + " "
        return sum(
            1
            for step in self.steps
            for query in (step.a, step.aaaa)
            for left in query.left
            if left.startswith(prefix) or (where == "upstream" and left.endswith(FORWARDED))
        )

    @property
    def latency_ms(self) -> float:
        return sum(step.latency_ms for step in self.steps)


def run(
    name: str, options: libc.ResolverOptions, libc_name: str, answerer: Answerer, label: str
) -> Lookup:
    """The lookup of ``name`` as ``libc_name`` makes it (module docstring)."""
    plan = libc.candidates(name, options, libc_name)
    steps: list[Step] = []
    last: tuple[libc.Reply, libc.Reply] | None = None
    for candidate in plan:
        a = answerer.ask(candidate, wire.A)
        aaaa = answerer.ask(candidate, wire.AAAA)
        verdict = libc.judge(libc_name, a.reply, aaaa.reply)
        steps.append(Step(candidate, a, aaaa, verdict))
        last = (a.reply, aaaa.reply)
        if verdict is libc.Verdict.FOUND:
            addresses = sorted(set(a.addresses + aaaa.addresses), key=_address_order)
            assumed = a.assumed or aaaa.assumed
            return Lookup(name, libc_name, label, plan, tuple(steps), tuple(addresses), "", assumed)
        if verdict is libc.Verdict.STOP:
            break
    return Lookup(name, libc_name, label, plan, tuple(steps), (), libc.failure(libc_name, last))


def _address_order(text: str) -> tuple[int, int]:
    address = ipaddress.ip_address(text)
    return (address.version, int(address))


@dataclass(frozen=True, slots=True)
class Observed:
    """What a reply says, read with ``kdns.resolver.message``."""

    rcode: str
    reply: libc.Reply
    ttl: int | None
    addresses: tuple[str, ...]
    cname: str
    chain: tuple[str, ...]
    """Every CNAME target of the answer, in order."""


def observe(packet: bytes, qtype: int) -> Observed:
    """Read a reply to an A or AAAA query."""
    facts = message.inspect(packet)
    rcode = RCODES.get(facts.rcode, f"RCODE{facts.rcode}")
    addresses = []
    chain = []
    for record in facts.answer:
        if record.rtype == qtype and record.rtype in (wire.A, wire.AAAA):
            addresses.append(str(ipaddress.ip_address(record.rdata)))
        elif record.rtype == wire.CNAME:
            chain.append(name_to_text(wire.parse_name(record.rdata, 0)[0]))
    if facts.kind is Kind.POSITIVE and addresses:
        reply = libc.Reply.ADDRESSES
        ttl = facts.min_ttl
    elif facts.kind is Kind.NXDOMAIN:
        reply = libc.Reply.NXDOMAIN
        ttl = facts.negative_ttl
    elif facts.kind in (Kind.NODATA, Kind.POSITIVE):
        reply = libc.Reply.NODATA
        ttl = facts.negative_ttl if facts.kind is Kind.NODATA else facts.min_ttl
    else:
        reply = libc.Reply.SERVFAIL
        ttl = None
    return Observed(rcode, reply, ttl, tuple(addresses), chain[0] if chain else "", tuple(chain))
