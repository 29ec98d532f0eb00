"""The C accelerator (kdns/serve/_fastpath.c) against the Python path it mirrors.

``c_answer(responder, packet, tcp)`` must equal ``responder.answer(packet, tcp)`` byte
for byte for every input (a hypothesis property over the fixture cluster, valid and broken
queries alike), and ``_fastpath.serve`` over a real socket must send what the Python UDP loop
sends, follow table swaps, survive errors and stop cleanly. Skipped when the extension is not
built (``pip install -e .`` builds it when a C compiler and the Python headers are present).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import ModuleType

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kdns.config import ZoneConfig
from kdns.model import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    KubeObject,
    Service,
    ServicePort,
)
from kdns.runtime import Runtime
from kdns.serve import accel, tally
from kdns.serve.protocol import Responder
from kdns.serve.reply import Reply, Send
from kdns.serve.udp import UDPServer, bind_udp
from kdns.table import AnswerTable
from kdns.wire import Compiled
from tests.support.cluster import fixture_objects

_fastpath: ModuleType | None
try:
    from kdns.serve import _fastpath
except ImportError as _error:  # pragma: no cover - depends on the build
    _fastpath = None
    _NOT_BUILT = f"kdns.serve._fastpath is not built ({_error}); run: pip install -e ."
else:
    _NOT_BUILT = ""

needs_extension = pytest.mark.skipif(_fastpath is None, reason=_NOT_BUILT or "built")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _big_service(name: str, count: int) -> list[KubeObject]:
    """A headless Service whose A answer is ``count`` records: past 512 bytes, or past 1232."""
    endpoints = tuple(
        Endpoint((f"10.9.{i // 250}.{i % 250 + 1}",), True, f"h-{i}") for i in range(count)
    )
    return [
        Service("testns", name, headless=True, ports=(ServicePort("http", 80),)),
        EndpointSlice("testns", f"{name}-1", name, "IPv4", endpoints, (EndpointPort("http", 80),)),
    ]


def cluster() -> list[KubeObject]:
    objects = [*fixture_objects(), *_big_service("mid", 40), *_big_service("big", 120)]
    for length in range(3, 9):  # A answers of 510 to 515 bytes: both sides of 512
        objects += _big_service("e" * length, 29)
    return objects


def make_responder(max_udp_size: int = 1232) -> Responder:
    responder = Responder(max_udp_size)
    Runtime(ZoneConfig(), responder).replace(cluster())
    return responder


def with_decoys(responder: Responder) -> Responder:
    """Add entries whose type or class bytes are the lower case of a query's (0x41 -> 0x61): a
    key built by folding those bytes too would hit them."""
    assert responder.table is not None
    records = responder.table.records
    entry = records[b"\x04svc1\x06testns\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01"]
    records[b"\x04svc1\x06testns\x03svc\x07cluster\x05local\x00\x00\x61\x00\x01"] = entry
    records[b"\x04svc1\x06testns\x03svc\x07cluster\x05local\x00\x00\x01\x00\x61"] = entry
    return responder


# Three payload ceilings: the default, the RFC minimum, and the largest a header can say.
RESPONDERS = [with_decoys(make_responder(1232)), make_responder(512), make_responder(65535)]


def _names() -> list[bytes]:
    table = RESPONDERS[0].table
    assert table is not None
    names = {key[:-4] for key in table.records} | set(table.names)
    names |= {
        b"\x04nope\x06testns\x03svc\x07cluster\x05local\x00",  # in zone, absent: NXDOMAIN
        b"\x07example\x03com\x00",  # out of zone: REFUSED
        b"\x00",  # the root
        b"\x03\xc4\xb0x\x06testns\x03svc\x07cluster\x05local\x00",  # non-ASCII: no folding
        b"\x03a\x00b\x06testns\x03svc\x07cluster\x05local\x00",  # a zero byte inside a label
        b"\xc0\x0c",  # a compression pointer as the question
    }
    return sorted(names)


NAMES = _names()
KEYS = sorted(RESPONDERS[0].table.records)  # type: ignore[union-attr]
TYPES = sorted({int.from_bytes(k[-4:-2], "big") for k in KEYS})


def random_case(draw: st.DrawFn, name: bytes) -> bytes:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return bytes(
        (b ^ 0x20) if flip and (0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A) else b
        for b, flip in zip(name, flips, strict=True)
    )


@st.composite
def opt_records(draw: st.DrawFn) -> bytes:
    payload = draw(
        st.one_of(
            st.sampled_from([0, 1, 511, 512, 513, 1231, 1232, 1233, 4096, 65535]),
            st.integers(0, 0xFFFF),
        )
    )
    version = draw(st.sampled_from([0] * 10 + [1, 255]))
    extended_rcode = draw(st.sampled_from([0, 0, 0, 1]))
    z = (0x8000 if draw(st.booleans()) else 0) | draw(st.sampled_from([0, 0, 0, 1, 0x7FFF]))
    options = draw(
        st.one_of(
            st.sampled_from([b"", b"", b"\x00\x0a\x00\x08" + bytes(range(8))]),
            st.binary(max_size=20),
        )
    )
    rdlen = max(0, min(0xFFFF, len(options) + draw(st.sampled_from([0] * 20 + [-1, 1, 300]))))
    owner = draw(st.sampled_from([b"\x00"] * 20 + [b"\x01a\x00", b"\xc0\x0c"]))
    rtype = draw(st.sampled_from([41] * 20 + [1, 0x2900]))
    return (
        owner + struct.pack(">HHBBHH", rtype, payload, extended_rcode, version, z, rdlen) + options
    )


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    """A query as clients send them, often with something wrong with it."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=120))
    qid = draw(st.integers(0, 0xFFFF))
    flags = draw(
        st.sampled_from([0x0000, 0x0100, 0x0010, 0x0110, 0x0300, 0x0500, 0x0120])
        if draw(st.integers(0, 3))
        else st.one_of(
            st.sampled_from([0x8100, 0x0900, 0x2100, 0x7800, 0x0170, 0x01FF]),
            st.integers(0, 0xFFFF),
        )
    )
    if draw(st.integers(0, 3)):  # a question the table holds, so mostly a C hit
        key = draw(st.sampled_from(KEYS))
        name, qtype = key[:-4], int.from_bytes(key[-4:-2], "big")
    else:
        name = draw(st.sampled_from(NAMES))
        qtype = draw(st.one_of(st.sampled_from([*TYPES, 65, 255, 252, 251, 41, 0]), st.integers(0, 0xFFFF)))  # fmt: skip
    name = random_case(draw, name)
    qclass = draw(st.sampled_from([1] * 20 + [3, 255, 0x0101, 0x41]))
    opt = draw(opt_records()) if draw(st.booleans()) else b""
    counts = (1, 0, 0, 1 if opt else 0)
    if draw(st.integers(0, 7)) == 0:
        counts = draw(st.tuples(*[st.sampled_from([0, 1, 2, 0x100]) for _ in range(4)]))
    packet = struct.pack(">HH", qid, flags) + struct.pack(">4H", *counts)
    packet += name + struct.pack(">HH", qtype, qclass) + opt
    tail = draw(st.sampled_from(["whole"] * 9 + ["cut", "extra", "flip"]))
    if tail == "cut":
        packet = packet[: draw(st.integers(0, len(packet)))]
    elif tail == "extra":
        packet += draw(st.binary(min_size=1, max_size=12))
    elif tail == "flip":
        at = draw(st.integers(0, len(packet) - 1))
        packet = packet[:at] + bytes([draw(st.integers(0, 255))]) + packet[at + 1 :]
    return packet


