"""Header variants: the 8 forms of header bytes 2-11 a reply takes, one per query shape, index
``RD | CD << 1 | EDNS << 2`` (RD and CD copied from the query, one more additional record when
an OPT will be appended). The authoritative table (``heads``) and the resolver's cache
(``header_variants`` of a stored reply) both precompute them once per entry, so a hit only
picks one; the C accelerator and the Python hot paths index them the same way.
"""

from __future__ import annotations

import struct
from typing import Protocol

from kdns.dns.constants import CD, RD
from kdns.dns.reader import Edns


def _variants(flags: int, qd: int, an: int, ns: int, ar: int) -> tuple[bytes, ...]:
    return tuple(
        struct.pack(
            ">HHHHH",
            flags | (RD if index & 1 else 0) | (CD if index & 2 else 0),
            qd,
            an,
            ns,
            ar + (1 if index & 4 else 0),
        )
        for index in range(8)
    )


_HEADS: dict[tuple[int, bool, bool, int, int, int], tuple[bytes, ...]] = {}


def heads(
    rcode: int, authoritative: bool, truncated: bool, an: int, ns: int, ar: int
) -> tuple[bytes, ...]:
    """An authoritative reply's variants: QR, AA as given, TC as given, RA clear, one question.

    Interned, because a table holds one per entry and most entries share a shape.
    """
    key = (rcode & 0xF, authoritative, truncated, an, ns, ar)
    found = _HEADS.get(key)
    if found is not None:
        return found
    flags = 0x80 | (0x04 if authoritative else 0) | (0x02 if truncated else 0)
    ordered = _variants(flags << 8 | (rcode & 0xF), 1, an, ns, ar)
    _HEADS[key] = ordered
    return ordered


def header_variants(stored: bytes) -> tuple[bytes, ...]:
    """The variants of a stored reply's own header (the resolver's cache: what ``patch`` does
    to the header, precomputed once per entry)."""
    flags, qd, an, ns, ar = struct.unpack_from(">HHHHH", stored, 2)
    return _variants(flags, qd, an, ns, ar)


class _Shaped(Protocol):
    @property
    def flags(self) -> int: ...
    @property
    def edns(self) -> Edns | None: ...


def variant_index(query: _Shaped) -> int:
    """Which variant fits ``query``: RD | CD << 1 | EDNS << 2."""
    flags = query.flags
    return (flags >> 8 & 1) | (flags >> 3 & 2) | (4 if query.edns is not None else 0)
