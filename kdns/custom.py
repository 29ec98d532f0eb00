"""Custom records from the config: zone-file lines (``records:``) and hosts-file lines
(``hosts:``, ``hosts_file:``) -> ``CustomRecords``, the names kdns answers besides the cluster's.

Pure: text in, values out. ``RecordError`` names the setting and the line (``records[2]``,
``hosts_file /etc/hosts line 7``); ``kdns.config`` turns it into a ``ConfigError``.

Hosts lines follow CoreDNS's ``hosts`` plugin: ``IP name [alias...]``, ``#`` comments, an IPv6
zone index (``fe80::1%eth0``) ignored; every name gets the IP's A or AAAA record, and the IP's
reverse name gets one PTR per name (unless ``reverse`` is off), all with the hosts TTL (3600 by
default, as CoreDNS).
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from kdns import dns
from kdns.names import Name, name_to_text, reverse_name, text_to_name

HOSTS_TTL: Final = 3600
"""CoreDNS ``hosts`` plugin's default TTL."""
TYPES: Final = {
    "A": dns.A, "AAAA": dns.AAAA, "CNAME": dns.CNAME, "TXT": dns.TXT, "SRV": dns.SRV,
    "PTR": dns.PTR, "MX": dns.MX,
}  # fmt: skip
ORDER: Final = (dns.A, dns.AAAA, dns.CNAME, dns.MX, dns.SRV, dns.TXT, dns.PTR)
"""Type order for ANY (RFC 8482: one RRset) and for listings."""


class RecordError(ValueError):
    """A custom record line is invalid; ``where`` names the setting and the line."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True, slots=True)
class CustomRecords:
    """Every custom RR, and the same grouped as name -> type -> RRset (one TTL per RRset)."""

    records: tuple[dns.RR, ...] = ()
    by_name: Mapping[Name, Mapping[int, dns.RRset]] = field(
        init=False, compare=False, hash=False, repr=False
    )
    name_keys: frozenset[bytes] = field(init=False, compare=False, hash=False, repr=False)
    """Wire form of every custom name (the answer table's name keys)."""
    has_aliases: bool = field(init=False, compare=False, hash=False, repr=False)
    """Whether some custom name is a CNAME (its answer follows the cluster's data)."""
    ancestors: frozenset[Name] = field(init=False, compare=False, hash=False, repr=False)
    """Every proper ancestor of a custom name: inside a served zone these are empty
    non-terminals, NODATA rather than NXDOMAIN (RFC 8020: NXDOMAIN denies the whole subtree)."""

    def __post_init__(self) -> None:
        grouped: dict[Name, dict[int, list[dns.RR]]] = {}
        for rr in self.records:
            rrs = grouped.setdefault(rr.owner, {}).setdefault(rr.rtype, [])
            if rr not in rrs:
                rrs.append(rr)
        frozen: dict[Name, Mapping[int, dns.RRset]] = {}
        for name, types in grouped.items():
            by_type: dict[int, dns.RRset] = {}
            for rtype in sorted(types, key=ORDER.index):
                rrs = types[rtype]
                ttl = min(rr.ttl for rr in rrs)  # RFC 2181 5.2: one TTL per RRset
                by_type[rtype] = tuple(dns.RR(rr.owner, rr.rtype, ttl, rr.data) for rr in rrs)
            frozen[name] = MappingProxyType(by_type)
        object.__setattr__(self, "by_name", MappingProxyType(frozen))
        object.__setattr__(self, "name_keys", frozenset(dns.from_labels(n) for n in frozen))
        object.__setattr__(self, "has_aliases", any(dns.CNAME in t for t in frozen.values()))
        object.__setattr__(
            self, "ancestors", frozenset(name[i:] for name in frozen for i in range(1, len(name)))
        )

    def __bool__(self) -> bool:
        return bool(self.records)

    def alias(self, name: Name) -> Name | None:
        """The CNAME target of a custom name, if it is an alias."""
        rrsets = self.by_name.get(name)
        if rrsets is None or dns.CNAME not in rrsets:
            return None
        target = rrsets[dns.CNAME][0].data
        assert isinstance(target, tuple)
        return target


def parse_domain(text: str, where: str) -> Name:
    """An absolute domain name (the trailing dot is optional); labels as DNS allows them."""
    name = text_to_name(text)
    if not name or text.strip() in (".", "@"):
        raise RecordError(where, f"{text!r} is not a domain name (nor may it be the root)")
    if len(dns.from_labels(name)) > 255:
        raise RecordError(where, f"{text!r} is longer than 255 octets")
    for label in name:
        if not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label):
            raise RecordError(where, f"{text!r} is not a valid domain name")
    return name


def _number(text: str, where: str, what: str, high: int) -> int:
    if not text.isdigit() or int(text) > high:
        raise RecordError(where, f"{what} must be 0-{high}, got {text!r}")
    return int(text)


