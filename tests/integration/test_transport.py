"""Transports over real sockets: UDP drops, TCP framing, pipelining, idle timeout, dig/kdig."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time

import dns.message
import dns.rcode
import pytest

from tests.support.cluster import fixture_objects
from tests.support.servers import RunningServer, read_frame, running_server

pytestmark = pytest.mark.integration


@pytest.fixture(name="server", scope="module")
def _server() -> RunningServer:
    with running_server(fixture_objects(), idle_timeout_s=0.5) as server:
        yield server  # type: ignore[misc]


def framed(message: dns.message.Message) -> bytes:
    wire = message.to_wire()
    return struct.pack(">H", len(wire)) + wire


def test_udp_drops_responses_and_runts(server: RunningServer) -> None:
    response = dns.message.make_response(
        dns.message.make_query("svc1.testns.svc.cluster.local", "A")
    )
    assert server.raw_udp(response.to_wire(), timeout=0.3) is None
    assert server.raw_udp(b"\x00\x01\x02", timeout=0.3) is None
    # and the server still answers afterwards
    reply = server.query(dns.message.make_query("svc1.testns.svc.cluster.local", "A"))
    assert reply.answer


def test_tcp_pipelined_queries_answered_in_order(server: RunningServer) -> None:
    names = [
        "svc1.testns.svc.cluster.local",
        "nope.testns.svc.cluster.local",
        "hdls1.testns.svc.cluster.local",
    ]
    queries = [dns.message.make_query(name, "A", id=1000 + i) for i, name in enumerate(names * 5)]
    with socket.create_connection((server.host, server.port), timeout=3) as sock:
        sock.sendall(b"".join(framed(q) for q in queries))  # all at once, one segment
        replies = [dns.message.from_wire(read_frame(sock)) for _ in queries]
    assert [r.id for r in replies] == [q.id for q in queries]
    assert [dns.rcode.to_text(r.rcode()) for r in replies[:3]] == ["NOERROR", "NXDOMAIN", "NOERROR"]


def test_tcp_idle_connection_is_closed(server: RunningServer) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(framed(dns.message.make_query("svc1.testns.svc.cluster.local", "A")))
        read_frame(sock)
        started = time.monotonic()
        assert sock.recv(1) == b"", "the server closes the idle connection"
        assert time.monotonic() - started < 4


def test_tcp_axfr_refused(server: RunningServer) -> None:
    reply = server.query(dns.message.make_query("cluster.local", "AXFR"), "tcp")
    assert reply.rcode() == dns.rcode.REFUSED


def test_tcp_garbage_frame_gets_formerr_and_connection_survives(server: RunningServer) -> None:
    with socket.create_connection((server.host, server.port), timeout=3) as sock:
        junk = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab"
        sock.sendall(struct.pack(">H", len(junk)) + junk)
        assert (
            dns.message.from_wire(read_frame(sock), question_only=True).rcode() == dns.rcode.FORMERR
        )
        sock.sendall(framed(dns.message.make_query("svc1.testns.svc.cluster.local", "A")))
        assert dns.message.from_wire(read_frame(sock)).answer


@pytest.mark.parametrize("tool", ["dig", "kdig"])
def test_dig_smoke(server: RunningServer, tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(
            f"{tool} is not installed (Debian: dnsutils / knot-dnsutils); ./dev test installs it as root"
        )
    base = [tool, f"@{server.host}", "-p", str(server.port)]
    out = subprocess.run([*base, "+short", "svc1.testns.svc.cluster.local"], capture_output=True,
                         text=True, timeout=10, check=True).stdout  # fmt: skip
    assert out.split() == ["10.0.0.1"]
    out = subprocess.run([*base, "+short", "SRV", "_http._tcp.svc1.testns.svc.cluster.local"],
                         capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    assert out.split() == ["0", "100", "80", "svc1.testns.svc.cluster.local."]
    out = subprocess.run([*base, "+tcp", "nope.testns.svc.cluster.local"], capture_output=True,
                         text=True, timeout=10, check=True).stdout  # fmt: skip
    assert "status: NXDOMAIN" in out
    assert "flags: qr aa" in out.lower(), "authoritative answer"