def c_answer(responder: Responder, packet: bytes, tcp: bool = False) -> bytes | None:
    """The C answer through the Responder's contract (``fast_path``), its fallback being
    ``responder.answer`` as looked up now (``spy_on`` may shadow it)."""
    assert _fastpath is not None
    assert responder.fast_path is not None
    reply = _fastpath.answer(responder.fast_path.answers, responder.answer, packet, tcp)
    assert reply is None or isinstance(reply, bytes)
    return reply


def spy_on(responder: Responder) -> list[bytes]:
    """Record the packets the C code hands back to ``responder.answer`` (an instance attribute
    shadows the method; ``c_answer`` passes the instance's ``answer`` as the fallback)."""
    calls: list[bytes] = []

    def answer(packet: bytes, tcp: bool = False) -> bytes | None:
        calls.append(packet)
        return Responder.answer(responder, packet, tcp)

    responder.answer = answer  # type: ignore[method-assign]
    return calls


def unspy(responder: Responder) -> None:
    vars(responder).pop("answer", None)


def python_answer(responder: Responder, packet: bytes, tcp: bool) -> tuple[bytes | None, bool]:
    """``responder.answer(packet, tcp)``, and whether it came from a records or memo hit: the
    slow path was not asked, nor ``names`` (NODATA-by-name, which the C loop leaves to Python)."""
    table = responder.table
    asked: list[bytes] = []

    def answer_slow(packet: bytes, tcp: bool = False) -> bytes | None:
        asked.append(packet)
        return Responder.answer_slow(responder, packet, tcp)

    def negative_entry(negative_key: int) -> Compiled:
        asked.append(b"names")
        assert table is not None
        return AnswerTable.negative_entry(table, negative_key)

    responder.answer_slow = answer_slow  # type: ignore[method-assign]
    if table is not None:
        table.negative_entry = negative_entry  # type: ignore[method-assign]
    try:
        reply = responder.answer(packet, tcp)
    finally:
        del vars(responder)["answer_slow"]
        if table is not None:
            del vars(table)["negative_entry"]
    return reply, reply is not None and not asked


