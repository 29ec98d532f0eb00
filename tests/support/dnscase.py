"""The shared case vocabulary: ``Case`` rows with RRs as zone-file lines, and ``check``.

A case says what a query must get back. RRs are written as master-file lines
(``"svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"``); sections compare as sets of normalized
lines, so order does not matter. SOA serials are masked to 0 because they follow the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


@dataclass(frozen=True)
class Case:
    id: str
    qname: str
    qtype: str
    rcode: str = "NOERROR"
    answer: tuple[str, ...] = ()
    authority: tuple[str, ...] = ()
    additional: tuple[str, ...] = ()
    aa: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    """Server options this case needs (a separate server is started per distinct set)."""


def soa(zone: str = "cluster.local.", ttl: int = 5, minimum: int = 5) -> str:
    return f"{zone} {ttl} IN SOA ns.dns.{zone} hostmaster.{zone} 0 7200 1800 86400 {minimum}"


def _normalize_rrset(rrset: dns.rrset.RRset) -> set[str]:
    out = set()
    for rdata in rrset:
        text = rdata.to_text()
        if rrset.rdtype == dns.rdatatype.SOA:
            parts = text.split()
            parts[2] = "0"
            text = " ".join(parts)
        out.add(
            f"{rrset.name.to_text().lower()} {rrset.ttl} "
            f"{dns.rdataclass.to_text(rrset.rdclass)} {dns.rdatatype.to_text(rrset.rdtype)} "
            f"{text.lower()}"
        )
    return out


def normalize_line(line: str) -> set[str]:
    name, ttl, rdclass, rdtype, rdata = line.split(None, 4)
    rrset = dns.rrset.from_text(name, int(ttl), rdclass, rdtype, rdata)
    return _normalize_rrset(rrset)


def section_lines(section: list[dns.rrset.RRset]) -> set[str]:
    out: set[str] = set()
    for rrset in section:
        out |= _normalize_rrset(rrset)
    return out


def expected_lines(lines: tuple[str, ...]) -> set[str]:
    out: set[str] = set()
    for line in lines:
        out |= normalize_line(line)
    return out


def check(reply: dns.message.Message, case: Case) -> None:
    assert dns.rcode.to_text(reply.rcode()) == case.rcode, reply.to_text()
    assert bool(reply.flags & dns.flags.AA) == case.aa, reply.to_text()
    assert section_lines(reply.answer) == expected_lines(case.answer), reply.to_text()
    assert section_lines(reply.authority) == expected_lines(case.authority), reply.to_text()
    assert section_lines(reply.additional) == expected_lines(case.additional), reply.to_text()
