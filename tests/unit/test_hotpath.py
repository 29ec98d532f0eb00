"""kdns.dns.hotpath, and its C twins in kdns/serve/_fastpath.c, function by function.

The shape rule, the flag-variant index, the UDP size limit and the reply's assembly exist once in
Python (kdns.dns.hotpath) and once in C; here both are given the same random and garbled
packets (hypothesis) and must agree exactly. Then: a table of shapes with what ``fast_key``
must say, and the proof that the C loop is engaged when a server opts in (so renaming a Python
private cannot silently turn the accelerator off).
"""

from __future__ import annotations

import os
import socket
import struct
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdns.dns import hotpath
from kdns.serve import accel
from tests.support.cluster import fixture_objects
from tests.support.servers import running_server

_fastpath: ModuleType | None
try:
    from kdns.serve import _fastpath
except ImportError:  # pragma: no cover - depends on the build
    _fastpath = None

needs_extension = pytest.mark.skipif(_fastpath is None, reason="kdns.serve._fastpath not built")

NAME = b"\x04SvC1\x06TESTNS\x03svc\x07cluster\x05local\x00"
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
OPT_DO = b"\x00\x00\x29\x10\x00\x00\x00\x80\x00\x00\x00"


def header(flags: int = 0x0100, ar: int = 0) -> bytes:
    return struct.pack(">HHHHHH", 0x1234, flags, 1, 0, 0, ar)


def key_of(name: bytes, qtype: int = 1) -> bytes:
    return name.lower() + struct.pack(">HH", qtype, 1)


A = struct.pack(">HH", 1, 1)
QEND = 12 + len(NAME) + 4

SHAPES = [
    # (packet, what fast_key says)
    pytest.param(header() + NAME + A, (key_of(NAME), QEND, 1), id="plain-rd"),
    pytest.param(header(0x0000) + NAME + A, (key_of(NAME), QEND, 0), id="no-rd"),
    pytest.param(header(0x0110) + NAME + A, (key_of(NAME), QEND, 3), id="rd-cd"),
    pytest.param(header(0x0010) + NAME + A, (key_of(NAME), QEND, 2), id="cd"),
    pytest.param(header(ar=1) + NAME + A + OPT, (key_of(NAME), QEND, 5), id="edns"),
    pytest.param(header(ar=1) + NAME + A + OPT_DO, (key_of(NAME), QEND, 13), id="edns-do"),
    pytest.param(header(0x0100, 1) + NAME + b"\x00\x41\x00\x41" + OPT, (NAME.lower() + b"\x00\x41\x00\x41", QEND, 5), id="type-class-not-folded"),
    pytest.param(header(ar=1) + NAME + A + OPT[:6] + b"\x01" + OPT[7:], None, id="edns-version-1"),
    pytest.param(header(ar=1) + NAME + A + OPT[:-1], None, id="short-opt"),
    pytest.param(header(ar=1) + NAME + A + OPT + b"\x00", None, id="opt-then-trailing"),
    pytest.param(header() + NAME + A + b"\x00", None, id="trailing-byte"),
    pytest.param(header() + NAME + A[:3], None, id="cut-question"),
    pytest.param(header(0x8100) + NAME + A, None, id="response"),
    pytest.param(header(0x2100) + NAME + A, None, id="opcode-notify"),
    pytest.param(header(ar=2) + NAME + A + OPT, None, id="two-additionals"),
    pytest.param(header()[:11], None, id="runt"),
    pytest.param(b"", None, id="empty"),
]  # fmt: skip


@pytest.mark.parametrize(("packet", "expected"), SHAPES)
def test_fast_key_shapes(packet: bytes, expected: tuple[bytes, int, int] | None) -> None:
    assert hotpath.fast_key(packet) == expected
    if _fastpath is not None:
        assert _fastpath.fast_key(packet) == expected


LIMITS = [
    # (OPT payload or None, max_udp_size, limit)
    pytest.param(None, 1232, 512, id="no-edns"),
    pytest.param(0, 1232, 512, id="payload-0"),
    pytest.param(511, 1232, 512, id="payload-511"),
    pytest.param(1232, 1232, 1232, id="payload-max"),
    pytest.param(4096, 1232, 1232, id="payload-over-max"),
    pytest.param(700, 1232, 700, id="payload-between"),
    pytest.param(65535, 65535, 65535, id="largest"),
]