def check_same(responder: Responder, packet: bytes, tcp: bool) -> bool:
    """The C answer is the Python answer, with the same internal-error count, and C answers
    by itself exactly the queries the Python fast path answers from ``records`` or the memo."""
    assert _fastpath is not None
    responder.answer(packet, tcp)  # warm the memo: C serves what Python memoized
    errors = responder.errors
    expected, records_hit = python_answer(responder, packet, tcp)
    python_errors, errors = responder.errors - errors, responder.errors
    calls = spy_on(responder)
    try:
        got = c_answer(responder, packet, tcp)
    finally:
        unspy(responder)
    context = (packet.hex(), tcp, responder.max_udp_size)
    assert got == expected, context
    assert responder.errors - errors == python_errors, context
    assert calls == ([] if records_hit else [packet]), context
    return records_hit


# --- answer(): the same bytes as Responder.answer ------------------------------------------


@needs_extension
@settings(max_examples=int(os.environ.get("KDNS_PROPERTY_EXAMPLES", "1000")), deadline=None)
@given(packet=queries(), tcp=st.booleans(), which=st.integers(0, len(RESPONDERS) - 1))
def test_answer_equals_python_path(packet: bytes, tcp: bool, which: int) -> None:
    hit = check_same(RESPONDERS[which], packet, tcp)
    event("C fast path" if hit else "handed to responder.answer")


@needs_extension
@pytest.mark.parametrize("which", range(len(RESPONDERS)))
def test_every_key_at_every_size_limit(which: int) -> None:
    """Each table key, plain and with an OPT whose payload sits at, just under and just over
    the reply's size (and under 512): the limits are where a fast path goes wrong."""
    responder = RESPONDERS[which]
    assert responder.table is not None
    hits = 0
    for key in list(responder.table.records):
        plain = header() + key
        hits += check_same(responder, plain, False) + check_same(responder, plain, True)
        full = responder.answer(header(ar=1) + key + OPT, tcp=True)
        assert full is not None
        for payload in {0, 511, 512, 513, len(full) - 1, len(full), len(full) + 1, 65535}:
            for do in (0, 0x80):
                opt = b"\x00\x00\x29" + struct.pack(">HBBBBH", payload, 0, 0, do, 0, 0)
                hits += check_same(responder, header(ar=1) + key + opt, False)
    assert hits > len(responder.table.records)


