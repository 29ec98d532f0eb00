"""Per-query counts in CoreDNS's dimensions, kept as one flat list of plain ints per transport.

Every query a transport answers is counted once, after its reply is known, by ``count``: the
request (family, qtype, DO bit, size), the response (rcode, the plugin CoreDNS would name as its
writer, size) and the time from receipt to the reply being ready. The cells of one tally are
written by one thread only (the UDP loop's, the TCP loop's); replies that come back on another
thread (forwarding, cache misses) are counted into a ``Tally`` of their own under its lock. The
exposition (``kdns.metrics``) adds the tallies up at scrape time, so the hot path never locks.

The C loop (kdns/serve/_fastpath.c) keeps the same cells, in the same ``LAYOUT``, in its own
``Counters`` object; tests/unit/test_fastpath.py checks both layouts and both counts agree.

What a cell means, as CoreDNS's ``plugin/metrics/vars`` defines it:

* ``type``: CoreDNS's monitored qtypes (``TYPES``) and ``other``.
* sizes: CoreDNS's size buckets (``SIZE_BOUNDS``) over the query's and the reply's wire length.
* duration: CoreDNS's ``ExponentialBuckets(0.00025, 2, 16)``; the bucket of a duration of ``ns``
  nanoseconds is the bit length of ``(ns - 1) // 250000`` (exact for powers of two), capped at
  16 (+Inf). Sums are kept in integer nanoseconds and bytes, so no count is ever rounded.
* ``plugin``: who wrote the reply, read from the reply and how it came: ``kubernetes`` for an
  authoritative answer (AA set: kdns's own records), ``forward`` for a reply that needed an
  upstream (a Deferred), ``cache`` for another NOERROR or NXDOMAIN given at once (the resolver
  cache's hits, stale answers and nodecache's search-path answers included), and ``""`` (the
  server itself, as CoreDNS writes it for errors) for the rest (FORMERR, NOTIMP, REFUSED,
  BADVERS, an immediate SERVFAIL).

A dropped packet (a response, a runt, a query dropped while draining) is not counted: no reply
means no response, and CoreDNS does not count what it never answers either.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

TYPES: Final = (
    (1, "A"), (28, "AAAA"), (15, "MX"), (6, "SOA"), (5, "CNAME"), (12, "PTR"), (16, "TXT"),
    (2, "NS"), (33, "SRV"), (43, "DS"), (48, "DNSKEY"), (46, "RRSIG"), (47, "NSEC"),
    (50, "NSEC3"), (65, "HTTPS"), (251, "IXFR"), (252, "AXFR"), (255, "ANY"),
)  # fmt: skip
"""CoreDNS's monitored query types (plugin/metrics/vars/report.go), in their label spelling."""
TYPE_NAMES: Final = (*(name for _, name in TYPES), "other")
TYPE_INDEX: Final = {code: index for index, (code, _) in enumerate(TYPES)}
OTHER: Final = len(TYPES)
N_TYPES: Final = len(TYPE_NAMES)

FAMILIES: Final = ("1", "2")
"""CoreDNS's ``family`` label: 1 for an IPv4 client (also when mapped into IPv6), 2 for IPv6."""

SIZE_BOUNDS: Final = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3, 64e3)
N_SIZES: Final = len(SIZE_BOUNDS) + 1
SIZE_BUCKET: Final = bytes(
    next((i for i, bound in enumerate(SIZE_BOUNDS) if size <= bound), len(SIZE_BOUNDS))
    for size in range(65536)
)
"""The size bucket of every length a DNS message can have (one index, no search per query)."""

DURATION_BOUNDS: Final = tuple(0.00025 * 2**i for i in range(16))
N_DURATIONS: Final = len(DURATION_BOUNDS) + 1
_DURATION_UNIT_NS: Final = 250_000

N_RCODES: Final = 32
"""Rcodes 0-31 each have a cell (kdns and nodecache never send a higher one)."""
RCODE_NAMES: Final = (
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE", "11", "12", "13", "14", "15", "BADSIG", "BADKEY", "BADTIME",
    "BADMODE", "BADNAME", "BADALG", "BADTRUNC", "BADCOOKIE",
    *(str(n) for n in range(24, N_RCODES)),
)  # fmt: skip
"""As miekg/dns's RcodeToString spells them for CoreDNS (16 is BADSIG there, also BADVERS)."""
PLUGINS: Final = ("", "kubernetes", "forward", "cache")
KUBERNETES: Final = 1
FORWARD: Final = 2
CACHE: Final = 3

