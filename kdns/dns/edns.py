"""EDNS (RFC 6891): the one OPT builder, the OPT a reply to a query carries, and the size a
reply to a query may have.
"""

from __future__ import annotations

import struct
from typing import Protocol

from kdns.dns.constants import EDE_OPTION, MIN_UDP_SIZE, OPT, TCP_MAX_SIZE
from kdns.dns.reader import Edns


class _Sized(Protocol):
    @property
    def edns(self) -> Edns | None: ...
    @property
    def max_udp_size(self) -> int: ...


def opt_record(
    udp_size: int, do_bit: bool = False, extended_rcode: int = 0, ede: int | None = None
) -> bytes:
    """Our OPT pseudo-RR (RFC 6891 §6.1.2), with an Extended DNS Error option when ``ede`` is
    set (RFC 8914 §2: INFO-CODE only, no text)."""
    option = b"" if ede is None else struct.pack(">HHH", EDE_OPTION, 2, ede)
    flags = 0x8000 if do_bit else 0
    head = struct.pack(">BHHBBHH", 0, OPT, udp_size, extended_rcode, 0, flags, len(option))
    return head + option


def hot_path_opts(max_udp_size: int) -> tuple[bytes, bytes]:
    """The OPT a hot-path reply carries (``hotpath.assemble``'s ``opts``, the C loop's
    ``Answers``): DO clear, DO set; what ``reply_opt`` gives those queries."""
    return opt_record(max_udp_size), opt_record(max_udp_size, do_bit=True)


_OPTS: dict[tuple[int, bool, int | None], bytes] = {}


def reply_opt(query: _Sized, ede: int | None = None) -> bytes:
    """The OPT a reply to ``query`` carries: none without EDNS (RFC 6891 §7). Interned: a
    server sees a handful of distinct ones."""
    edns = query.edns
    if edns is None:
        return b""
    shape = (query.max_udp_size, edns.do_bit, ede)
    opt = _OPTS.get(shape)
    if opt is None:
        opt = opt_record(query.max_udp_size, edns.do_bit, ede=ede)
        if len(_OPTS) < 64:
            _OPTS[shape] = opt
    return opt


def size_limit(query: _Sized, tcp: bool) -> int:
    """512 without EDNS; the client's EDNS size within [512, max_udp_size]; 65535 on TCP."""
    if tcp:
        return TCP_MAX_SIZE
    if query.edns is None:
        return MIN_UDP_SIZE
    return min(max(query.edns.udp_size, MIN_UDP_SIZE), query.max_udp_size)