def header(flags: int = 0x0100, ar: int = 0, qid: int = 0x1234) -> bytes:
    return struct.pack(">HHHHHH", qid, flags, 1, 0, 0, ar)


def question(name: bytes, qtype: int = 1) -> bytes:
    return name + struct.pack(">HH", qtype, 1)


SVC1 = b"\x04SvC1\x06TESTNS\x03svc\x07cluster\x05local\x00"
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"  # payload 1232, no DO, no options
OPT_DO = b"\x00\x00\x29\x10\x00\x00\x00\x80\x00\x00\x00"  # payload 4096, DO
COOKIE = b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x08" + bytes(range(8))

HITS = [
    pytest.param(header() + question(SVC1), id="plain-mixed-case"),
    pytest.param(header(flags=0x0110) + question(SVC1), id="rd-cd"),
    pytest.param(
        header(flags=0x0000) + question(b"\x04Dual\x06testns\x03svc\x07cluster\x05local\x00", 28),
        id="no-rd-AAAA",
    ),
    pytest.param(header(ar=1) + question(SVC1) + OPT, id="edns"),
    pytest.param(header(ar=1) + question(SVC1) + OPT_DO, id="edns-do"),
    pytest.param(header(ar=1) + question(SVC1) + COOKIE, id="edns-cookie"),
    pytest.param(
        header(ar=1) + question(b"\x03mid\x06testns\x03svc\x07cluster\x05local\x00") + OPT,
        id="edns-over-512",
    ),
]


@needs_extension
@pytest.mark.parametrize("packet", HITS)
def test_table_hits_are_answered_in_c(packet: bytes) -> None:
    assert _fastpath is not None
    responder = RESPONDERS[0]
    expected, expected_tcp = responder.answer(packet), responder.answer(packet, True)
    assert expected is not None
    calls = spy_on(responder)
    try:
        assert c_answer(responder, packet) == expected
        assert c_answer(responder, packet, tcp=True) == expected_tcp
    finally:
        unspy(responder)
    assert calls == [], "a records hit must not reach the Python path"


MISSES = [
    pytest.param(header() + question(b"\x07example\x03com\x00"), id="memo-none-refused"),
    pytest.param(header() + question(b"\x03mid\x06testns\x03svc\x07cluster\x05local\x00"), id="over-512-needs-tc"),
    pytest.param(header(ar=1) + question(SVC1) + OPT[:-1], id="short-opt"),
    pytest.param(header(ar=1) + question(SVC1) + OPT[:6] + b"\x01" + OPT[7:], id="edns-version-1"),
    pytest.param(header(flags=0x2100) + question(SVC1), id="opcode-notify"),
    pytest.param(header() + question(SVC1) + b"\x00", id="trailing-byte"),
    pytest.param(header()[:11], id="runt"),
    # Type 65 is 0x0041: folding it (to 0x61, a decoy key in RESPONDERS[0]) would hit.
    pytest.param(header() + question(SVC1, 0x41), id="type-0x41-not-folded"),
    pytest.param(header() + SVC1 + b"\x00\x01\x00\x41", id="class-0x41-not-folded"),
]  # fmt: skip


@needs_extension
@pytest.mark.parametrize("packet", MISSES)
def test_everything_else_goes_to_responder_answer(packet: bytes) -> None:
    assert _fastpath is not None
    responder = RESPONDERS[0]
    expected = responder.answer(packet)
    calls = spy_on(responder)
    try:
        assert c_answer(responder, packet) == expected
    finally:
        unspy(responder)
    assert calls == [packet]


MEMO_HITS = [
    pytest.param(header() + question(b"\x04nope\x06testns\x03svc\x07cluster\x05local\x00"), id="nxdomain"),
    pytest.param(header(ar=1) + question(b"\x04NoPe\x06testns\x03svc\x07cluster\x05local\x00", 28) + OPT_DO, id="nxdomain-aaaa-edns-do"),
    pytest.param(header(flags=0x0110) + question(SVC1, 255), id="any-rd-cd"),
    pytest.param(header() + question(b"\x011\x010\x010\x0210\x07in-addr\x04arpa\x00", 12), id="ptr-lazy-owner"),
]  # fmt: skip