# The cells of one tally: where each counter starts (the C loop uses the same numbers).
REQUESTS: Final = 0
"""[family][type]"""
DO_REQUESTS: Final = REQUESTS + len(FAMILIES) * N_TYPES
REQUEST_SIZE: Final = DO_REQUESTS + 1
"""[bucket], then the sum of bytes."""
RESPONSE_SIZE: Final = REQUEST_SIZE + N_SIZES + 1
RESPONSES: Final = RESPONSE_SIZE + N_SIZES + 1
"""[rcode][plugin]"""
DURATION: Final = RESPONSES + N_RCODES * len(PLUGINS)
"""[type][bucket]"""
DURATION_SUM_NS: Final = DURATION + N_TYPES * N_DURATIONS
"""[type]"""
CELLS: Final = DURATION_SUM_NS + N_TYPES

LAYOUT: Final = (
    N_TYPES, len(FAMILIES), N_SIZES, N_DURATIONS, N_RCODES, len(PLUGINS),
    REQUESTS, DO_REQUESTS, REQUEST_SIZE, RESPONSE_SIZE, RESPONSES, DURATION, DURATION_SUM_NS,
    CELLS,
)  # fmt: skip
"""What the C loop's ``_fastpath.LAYOUT`` must equal."""

_OPT_PREFIX: Final = b"\x00\x00\x29"


def new_cells() -> list[int]:
    return [0] * CELLS


_REQUEST_SIZE_CELL: Final = tuple(REQUEST_SIZE + bucket for bucket in SIZE_BUCKET)
"""The request-size bucket cell of every length (precomputed: one index per query)."""
_RESPONSE_SIZE_CELL: Final = tuple(RESPONSE_SIZE + bucket for bucket in SIZE_BUCKET)
_REQUEST_SUM: Final = REQUEST_SIZE + N_SIZES
_RESPONSE_SUM: Final = RESPONSE_SIZE + N_SIZES
_TYPE_CELLS: Final = {
    code: (REQUESTS + index, DURATION + index * N_DURATIONS, DURATION_SUM_NS + index)
    for index, (code, _) in enumerate(TYPES)
}
"""qtype -> (its IPv4 request cell, its first duration cell, its duration-sum cell); the IPv6
request cell is ``N_TYPES`` further on."""
_OTHER_CELLS: Final = (REQUESTS + OTHER, DURATION + OTHER * N_DURATIONS, DURATION_SUM_NS + OTHER)
_RESPONSE_CELL: Final = tuple(
    RESPONSES + (rcode_bits & 0xF) * 4 + plugin for rcode_bits in range(16) for plugin in range(4)
)
"""``[(reply[3] & 0xF) * 4 + plugin]`` -> its responses cell, for replies without BADVERS's bit."""


