"""kdns.serve.tally: one query counted in CoreDNS's dimensions (plugin/metrics/vars), and the
C loop's cells (kdns/serve/_fastpath.c) laid out and counted the same."""

from __future__ import annotations

from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdns.serve import tally
from kdns.serve.tally import count, family_of, new_cells, read_counts, server_label

OPT_PREFIX = b"\x00\x00\x29"  # root owner, type OPT
DURATION_UNIT_NS = 250_000  # CoreDNS's first duration bucket, 0.25 ms


def size_bucket(size: int) -> int:
    """The first of CoreDNS's size bounds the size fits under, else the +Inf bucket."""
    return next((i for i, bound in enumerate(tally.SIZE_BOUNDS) if size <= bound),
                len(tally.SIZE_BOUNDS))  # fmt: skip


def count_plainly(
    cells: list[int],
    packet: bytes,
    reply: bytes,
    family: int,
    deferred: bool,
    elapsed_ns: int,
) -> None:
    """``kdns.serve.tally.count``, written as plainly as the rule reads (the C loop's
    ``count_reply`` mirrors this one): the specification ``count`` is tested against."""
    end = packet.find(b"\x00", 12)
    qtype = tally.OTHER
    if end > 0 and len(packet) >= end + 3:
        qtype = tally.TYPE_INDEX.get((packet[end + 1] << 8) | packet[end + 2], tally.OTHER)
        if (
            len(packet) > end + 12
            and packet[end + 5 : end + 8] == OPT_PREFIX
            and packet[end + 12] & 0x80
        ):
            cells[tally.DO_REQUESTS] += 1
    cells[tally.REQUESTS + family * tally.N_TYPES + qtype] += 1
    size = len(packet)
    cells[tally.REQUEST_SIZE + size_bucket(size)] += 1
    cells[tally.REQUEST_SIZE + tally.N_SIZES] += size
    size = len(reply)
    cells[tally.RESPONSE_SIZE + size_bucket(size)] += 1
    cells[tally.RESPONSE_SIZE + tally.N_SIZES] += size
    if size >= 12:
        rcode = reply[3] & 0xF
        if size >= 23 and reply[-11:-8] == OPT_PREFIX:
            rcode |= (reply[-6] << 4) & 0x10  # only BADVERS's bit: the cells stop at 31
        if reply[2] & 0x04:
            plugin = tally.KUBERNETES
        elif deferred:
            plugin = tally.FORWARD
        elif rcode == 0 or rcode == 3:
            plugin = tally.CACHE
        else:
            plugin = 0
        cells[tally.RESPONSES + rcode * 4 + plugin] += 1
    bucket = ((elapsed_ns - 1) // DURATION_UNIT_NS).bit_length() if elapsed_ns > 0 else 0
    cells[tally.DURATION + qtype * tally.N_DURATIONS + (bucket if bucket < 16 else 16)] += 1
    cells[tally.DURATION_SUM_NS + qtype] += elapsed_ns


def query(
    name: str = "svc1.testns.svc.cluster.local",
    qtype: str = "A",
    *,
    edns: bool = False,
    do: bool = False,
) -> bytes:
    message = dns.message.make_query(
        name, qtype, use_edns=0 if edns or do else None, ednsflags=dns.flags.DO if do else 0
    )
    return message.to_wire()


def reply(packet: bytes, rcode: str = "NOERROR", *, aa: bool = False, pad: int = 0) -> bytes:
    request = dns.message.from_wire(packet)
    response = dns.message.make_response(request)
    response.set_rcode(dns.rcode.from_text(rcode))
    if aa:
        response.flags |= dns.flags.AA
    wire = response.to_wire()
    if pad:  # a longer reply: only its length matters here
        wire += b"\x00" * pad
    return wire


@dataclass(frozen=True)
class Row:
    id: str
    packet: bytes
    reply: bytes
    family: int = 0
    deferred: bool = False
    elapsed_ns: int = 100_000
    requests: tuple[tuple[str, str], ...] = (("1", "A"),)
    responses: tuple[tuple[str, str], ...] = (("NOERROR", "kubernetes"),)
    do: int = 0
    duration_bucket: int = 0


A = query()
ROWS = [
    Row("authoritative A hit (AA): kubernetes", A, reply(A, aa=True)),
    Row("IPv6 client: family 2", A, reply(A, aa=True), family=1, requests=(("2", "A"),)),
    Row(
        "NXDOMAIN from the table",
        query("nope.testns.svc.cluster.local"),
        reply(query("nope.testns.svc.cluster.local"), "NXDOMAIN", aa=True),
        responses=(("NXDOMAIN", "kubernetes"),),
    ),
    Row(
        "forwarded (deferred): forward",
        query("example.com", "AAAA"),
        reply(query("example.com", "AAAA")),
        deferred=True,
        requests=(("1", "AAAA"),),
        responses=(("NOERROR", "forward"),),
    ),
    Row(
        "upstream failure SERVFAIL, deferred: forward",
        query("example.com"),
        reply(query("example.com"), "SERVFAIL"),
        deferred=True,
        responses=(("SERVFAIL", "forward"),),
    ),
    Row(
        "resolver cache hit (immediate, not AA): cache",
        query("example.com", "MX"),
        reply(query("example.com", "MX")),
        requests=(("1", "MX"),),
        responses=(("NOERROR", "cache"),),
    ),
    Row(
        "cached NXDOMAIN: cache",
        query("nope.example.com"),
        reply(query("nope.example.com"), "NXDOMAIN"),
        responses=(("NXDOMAIN", "cache"),),
    ),
    Row(
        "REFUSED by the server: no plugin",
        query("example.com", "AXFR"),
        reply(query("example.com", "AXFR"), "REFUSED"),
        requests=(("1", "AXFR"),),
        responses=(("REFUSED", ""),),
    ),
    Row(
        "SERVFAIL at once (unsynced table, overload): no plugin",
        A,
        reply(A, "SERVFAIL"),
        responses=(("SERVFAIL", ""),),
    ),
    Row(
        "a type CoreDNS does not monitor: other",
        query("svc1.testns.svc.cluster.local", "CAA"),
        reply(query("svc1.testns.svc.cluster.local", "CAA"), aa=True),
        requests=(("1", "other"),),
    ),
    Row(
        "HTTPS is monitored",
        query("example.com", "HTTPS"),
        reply(query("example.com", "HTTPS")),
        requests=(("1", "HTTPS"),),
        responses=(("NOERROR", "cache"),),
    ),
    Row(
        "DO bit counted",
        query(do=True),
        reply(query(do=True), aa=True),
        do=1,
    ),
    Row("EDNS without DO: not counted as DO", query(edns=True), reply(query(edns=True), aa=True)),
    Row(
        "BADVERS (extended rcode in the OPT): BADSIG, as miekg/dns names 16",
        query(edns=True),
        reply(query(edns=True), "BADVERS"),
        responses=(("BADSIG", ""),),
    ),
    Row(
        "a runt with no question: other, FORMERR",
        b"\x12\x34\x01\x00\x00\x01",
        b"\x12\x34\x81\x01\x00\x00\x00\x00\x00\x00\x00\x00",
        requests=(("1", "other"),),
        responses=(("FORMERR", ""),),
    ),
    Row("250 us is the first bucket", A, reply(A, aa=True), elapsed_ns=250_000),
    Row(
        "just over 250 us: the second", A, reply(A, aa=True), elapsed_ns=250_001, duration_bucket=1
    ),
    Row("1 ms is le=0.001", A, reply(A, aa=True), elapsed_ns=1_000_000, duration_bucket=2),
    Row(
        "8.192 s is the last bound",
        A,
        reply(A, aa=True),
        elapsed_ns=8_192_000_000,
        duration_bucket=15,
    ),
    Row("beyond: +Inf", A, reply(A, aa=True), elapsed_ns=9_000_000_000, duration_bucket=16),
    Row("zero time: first bucket", A, reply(A, aa=True), elapsed_ns=0),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_one_query_is_counted_in_every_family(row: Row) -> None:
    cells = new_cells()
    count(cells, row.packet, row.reply, row.family, row.deferred, row.elapsed_ns)
    counts = read_counts(cells)
    assert counts.requests == dict.fromkeys(row.requests, 1)
    assert counts.responses == dict.fromkeys(row.responses, 1)
    assert counts.do_requests == row.do
    (qtype,) = {name for _, name in row.requests}
    buckets, total_ns = counts.duration[qtype]
    assert buckets.index(1) == row.duration_bucket
    assert sum(buckets) == 1
    assert total_ns == row.elapsed_ns
    assert counts.request_size[1] == len(row.packet)
    assert counts.response_size[1] == len(row.reply)


SIZES = [
    # (bytes, bucket index in CoreDNS's 0, 100, 200, 300, 400, 511, 1023, 2047, ... 64e3, +Inf)
    (0, 0), (1, 1), (100, 1), (101, 2), (511, 5), (512, 6), (1232, 7), (4096, 9), (8291, 9),
    (8292, 10), (64000, 13), (64001, 14), (65535, 14),
]  # fmt: skip


@pytest.mark.parametrize(("size", "bucket"), SIZES, ids=[f"{s}B" for s, _ in SIZES])
def test_size_buckets_are_coredns_buckets(size: int, bucket: int) -> None:
    assert tally.SIZE_BUCKET[size] == bucket
    packet = A + b"\x00" * max(0, size - len(A))
    cells = new_cells()
    count(cells, packet, b"\x00" * size, 0, False, 1)
    response_buckets, response_sum = read_counts(cells).response_size
    assert response_buckets[bucket] == 1
    assert response_sum == size


def test_duration_bounds_are_coredns_exponential_buckets() -> None:
    """ExponentialBuckets(0.00025, 2, 16) (plugin.TimeBuckets)."""
    assert tally.DURATION_BOUNDS[0] == 0.00025
    assert tally.DURATION_BOUNDS[-1] == 8.192
    assert len(tally.DURATION_BOUNDS) == 16


def test_counts_add_up() -> None:
    cells = new_cells()
    for _ in range(3):
        count(cells, A, reply(A, aa=True), 0, False, 10)
    count(cells, A, reply(A, "SERVFAIL"), 1, True, 10)
    counts = read_counts(cells)
    assert counts.requests == {("1", "A"): 3, ("2", "A"): 1}
    assert counts.responses == {("NOERROR", "kubernetes"): 3, ("SERVFAIL", "forward"): 1}


def test_late_replies_are_counted_as_forwarded() -> None:
    counted = tally.Tally()
    count(counted.cells, A, reply(A, aa=True), 0, False, 10)
    counted.count_late(A, reply(A), 0, 10)
    assert read_counts(counted.read()).responses == {
        ("NOERROR", "kubernetes"): 1,
        ("NOERROR", "forward"): 1,
    }


@pytest.mark.parametrize(
    ("host", "family"),
    [("10.0.0.1", 0), ("::1", 1), ("fd00::1", 1), ("::ffff:10.0.0.1", 0), ("::ffff:a", 1)],
)
def test_family_is_coredns_family(host: str, family: int) -> None:
    assert family_of(host) == family


@pytest.mark.parametrize(
    ("host", "port", "label"),
    [
        ("0.0.0.0", 53, "dns://:53"),
        ("::", 53, "dns://:53"),
        ("169.254.20.10", 53, "dns://169.254.20.10:53"),
        ("fd00::a", 53, "dns://[fd00::a]:53"),
        ("127.0.0.1", 5353, "dns://127.0.0.1:5353"),
    ],
)
def test_server_label_is_coredns_server_label(host: str, port: int, label: str) -> None:
    assert server_label(host, port) == label


def test_c_layout_equals_python_layout() -> None:
    fastpath = pytest.importorskip("kdns.serve._fastpath", reason="the C extension is not built")
    assert fastpath.LAYOUT == tally.LAYOUT
    answers = fastpath.Answers(b"", b"", 512)
    loop = fastpath.Loop(answers, lambda packet: None, lambda *args: None, lambda: None)
    assert len(loop.read()) == tally.CELLS


@given(
    packet=st.binary(max_size=80),
    reply=st.binary(max_size=80),
    family=st.sampled_from([0, 1]),
    deferred=st.booleans(),
    elapsed_ns=st.integers(min_value=0, max_value=10**12),
)
def test_any_bytes_are_counted_without_raising(
    packet: bytes, reply: bytes, family: int, deferred: bool, elapsed_ns: int
) -> None:
    """The serving loops count every reply inline: no input may raise."""
    cells = new_cells()
    count(cells, packet, reply, family, deferred, elapsed_ns)
    counts = read_counts(cells)
    assert sum(counts.requests.values()) == 1
    assert sum(counts.responses.values()) == (1 if len(reply) >= 12 else 0)


@given(
    packet=st.one_of(
        st.binary(max_size=80),
        st.builds(
            lambda qtype, do, tail: query(qtype=qtype, do=do) + tail,
            st.sampled_from(["A", "AAAA", "SRV", "HINFO", "ANY", "TXT"]),
            st.booleans(),
            st.binary(max_size=3),
        ),
    ),
    reply=st.one_of(
        st.binary(max_size=80),
        st.builds(
            lambda rcode, aa, ext: (
                reply(query(do=True), rcode, aa=aa)[:-6] + bytes([ext]) + reply(query(do=True))[-5:]
            ),
            st.sampled_from(["NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR"]),
            st.booleans(),
            st.integers(0, 255),
        ),
    ),
    family=st.sampled_from([0, 1]),
    deferred=st.booleans(),
    elapsed_ns=st.one_of(st.integers(min_value=-5, max_value=10**12), st.sampled_from([0, 1])),
)
def test_count_equals_its_plain_reference(
    packet: bytes, reply: bytes, family: int, deferred: bool, elapsed_ns: int
) -> None:
    """Issue 13: ``count`` is written for speed; ``count_plainly`` is the rule written plainly
    (and what the C loop's count_reply mirrors). Both must count every input the same."""
    fast, plain = new_cells(), new_cells()
    count(fast, packet, reply, family, deferred, elapsed_ns)
    count_plainly(plain, packet, reply, family, deferred, elapsed_ns)
    assert fast == plain