@needs_extension
@pytest.mark.parametrize("packet", MEMO_HITS)
def test_memo_hits_are_answered_in_c(packet: bytes) -> None:
    """Issue 12 item 3: a name the table does not hold is resolved once by Python (which
    memoizes it); from then on the C code serves it from the memo without calling Python."""
    responder = make_responder()
    calls = spy_on(responder)
    try:
        first = c_answer(responder, packet)
        assert calls == [packet], "the first ask goes to the Python slow path"
        assert c_answer(responder, packet) == first
        assert c_answer(responder, packet, tcp=True) == first
    finally:
        unspy(responder)
    assert calls == [packet], "a memo hit must not reach the Python path"
    assert first == responder.answer(packet) == reference(responder, packet)


def reference(responder: Responder, packet: bytes) -> bytes | None:
    """The slow path over a table with nothing compiled and an empty memo."""
    live = responder.table
    assert live is not None
    fresh = Responder(responder.max_udp_size)
    fresh.table = AnswerTable(live.index, {}, {})
    return fresh.answer_slow(packet)


@needs_extension
def test_answer_reads_the_table_on_every_call() -> None:
    assert _fastpath is not None
    responder = make_responder()
    runtime = Runtime(ZoneConfig(), responder)
    packet = header() + question(b"\x03new\x06testns\x03svc\x07cluster\x05local\x00")
    runtime.replace(fixture_objects())
    before = c_answer(responder, packet)
    assert before is not None
    assert dns.message.from_wire(before).rcode() == dns.rcode.NXDOMAIN
    runtime.replace([*fixture_objects(), Service("testns", "new", cluster_ips=("10.0.0.77",))])
    after = c_answer(responder, packet)
    assert after == responder.answer(packet)
    assert after is not None
    assert dns.message.from_wire(after).answer
    responder.table = None
    assert c_answer(responder, packet) == responder.answer(packet)  # SERVFAIL


@needs_extension
def test_answer_keeps_reference_counts_balanced() -> None:
    assert _fastpath is not None
    responder = make_responder()
    table = responder.table
    assert table is not None
    key = b"\x04svc1\x06testns\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01"
    entry = table.records[key]
    assert responder.fast_path is not None
    answers = responder.fast_path.answers
    watched = [table, table.records, entry, entry[0], entry[1], *responder.opts, answers]
    before = [sys.getrefcount(o) for o in watched]
    packets = [header() + question(SVC1), header(ar=1) + question(SVC1) + OPT_DO]
    packets += [header(ar=1) + question(SVC1) + OPT, header() + question(SVC1)[:-1]]
    for _ in range(1000):
        for packet in packets:
            c_answer(responder, packet)
    assert [sys.getrefcount(o) for o in watched] == before


@needs_extension
def test_answer_takes_keyword_arguments_and_checks_them() -> None:
    assert _fastpath is not None
    responder = RESPONDERS[0]
    packet = header() + question(SVC1)
    assert responder.fast_path is not None
    answers = responder.fast_path.answers
    got = _fastpath.answer(answers=answers, fallback=responder.answer, packet=packet, tcp=True)
    assert got == responder.answer(packet, tcp=True)
    with pytest.raises(TypeError):
        _fastpath.answer(answers)
    with pytest.raises(TypeError):
        _fastpath.answer(responder, responder.answer, packet)  # not the contract object


# --- accel: the switch ----------------------------------------------------------------------


def _accel_in_subprocess(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO, **env},
        check=True,
    )
    return result.stdout.strip()


def test_env_var_disables_the_accelerator() -> None:
    code = "from kdns.serve import accel; print(accel.available, accel.reason)"
    assert _accel_in_subprocess(code, KDNS_NO_ACCEL="1") == "False disabled by KDNS_NO_ACCEL=1"