def count(
    cells: list[int],
    packet: bytes,
    reply: bytes,
    family: int,
    deferred: bool,
    elapsed_ns: int,
) -> None:
    """Count one answered query into ``cells``. ``family`` is 0 (IPv4) or 1 (IPv6);
    ``deferred`` says the reply needed an upstream. Never raises for any bytes.

    Written for the pure-Python loop's budget (issue 13: it is run for every query): each cell
    index comes from a precomputed table and no slice is made; tests/unit/test_tally.py holds the
    same rule written plainly (``count_plainly``) and checks the two agree on any bytes."""
    end = packet.find(b"\x00", 12)
    size = len(packet)
    if end > 0 and size >= end + 3:
        type_cells = _TYPE_CELLS.get((packet[end + 1] << 8) | packet[end + 2], _OTHER_CELLS)
        if size > end + 12 and packet[end + 12] & 0x80 and packet.startswith(_OPT_PREFIX, end + 5):
            cells[DO_REQUESTS] += 1
    else:
        type_cells = _OTHER_CELLS
    cells[type_cells[0] + (N_TYPES if family else 0)] += 1
    cells[_REQUEST_SIZE_CELL[size if size < 65536 else 65535]] += 1
    cells[_REQUEST_SUM] += size
    size = len(reply)
    cells[_RESPONSE_SIZE_CELL[size if size < 65536 else 65535]] += 1
    cells[_RESPONSE_SUM] += size
    if size >= 12:
        flags = reply[2]
        rcode = reply[3] & 0xF
        if flags & 0x04:
            plugin = KUBERNETES
        elif deferred:
            plugin = FORWARD
        else:
            plugin = -1  # decided below, once the extended rcode is known
        if size >= 23 and reply[size - 6] & 0x01 and reply.startswith(_OPT_PREFIX, size - 11):
            rcode |= 0x10  # only BADVERS's bit: the cells stop at 31
            cells[RESPONSES + rcode * 4 + (plugin if plugin >= 0 else 0)] += 1
        else:
            if plugin < 0:
                plugin = CACHE if rcode == 0 or rcode == 3 else 0
            cells[_RESPONSE_CELL[rcode * 4 + plugin]] += 1
    if elapsed_ns > 0:
        bucket = ((elapsed_ns - 1) // _DURATION_UNIT_NS).bit_length()
        cells[type_cells[1] + (bucket if bucket < 16 else 16)] += 1
        cells[type_cells[2]] += elapsed_ns
    else:
        cells[type_cells[1]] += 1
        cells[type_cells[2]] += elapsed_ns


class Tally:
    """The cells of one transport, and a locked set for replies that finish on other threads."""

    def __init__(self) -> None:
        self.cells = new_cells()
        """Written only by the transport's own thread."""
        self._late = new_cells()
        self._lock = threading.Lock()

    def count_late(self, packet: bytes, reply: bytes, family: int, elapsed_ns: int) -> None:
        """A deferred reply, counted from whichever thread sends it."""
        with self._lock:
            count(self._late, packet, reply, family, True, elapsed_ns)

    def read(self) -> list[int]:
        """Both sets of cells added up (the transport's are read without a lock: each int is
        read whole, and a query counted during the read shows up in the next scrape)."""
        with self._lock:
            late = list(self._late)
        return add(list(self.cells), late)


def add(total: list[int], more: Sequence[int]) -> list[int]:
    """``total += more``, cell by cell; returns ``total``."""
    for index, value in enumerate(more):
        if value:
            total[index] += value
    return total


def family_of(host: str) -> int:
    """0 for an IPv4 client (also ``::ffff:a.b.c.d``), 1 for IPv6: CoreDNS's ``family``."""
    if ":" not in host or (host.startswith("::ffff:") and "." in host):
        return 0
    return 1


def server_label(host: str, port: int) -> str:
    """CoreDNS's ``server`` label for a listen address: ``dns://:53`` for a wildcard address
    (a server block without ``bind``), ``dns://10.0.0.10:53`` or ``dns://[fd00::a]:53`` for
    one address (with ``bind``)."""
    if host in ("0.0.0.0", "::", ""):
        return f"dns://:{port}"
    if ":" in host:
        return f"dns://[{host}]:{port}"
    return f"dns://{host}:{port}"


@dataclass(frozen=True, slots=True)
class Counts:
    """One set of cells read back in CoreDNS's label values (zeros left out)."""

    requests: dict[tuple[str, str], int]
    """(family, type) -> queries"""
    do_requests: int
    request_size: tuple[list[int], int]
    """(count per bucket, not cumulative; the sum of bytes)"""
    response_size: tuple[list[int], int]
    responses: dict[tuple[str, str], int]
    """(rcode, plugin) -> replies"""
    duration: dict[str, tuple[list[int], int]]
    """type -> (count per bucket, not cumulative; the sum of nanoseconds)"""


def read_counts(cells: Sequence[int]) -> Counts:
    requests = {}
    for family_index, family in enumerate(FAMILIES):
        for type_index, name in enumerate(TYPE_NAMES):
            value = cells[REQUESTS + family_index * N_TYPES + type_index]
            if value:
                requests[(family, name)] = value
    responses = {}
    for rcode in range(N_RCODES):
        for plugin_index, plugin in enumerate(PLUGINS):
            value = cells[RESPONSES + rcode * len(PLUGINS) + plugin_index]
            if value:
                responses[(RCODE_NAMES[rcode], plugin)] = value
    duration = {}
    for type_index, name in enumerate(TYPE_NAMES):
        start = DURATION + type_index * N_DURATIONS
        buckets = list(cells[start : start + N_DURATIONS])
        if any(buckets):
            duration[name] = (buckets, cells[DURATION_SUM_NS + type_index])
    return Counts(
        requests=requests,
        do_requests=cells[DO_REQUESTS],
        request_size=(
            list(cells[REQUEST_SIZE : REQUEST_SIZE + N_SIZES]),
            cells[REQUEST_SIZE + N_SIZES],
        ),
        response_size=(
            list(cells[RESPONSE_SIZE : RESPONSE_SIZE + N_SIZES]),
            cells[RESPONSE_SIZE + N_SIZES],
        ),
        responses=responses,
        duration=duration,
    )
