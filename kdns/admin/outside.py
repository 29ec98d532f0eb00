"""The world outside the cluster, offline: replies for names no cluster zone holds.

Offline explain cannot ask the internet, so names outside the cluster zones get their answer
from one of three places, in this order:

1. **Zone files** given with ``--outside-zone FILE`` (RFC 1035 master files, read with
   dnslib: admin tooling, never the serving path). A name in such a zone is answered as an
   authoritative server would: its records, NODATA (the name exists, or is an empty
   non-terminal, without the type), or NXDOMAIN, the denials with the zone's SOA whose TTL is
   min(SOA TTL, MINIMUM) (RFC 2308 §5). CNAMEs are returned, not chased.
2. **Assumed missing**: a name under one of the pod's host search domains (the kubelet
   appends the node's) is assumed NXDOMAIN, negative TTL ``ASSUMED_NEGATIVE_TTL_S``: what a
   search expansion such as ``api.github.com.corp.example`` almost always gets.
3. **Assumed to exist**: any other name is assumed to have an A and an AAAA record (TTL
   ``ASSUMED_TTL_S``), marked ``assumed`` so the output says its addresses are not known.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import dnslib

ASSUMED_TTL_S: Final = 300
ASSUMED_NEGATIVE_TTL_S: Final = 30
_ASSUMED_RDATA: Final = {1: dnslib.A("0.0.0.0"), 28: dnslib.AAAA("::")}


class OutsideZoneError(ValueError):
    """A zone file that cannot be used (the message names the file)."""


@dataclass(frozen=True, slots=True)
class OutsideReply:
    packet: bytes
    assumed: bool


def _key(name: object) -> str:
    return str(name).lower().rstrip(".") + "."


class _Zone:
    def __init__(self, origin: str, records: Sequence[dnslib.RR]) -> None:
        self.origin = origin
        self.records = records
        self.owners = {_key(rr.rname) for rr in records}
        soas = [rr for rr in records if rr.rtype == dnslib.QTYPE.SOA and _key(rr.rname) == origin]
        self.soa = soas[0]

    def answer(self, qname: str, qtype: int, reply: dnslib.DNSRecord) -> None:
        if qname in self.owners:
            found = [
                rr
                for rr in self.records
                if _key(rr.rname) == qname and rr.rtype in (qtype, dnslib.QTYPE.CNAME)
            ]
            for rr in found:
                reply.add_answer(rr)
            if found:
                return
        elif not any(owner.endswith("." + qname) for owner in self.owners):
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
        minimum = int(self.soa.rdata.times[-1])
        reply.add_auth(
            dnslib.RR(self.soa.rname, dnslib.QTYPE.SOA, rdata=self.soa.rdata,
                      ttl=min(self.soa.ttl, minimum))
        )  # fmt: skip


class Outside:
    """See the module docstring."""

    def __init__(self, zones: Iterable[tuple[str, str]] = (), missing: Iterable[str] = ()):
        """``zones``: (where it came from, master-file text); ``missing``: the suffixes whose
        names are assumed NXDOMAIN (the pod's host search domains)."""
        self._zones: dict[str, _Zone] = {}
        for where, text in zones:
            try:
                records = dnslib.RR.fromZone(text)
            except Exception as error:  # dnslib raises bare Exceptions on bad zone text
                raise OutsideZoneError(f"{where}: not a zone file: {error}") from None
            origins = [_key(rr.rname) for rr in records if rr.rtype == dnslib.QTYPE.SOA]
            if len(origins) != 1:
                raise OutsideZoneError(f"{where}: needs exactly one SOA, found {len(origins)}")
            self._zones[origins[0]] = _Zone(origins[0], records)
        self._missing = tuple(_key(suffix) for suffix in missing if suffix.strip("."))
        self.assumed: set[str] = set()
        """Every name answered by an assumption so far (lower case, trailing dot)."""

    def any_assumed(self, names: Iterable[str]) -> bool:
        """Was any of ``names`` (a query name and its CNAME chain) answered by assumption?"""
        return any(_key(name) in self.assumed for name in names)

    def reply(self, qname: str, qtype: int) -> OutsideReply:
        """The reply to (``qname``, ``qtype``, IN) as wire bytes (ID 0)."""
        name = _key(qname)
        reply = dnslib.DNSRecord(
            dnslib.DNSHeader(id=0, qr=1, aa=1, ra=1), q=dnslib.DNSQuestion(qname, qtype)
        )
        zone = self._zone_of(name)
        if zone is not None:
            zone.answer(name, qtype, reply)
            return OutsideReply(bytes(reply.pack()), False)
        self.assumed.add(name)
        missing = next((s for s in self._missing if name.endswith("." + s) or name == s), None)
        if missing is not None:
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
            soa = dnslib.SOA(f"ns.{missing}", f"hostmaster.{missing}",
                             (1, 7200, 1800, 86400, ASSUMED_NEGATIVE_TTL_S))  # fmt: skip
            reply.add_auth(
                dnslib.RR(missing, dnslib.QTYPE.SOA, rdata=soa, ttl=ASSUMED_NEGATIVE_TTL_S)
            )
            return OutsideReply(bytes(reply.pack()), True)
        rdata = _ASSUMED_RDATA.get(qtype)
        if rdata is not None:
            reply.add_answer(dnslib.RR(qname, qtype, rdata=rdata, ttl=ASSUMED_TTL_S))
        return OutsideReply(bytes(reply.pack()), True)

    def _zone_of(self, name: str) -> _Zone | None:
        best: _Zone | None = None
        for origin, zone in self._zones.items():
            inside = origin == "." or name == origin or name.endswith("." + origin)
            if inside and (best is None or len(origin) > len(best.origin)):
                best = zone
        return best