def test_a_missing_extension_falls_back() -> None:
    code = (
        "import sys; sys.modules['kdns.serve._fastpath'] = None\n"
        "from kdns.serve import accel; print(accel.available, accel.reason)"
    )
    out = _accel_in_subprocess(code, KDNS_NO_ACCEL="")
    assert out.startswith("False not built")


def test_the_opt_in_is_the_contract_object() -> None:
    """A Responder builds its C contract at construction when the accelerator is on; a
    UDPServer serves from C exactly when it is given one (no method identity test)."""
    responder = make_responder()
    assert (responder.fast_path is not None) == accel.available
    assert UDPServer(bind_udp("127.0.0.1", 0), responder.answer).accelerated is False
    server = UDPServer(bind_udp("127.0.0.1", 0), responder.answer, fast_path=responder.fast_path)
    assert server.accelerated is accel.available
    server.sock.close()


# --- serve(): the loop over a real socket --------------------------------------------------


class CServer(UDPServer):
    """UDPServer opted in to the C loop over the Responder's answers, its fallback being the
    Responder's ``answer`` as it is now (a test may have replaced it on the instance)."""

    def __init__(self, sock: socket.socket, responder: Responder) -> None:
        assert responder.fast_path is not None
        fast_path = accel.FastPath(
            responder.fast_path.answers, responder.answer, responder.count_error
        )
        super().__init__(sock, fast_path=fast_path)


@pytest.fixture(name="servers")
def _servers() -> Iterator[tuple[Responder, UDPServer, CServer]]:
    responder = make_responder()
    python_loop = UDPServer(bind_udp("127.0.0.1", 0), responder.answer)
    c_loop = CServer(bind_udp("127.0.0.1", 0), responder)
    python_loop.start()
    c_loop.start()
    try:
        yield responder, python_loop, c_loop
    finally:
        c_loop.stop()
        python_loop.stop()


def exchange(address: tuple[str, int], packet: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, address)
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def socket_queries() -> list[bytes]:
    rng = random.Random(53)
    names = [
        "svc1.testns.svc.cluster.local",
        "SVC1.TestNS.svc.Cluster.Local",
        "hdls1.testns.svc.cluster.local",
        "_http._tcp.svc1.testns.svc.cluster.local",
        "mid.testns.svc.cluster.local",
        "big.testns.svc.cluster.local",
        "nope.testns.svc.cluster.local",
        "emptyns.svc.cluster.local",
        "cluster.local",
        "example.com",
        "1.0.0.10.in-addr.arpa",
    ]
    packets = []
    for name in names:
        for qtype in ("A", "AAAA", "SRV", "TXT", "ANY", "SOA"):
            for edns, payload, flags in [
                (None, 0, 0),
                (0, 1232, 0),
                (0, 4096, dns.flags.DO),
                (0, 512, 0),
                (0, 600, dns.flags.DO),
            ]:
                query = dns.message.make_query(
                    name, qtype, use_edns=edns, payload=payload, ednsflags=flags
                )
                query.id = rng.randrange(65536)
                if rng.random() < 0.3:
                    query.flags |= dns.flags.CD
                if rng.random() < 0.2:
                    query.flags &= ~dns.flags.RD
                packets.append(query.to_wire())
    return packets


