"""The one definition of the UDP hot path's shape rule, flag-variant index and size limit.

kdns's ``Responder.answer`` (kdns.serve.protocol) and the resolver's cache-hit shortcut
(kdns.resolver.front, nodecache's) both answer the common query shapes straight from the bytes,
and the C loop (kdns/serve/_fastpath.c) mirrors them; all three call these functions (the C
file has a twin of each, exposed as ``_fastpath.fast_key``, ``.udp_limit`` and ``.assemble``,
and tests/unit/test_hotpath.py compares the twins function by function on random and garbled
bytes).

* ``fast_key(packet)``: a query of a hot-path shape (opcode QUERY, QR clear, one question and
  nothing else, or one question and one whole EDNS OPT of version 0 ending the packet: what stub
  resolvers and dig send) gives ``(key, qend, variant)``: the lower-case question key (name bytes
  ASCII-folded, type and class bytes as sent, R1.2), where the question ends, and the variant
  index ``RD | CD << 1 | EDNS << 2 | DO << 3``. Any other packet gives None (the full path).
  The name is taken as the bytes up to the first zero byte: a hit in a table keyed by well-formed
  names means those bytes are a well-formed name (kdns.serve.protocol's docstring).
* ``udp_limit(packet, qend, variant, max_udp_size)``: 512 without EDNS, else the client's payload
  size within [512, ``max_udp_size``] (RFC 6891 §6.2.5).
* ``assemble(packet, qend, variant, heads, body, opts)``: the reply: the query's ID, the header
  variant ``heads[variant & 7]``, the client's own question bytes (its case), the body, and with
  EDNS the server's OPT ``opts[DO]``.
"""

from __future__ import annotations

from typing import Final

from kdns.dns import constants as wire

QD_ONLY: Final = b"\x00\x01\x00\x00\x00\x00\x00\x00"
QD_AND_AR: Final = b"\x00\x01\x00\x00\x00\x00\x00\x01"
OPT_PREFIX: Final = b"\x00\x00\x29"  # root owner, type OPT
OPT_SIZE: Final = 11
EDNS: Final = 4
"""The variant bit of a query with an OPT."""
DO: Final = 8
"""The variant bit of a query whose OPT sets DO."""
HEADS: Final = 7
"""The variant bits that pick one of ``wire.heads``'s eight header variants."""
MIN_UDP: Final = wire.MIN_UDP_SIZE


def fast_key(packet: bytes) -> tuple[bytes, int, int] | None:
    """``(key, qend, variant)`` for a hot-path shape, else None. Never raises for any bytes."""
    end = packet.find(b"\x00", 12)
    if end < 0 or packet[2] & 0xF8:  # no name end, QR set, or an opcode other than QUERY
        return None
    qend = end + 5
    counts = packet[4:12]
    variant = (packet[2] & 1) | ((packet[3] & 0x10) >> 3)  # RD | CD << 1
    if counts == QD_ONLY:
        if len(packet) != qend:
            return None
    elif (
        counts == QD_AND_AR
        and len(packet) >= qend + 11  # OPT_SIZE
        and packet[qend : qend + 3] == OPT_PREFIX
        and packet[qend + 6] == 0  # EDNS version 0; others are BADVERS (the full path)
        and len(packet) == qend + 11 + ((packet[qend + 9] << 8) | packet[qend + 10])
    ):
        variant |= 4 | ((packet[qend + 7] & 0x80) >> 4)  # EDNS | DO
    else:
        return None
    return packet[12 : end + 1].lower() + packet[end + 1 : qend], qend, variant


def udp_limit(packet: bytes, qend: int, variant: int, max_udp_size: int) -> int:
    """The largest UDP reply this query may get: 512, or its EDNS size in [512, max]."""
    if not variant & EDNS:
        return MIN_UDP
    client = (packet[qend + 3] << 8) | packet[qend + 4]
    return min(max(client, MIN_UDP), max_udp_size)


def assemble(
    packet: bytes,
    qend: int,
    variant: int,
    heads: tuple[bytes, ...],
    body: bytes,
    opts: tuple[bytes, bytes],
) -> bytes:
    """The reply: ID + ``heads[variant & 7]`` + the client's question + body (+ ``opts[DO]``)."""
    # Literals, not HEADS/EDNS/DO: this runs per query in the pure-Python loop, and a global
    # lookup per constant is measurable there.
    reply = packet[:2] + heads[variant & 7] + packet[12:qend] + body
    if variant & 4:
        return reply + opts[(variant >> 3) & 1]
    return reply