def _rdata(rtype: int, fields: list[str], where: str) -> object:
    def want(count: int) -> None:
        if len(fields) != count:
            raise RecordError(where, f"expected {count} data field(s), got {len(fields)}")

    if rtype in (dns.A, dns.AAAA):
        want(1)
        family = ipaddress.IPv4Address if rtype == dns.A else ipaddress.IPv6Address
        try:
            return str(family(fields[0]))
        except ValueError:
            kind = "IPv4" if rtype == dns.A else "IPv6"
            raise RecordError(where, f"{fields[0]!r} is not an {kind} address") from None
    if rtype in (dns.CNAME, dns.PTR):
        want(1)
        return parse_domain(fields[0], where)
    if rtype == dns.MX:
        want(2)
        return (_number(fields[0], where, "MX preference", 65535), parse_domain(fields[1], where))
    if rtype == dns.SRV:
        want(4)
        priority, weight, port = (
            _number(text, where, what, 65535)
            for text, what in zip(fields[:3], ("priority", "weight", "port"), strict=True)
        )
        return (priority, weight, port, parse_domain(fields[3], where))
    # TXT: one or more character-strings of at most 255 octets each.
    if not fields:
        raise RecordError(where, "TXT needs at least one string")
    for text in fields:
        if len(text.encode("utf-8")) > 255:
            raise RecordError(where, "a TXT string is longer than 255 octets")
    return tuple(fields)


def parse_record_line(line: str, default_ttl: int, where: str) -> dns.RR:
    """``NAME [TTL] [IN] TYPE RDATA...`` (RFC 1035 5.1; TTL and class in either order)."""
    try:
        tokens = shlex.split(line, comments=False, posix=True)
    except ValueError as error:
        raise RecordError(where, f"cannot split {line!r}: {error}") from None
    if ";" in tokens:
        tokens = tokens[: tokens.index(";")]
    if len(tokens) < 3:
        raise RecordError(where, f"expected NAME [TTL] [IN] TYPE DATA, got {line!r}")
    owner = parse_domain(tokens[0], where)
    ttl = default_ttl
    rest = tokens[1:]
    for _ in range(2):
        if rest and rest[0].isdigit():
            ttl = _number(rest[0], where, "TTL", 2**31 - 1)
            rest = rest[1:]
        elif rest and rest[0].upper() == "IN":
            rest = rest[1:]
    if not rest or rest[0].upper() not in TYPES:
        got = rest[0] if rest else "nothing"
        raise RecordError(where, f"type must be one of {', '.join(TYPES)}, got {got!r}")
    rtype = TYPES[rest[0].upper()]
    return dns.RR(owner, rtype, ttl, _rdata(rtype, rest[1:], where))


def parse_hosts_line(line: str, ttl: int, reverse: bool, where: str) -> list[dns.RR]:
    """``IP name [alias...]``: its A/AAAA records and (with ``reverse``) its PTRs."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return []
    fields = text.split()
    if len(fields) < 2:
        raise RecordError(where, f"expected IP NAME [ALIAS...], got {line.strip()!r}")
    try:
        address = ipaddress.ip_address(fields[0].split("%", 1)[0])
    except ValueError:
        raise RecordError(where, f"{fields[0]!r} is not an IP address") from None
    rtype = dns.A if address.version == 4 else dns.AAAA
    out: list[dns.RR] = []
    names = [parse_domain(text, where) for text in fields[1:]]
    for name in names:
        out.append(dns.RR(name, rtype, ttl, str(address)))
    if reverse:
        pointer = reverse_name(str(address))
        out.extend(dns.RR(pointer, dns.PTR, ttl, name) for name in names)
    return out


def build(
    records: Iterable[tuple[str, str]],
    hosts: Iterable[tuple[str, str]],
    default_ttl: int,
    hosts_ttl: int,
    hosts_reverse: bool,
    reserved: Iterable[Name] = (),
) -> CustomRecords:
    """Parse (where, line) pairs of both forms into one ``CustomRecords``.

    ``reserved`` names (the served zones' apexes) cannot be custom: their SOA and NS are the
    zone's. A CNAME must be the only RRset at its name (RFC 1034 3.6.2) and not point at itself.
    """
    rrs: list[dns.RR] = []
    origin: dict[tuple[Name, int], str] = {}
    for where, line in records:
        rr = parse_record_line(line, default_ttl, where)
        rrs.append(rr)
        origin.setdefault((rr.owner, rr.rtype), where)
    for where, line in hosts:
        for rr in parse_hosts_line(line, hosts_ttl, hosts_reverse, where):
            rrs.append(rr)
            origin.setdefault((rr.owner, rr.rtype), where)
    reserved_set = set(reserved)
    with_data = {owner for owner, rtype in origin if rtype != dns.CNAME}
    for (owner, rtype), where in origin.items():
        if owner in reserved_set:
            raise RecordError(where, f"{name_to_text(owner)} is a served zone's apex")
        if rtype == dns.CNAME and owner in with_data:
            raise RecordError(where, f"{name_to_text(owner)} has a CNAME and other records")
    custom = CustomRecords(tuple(rrs))
    for name, rrsets in custom.by_name.items():
        cname = rrsets.get(dns.CNAME)
        if cname is not None and (len(cname) > 1 or cname[0].data == name):
            where = origin[(name, dns.CNAME)]
            raise RecordError(where, f"{name_to_text(name)} needs one CNAME, not to itself")
    return custom