@needs_extension
@pytest.mark.integration
def test_serve_sends_what_the_python_loop_sends(
    servers: tuple[Responder, UDPServer, CServer],
) -> None:
    responder, python_loop, c_loop = servers
    packets = socket_queries()
    for packet in packets:
        from_python = exchange(python_loop.address, packet)
        from_c = exchange(c_loop.address, packet)
        assert from_c is not None
        assert from_c == from_python == responder.answer(packet), packet.hex()
    # Broken queries the Python path answers (FORMERR, NOTIMP, BADVERS) or drops.
    answered = [
        header(ar=1) + question(SVC1) + OPT[:6] + b"\x01" + OPT[7:],
        header(flags=0x2100) + question(SVC1),
        header() + question(SVC1) + b"\x00",
        header(ar=3) + question(SVC1) + OPT,
    ]
    for packet in answered:
        assert exchange(c_loop.address, packet) == exchange(python_loop.address, packet)
    for packet in [b"", b"\x12\x34\x81\x00", header(flags=0x8100) + question(SVC1)]:
        assert exchange(c_loop.address, packet, timeout=0.3) is None
        assert exchange(python_loop.address, packet, timeout=0.3) is None
    assert responder.errors == 0
    # Both loops counted the same queries the same way (only the times differ).
    c_counts = tally.read_counts(c_loop.counts())
    python_counts = tally.read_counts(python_loop.counts())
    assert sum(c_counts.requests.values()) == len(packets) + len(answered)
    assert c_counts.requests == python_counts.requests
    assert c_counts.responses == python_counts.responses
    assert c_counts.do_requests == python_counts.do_requests > 0
    assert c_counts.request_size == python_counts.request_size
    assert c_counts.response_size == python_counts.response_size
    assert {t: sum(b) for t, (b, _) in c_counts.duration.items()} == {
        t: sum(b) for t, (b, _) in python_counts.duration.items()
    }
    assert {plugin for _, plugin in c_counts.responses} == {"kubernetes", ""}


@needs_extension
@pytest.mark.integration
def test_serve_answers_dnspython_and_follows_table_swaps(
    servers: tuple[Responder, UDPServer, CServer],
) -> None:
    responder, _, c_loop = servers
    host, port = c_loop.address
    query = dns.message.make_query("svc1.testns.svc.cluster.local", "A", use_edns=0)
    reply = dns.query.udp(query, host, port=port, timeout=2)
    assert reply.rcode() == dns.rcode.NOERROR
    assert [rr.to_text() for rr in reply.answer[0]] == ["10.0.0.1"]
    assert reply.edns == 0

    new = dns.message.make_query("fresh.testns.svc.cluster.local", "A")
    assert dns.query.udp(new, host, port=port, timeout=2).rcode() == dns.rcode.NXDOMAIN
    Runtime(ZoneConfig(), responder).replace(
        [*cluster(), Service("testns", "fresh", cluster_ips=("10.0.0.88",))]
    )
    reply = dns.query.udp(new, host, port=port, timeout=2)
    assert [rr.to_text() for rr in reply.answer[0]] == ["10.0.0.88"]

    big = dns.message.make_query("big.testns.svc.cluster.local", "A")
    truncated = dns.query.udp(big, host, port=port, timeout=2, ignore_trailing=True)
    assert truncated.flags & dns.flags.TC


@needs_extension
@pytest.mark.integration
def test_serve_stops_cleanly_when_idle_and_after_load() -> None:
    responder = make_responder()
    for load in (0, 200):
        server = CServer(bind_udp("127.0.0.1", 0), responder)
        server.start()
        packet = header() + question(SVC1)
        for _ in range(load):
            assert exchange(server.address, packet) is not None
        started = time.monotonic()
        server.stop()
        assert not server._thread.is_alive()
        assert time.monotonic() - started < 1.5
        assert server.sock.fileno() == -1


@needs_extension
@pytest.mark.integration
def test_serve_on_a_socket_with_a_timeout() -> None:
    """A Python timeout makes the descriptor non-blocking: the loop must wait, not spin."""
    responder = make_responder()
    sock = bind_udp("127.0.0.1", 0)
    sock.settimeout(0.2)
    server = CServer(sock, responder)
    server.start()
    try:
        before = time.process_time()
        time.sleep(0.3)
        assert time.process_time() - before < 0.2, "the loop spins on EAGAIN"
        packet = header() + question(SVC1)
        assert exchange(server.address, packet) == responder.answer(packet)
    finally:
        server.stop()
    assert not server._thread.is_alive()