@pytest.mark.parametrize(("payload", "ceiling", "limit"), LIMITS)
def test_udp_limit(payload: int | None, ceiling: int, limit: int) -> None:
    opt = (
        b"" if payload is None else b"\x00\x00\x29" + struct.pack(">HBBBBH", payload, 0, 0, 0, 0, 0)
    )
    packet = header(ar=0 if payload is None else 1) + NAME + A + opt
    fast = hotpath.fast_key(packet)
    assert fast is not None
    _, qend, variant = fast
    assert hotpath.udp_limit(packet, qend, variant, ceiling) == limit
    if _fastpath is not None:
        assert _fastpath.udp_limit(packet, qend, variant, ceiling) == limit


@st.composite
def garbled(draw: st.DrawFn) -> bytes:
    """Mostly well-shaped queries, often cut, extended or with one byte changed."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=80))
    flags = draw(st.sampled_from([0x0000, 0x0100, 0x0010, 0x0110, 0x8100, 0x2100, 0x0170]))
    ar = draw(st.sampled_from([0, 0, 1, 1, 2]))
    counts = draw(st.sampled_from([(1, 0, 0, ar), (1, 0, 0, ar), (0, 0, 0, 0), (1, 1, 0, 0)]))
    name = draw(st.sampled_from([NAME, b"\x00", b"\x03ABC\x00", b"\x03a\x00b\x00", b"\xc0\x0c"]))
    packet = struct.pack(">HH4H", draw(st.integers(0, 0xFFFF)), flags, *counts) + name
    packet += struct.pack(">HH", draw(st.integers(0, 0xFFFF)), draw(st.sampled_from([1, 0x41])))
    if draw(st.booleans()):
        payload = draw(st.integers(0, 0xFFFF))
        version = draw(st.sampled_from([0, 0, 0, 1]))
        do = draw(st.sampled_from([0, 0x80, 0xFF]))
        options = draw(st.binary(max_size=12))
        rdlen = draw(st.sampled_from([len(options)] * 4 + [len(options) + 1, 0]))
        packet += b"\x00\x00\x29" + struct.pack(">HBBBBH", payload, 0, version, do, 0, rdlen)
        packet += options
    tail = draw(st.sampled_from(["whole"] * 6 + ["cut", "extra", "flip"]))
    if tail == "cut":
        packet = packet[: draw(st.integers(0, len(packet)))]
    elif tail == "extra":
        packet += draw(st.binary(min_size=1, max_size=4))
    elif tail == "flip" and packet:
        at = draw(st.integers(0, len(packet) - 1))
        packet = packet[:at] + bytes([draw(st.integers(0, 255))]) + packet[at + 1 :]
    return packet


HEADS = tuple(bytes([0x81 + i, 0x80, 0, 1, 0, 1, 0, 0, 0, i & 4 and 1]) for i in range(8))
OPTS = (
    b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00",
    b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00",
)


@needs_extension
@settings(max_examples=int(os.environ.get("KDNS_PROPERTY_EXAMPLES", "1500")), deadline=None)
@given(
    packet=garbled(), ceiling=st.sampled_from([512, 1232, 4096, 65535]), body=st.binary(max_size=40)
)
def test_c_twins_equal_python(packet: bytes, ceiling: int, body: bytes) -> None:
    assert _fastpath is not None
    fast = hotpath.fast_key(packet)
    assert _fastpath.fast_key(packet) == fast
    if fast is None:
        return
    _, qend, variant = fast
    assert _fastpath.udp_limit(packet, qend, variant, ceiling) == hotpath.udp_limit(
        packet, qend, variant, ceiling
    )
    assert _fastpath.assemble(packet, qend, variant, HEADS, body, OPTS) == hotpath.assemble(
        packet, qend, variant, HEADS, body, OPTS
    )


# --- the C loop is engaged when a server opts in ----------------------------------------------


def exchange(address: tuple[str, int], packet: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(packet, address)
        return sock.recv(65535)


NXDOMAIN = b"\x04nope\x06testns\x03svc\x07cluster\x05local\x00"


@pytest.mark.integration
def test_the_c_loop_serves_hits_and_memo_hits_when_engaged() -> None:
    """Fails if the accelerator is built and allowed but a kdns server's UDP loop does not
    answer table hits and memoized NXDOMAINs in C (e.g. after a rename on the Python side)."""
    with running_server(fixture_objects()) as server:
        assert server.udp is not None
        address = (server.host, server.port)
        queries = [header() + NAME + A, header(ar=1) + NAME + A + OPT_DO]
        queries += [header() + NXDOMAIN + A] * 3  # the first is resolved (and memoized) in Python
        for packet in queries:
            assert exchange(address, packet) == server.responder.answer(packet)
        if not accel.available:
            assert server.udp.loop is None, accel.reason
            assert not server.udp.accelerated
            return
        assert server.udp.accelerated
        assert server.udp.loop is not None
        assert server.udp.loop.answered == 4, "hits 2, memo hits 2, and one miss to Python"
