"""One query-log line from a query's and its reply's bytes: CoreDNS's ``log`` plugin format or a
JSON object. Pure: bytes and values in, text out (the writer thread of ``kdns.querylog`` calls
it, never the serving loops).

The JSON keys are fixed (the cache-tuning tool reads them): ``ts`` (float Unix seconds),
``server`` (``kdns``/``nodecache``), ``client``, ``port``, ``proto`` (``udp``/``tcp``), ``id``,
``qname`` (text with the trailing dot, as sent), ``qtype`` (mnemonic, ``TYPEn`` for others),
``qclass``, ``do``, ``rcode`` (mnemonic), ``ttl`` (the smallest answer TTL, else for NXDOMAIN
and NODATA the SOA's negative TTL, min(SOA TTL, MINIMUM) as RFC 2308 §5 caches it; null if
none), ``size`` (reply bytes), ``duration_s``, ``cache_hit``.

The text line is CoreDNS's default ``log`` format (client, ID, "type class name proto size do
bufsize", rcode, reply flags, reply size, duration)::

    [INFO] 10.244.1.7:41234 - 20356 "A IN cart.shop.svc.cluster.local. udp 68 false 1232"
    NOERROR qr,aa,rd 102 0.000123456s      (one line)
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Final

from kdns import dns
from kdns.resolver import message
from kdns.serve.tally import RCODE_NAMES

TYPE_NAMES: Final = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
    28: "AAAA", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG",
    47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 52: "TLSA", 99: "SPF", 251: "IXFR", 252: "AXFR",
    255: "ANY", 257: "CAA",
}  # fmt: skip
"""Mnemonics the log writes; any other type is ``TYPEn`` (RFC 3597)."""
CLASS_NAMES: Final = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
_FLAGS: Final = (("qr", 0x8000), ("aa", 0x0400), ("tc", 0x0200), ("rd", 0x0100),
                 ("ra", 0x0080), ("z", 0x0040), ("ad", 0x0020), ("cd", 0x0010))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Entry:
    """What one line says about one answered query."""

    ts: float
    server: str
    client: str
    port: int
    proto: str
    id: int
    qname: str
    qtype: str
    qclass: str
    do: bool
    rcode: str
    ttl: int | None
    size: int
    duration_s: float
    cache_hit: bool
    request_size: int
    udp_size: int
    """The client's EDNS payload size, 512 without EDNS (the text line's ``bufsize``)."""
    flags: str
    """The reply's header flags, CoreDNS's spelling (``qr,aa,rd``)."""


def name_text(packet: bytes, offset: int) -> tuple[str, int]:
    """The uncompressed name at ``offset`` as presentation text with the trailing dot, its case
    kept; the offset past it. ``.`` and bytes outside printable ASCII are escaped (\\. \\DDD)."""
    labels: list[str] = []
    while True:
        if offset >= len(packet):
            raise ValueError("name runs past the packet")
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        if length > 63 or offset + length > len(packet):
            raise ValueError("not an uncompressed name")
        labels.append(
            "".join(
                chr(b) if 0x21 <= b <= 0x7E and b not in (0x2E, 0x5C) else
                ("\\" + chr(b) if b in (0x2E, 0x5C) else f"\\{b:03d}")
                for b in packet[offset : offset + length]
            )
        )  # fmt: skip
        offset += length
    return ".".join(labels) + ".", offset


def _ttl(reply: bytes) -> int | None:
    try:
        facts = message.inspect(reply)
    except message.MessageError:
        return None
    answers = [record.ttl for record in facts.records if record.section == 0]
    if answers:
        return min(answers)
    for record in facts.records:
        if record.section == 1 and record.rtype == dns.SOA and len(record.rdata) >= 4:
            (minimum,) = struct.unpack_from(">I", record.rdata, len(record.rdata) - 4)
            return min(record.ttl, int(minimum))
    return None


def entry(
    packet: bytes,
    reply: bytes,
    *,
    ts: float,
    server: str,
    client: str,
    port: int,
    proto: str,
    duration_s: float,
    cache_hit: bool,
) -> Entry | None:
    """The entry for one query and its reply; None when the query has no readable question
    (a FORMERR: nothing to name)."""
    if len(packet) < dns.HEADER_SIZE + 5 or len(reply) < dns.HEADER_SIZE:
        return None
    try:
        qname, end = name_text(packet, dns.HEADER_SIZE)
    except ValueError:
        return None
    if end + 4 > len(packet):
        return None
    qtype, qclass = struct.unpack_from(">HH", packet, end)
    do = False
    udp_size = dns.MIN_UDP_SIZE
    end += 4
    if len(packet) >= end + 11 and packet[end : end + 3] == b"\x00\x00\x29":
        udp_size = (packet[end + 3] << 8) | packet[end + 4]
        do = bool(packet[end + 7] & 0x80)
    rcode = reply[3] & 0xF
    if len(reply) >= 23 and reply[-11:-8] == b"\x00\x00\x29":
        rcode |= reply[-6] << 4
    header_flags = (reply[2] << 8) | reply[3]
    return Entry(
        ts=ts,
        server=server,
        client=client,
        port=port,
        proto=proto,
        id=(packet[0] << 8) | packet[1],
        qname=qname,
        qtype=TYPE_NAMES.get(qtype, f"TYPE{qtype}"),
        qclass=CLASS_NAMES.get(qclass, f"CLASS{qclass}"),
        do=do,
        rcode=RCODE_NAMES[rcode] if rcode < len(RCODE_NAMES) else str(rcode),
        ttl=_ttl(reply),
        size=len(reply),
        duration_s=duration_s,
        cache_hit=cache_hit,
        request_size=len(packet),
        udp_size=udp_size,
        flags=",".join(name for name, bit in _FLAGS if header_flags & bit),
    )


def json_line(found: Entry) -> str:
    return json.dumps(
        {
            "ts": found.ts,
            "server": found.server,
            "client": found.client,
            "port": found.port,
            "proto": found.proto,
            "id": found.id,
            "qname": found.qname,
            "qtype": found.qtype,
            "qclass": found.qclass,
            "do": found.do,
            "rcode": found.rcode,
            "ttl": found.ttl,
            "size": found.size,
            "duration_s": found.duration_s,
            "cache_hit": found.cache_hit,
        },
        ensure_ascii=False,
    )


def text_line(found: Entry) -> str:
    """CoreDNS's ``log`` plugin line (its default format, ``{common}``)."""
    client = f"[{found.client}]" if ":" in found.client else found.client
    return (
        f"[INFO] {client}:{found.port} - {found.id} "
        f'"{found.qtype} {found.qclass} {found.qname} {found.proto} {found.request_size} '
        f'{"true" if found.do else "false"} {found.udp_size}" '
        f"{found.rcode} {found.flags} {found.size} {_seconds(found.duration_s)}s"
    )


def _seconds(value: float) -> str:
    """Seconds as Go's FormatFloat(v, 'f', -1) prints them (CoreDNS's ``{duration}``), to ns."""
    text = f"{value:.9f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