@needs_extension
@pytest.mark.integration
def test_serve_logs_and_counts_errors_and_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    responder = make_responder()

    def broken(packet: bytes, tcp: bool = False) -> bytes | None:
        raise RuntimeError("boom")

    responder.answer = broken  # type: ignore[method-assign]
    server = CServer(bind_udp("127.0.0.1", 0), responder)
    server.start()
    try:
        with caplog.at_level(logging.ERROR, logger="kdns.serve.accel"):
            miss = header() + question(b"\x04nope\x06testns\x03svc\x07cluster\x05local\x00")
            assert exchange(server.address, miss, timeout=0.3) is None
            hit = header() + question(SVC1)
            assert exchange(server.address, hit) == Responder.answer(responder, hit)
        assert responder.errors == 1
        assert any("boom" in (r.exc_text or "") for r in caplog.records), caplog.text
    finally:
        server.stop()


def _loopback(family: str) -> str:
    host = "::1" if family == "v6" else "127.0.0.1"
    try:
        bind_udp(host, 0).close()
    except OSError:
        pytest.skip(f"no {host} here")
    return host


def exchange_any(address: tuple[str, int], packet: bytes, timeout: float = 2.0) -> bytes | None:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, address)
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


@needs_extension
@pytest.mark.integration
@pytest.mark.parametrize("family", ["v4", "v6"])
def test_serve_hands_a_deferred_reply_its_sender(family: str) -> None:
    """A handler may answer later (kdns/serve/reply.py): the C loop calls the Deferred with
    ``server.deferred_sender(peer, packet, started_ns)``, with the peer as Python's recvfrom gives
    it, like the Python loop."""
    host = _loopback(family)
    responder = make_responder()
    hit = header() + question(SVC1)

    def answer(packet: bytes, tcp: bool = False) -> Reply:
        if packet == hit:
            return Responder.answer(responder, packet, tcp)

        def deferred(send: Send) -> None:
            threading.Timer(0.05, send, args=(b"later:" + packet,)).start()

        return deferred

    responder.answer = answer  # type: ignore[assignment]
    c_loop = CServer(bind_udp(host, 0), responder)
    python_loop = UDPServer(bind_udp(host, 0), answer)
    c_loop.start()
    python_loop.start()
    try:
        for server in (c_loop, python_loop):
            assert exchange_any(server.address, b"\x12\x34?") == b"later:\x12\x34?"
            assert exchange_any(server.address, hit) == Responder.answer(responder, hit)
            # Both loops count the deferred reply (too short for a response) and the hit.
            counts = tally.read_counts(server.counts())
            assert counts.requests == {
                ("1" if family == "v4" else "2", "other"): 1,
                ("1" if family == "v4" else "2", "A"): 1,
            }
            assert counts.responses == {("NOERROR", "kubernetes"): 1}
    finally:
        c_loop.stop()
        python_loop.stop()
    assert responder.errors == 0


@needs_extension
@pytest.mark.integration
def test_serve_takes_only_its_contract_object() -> None:
    assert _fastpath is not None
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        pytest.raises(TypeError),
    ):
        _fastpath.serve(sock.fileno(), make_responder())  # type: ignore[arg-type]


@needs_extension
@pytest.mark.integration
def test_serve_threads_share_one_responder() -> None:
    """Two C loops and the Python path answering at once, while the table is republished."""
    responder = make_responder()
    runtime = Runtime(ZoneConfig(), responder)
    runtime.replace(cluster())
    loops = [CServer(bind_udp("127.0.0.1", 0), responder) for _ in range(2)]
    for loop in loops:
        loop.start()
    stop = threading.Event()
    failures: list[str] = []

    def client(address: tuple[str, int]) -> None:
        packet = header() + question(SVC1)
        while not stop.is_set():
            reply = exchange(address, packet)
            if reply is None or dns.message.from_wire(reply).rcode() != dns.rcode.NOERROR:
                failures.append(repr(reply))

    threads = [threading.Thread(target=client, args=(loop.address,)) for loop in loops]
    for thread in threads:
        thread.start()
    try:
        for _ in range(20):
            runtime.replace(cluster())
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        for loop in loops:
            loop.stop()
    assert not failures
    assert responder.errors == 0
