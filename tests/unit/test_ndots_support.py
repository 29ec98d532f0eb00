"""The ndots lab's parsers (tests/support/ndots.py, tests/support/dnslog.py), on made-up input:
what the clients print and the frames the query log decodes. The lab itself runs as root in
tests/integration/test_ndots.py."""

from __future__ import annotations

import socket
import struct
import subprocess

import dns.message
import dns.rcode
import pytest

from tests.support import dnslog
from tests.support.ndots import parse_client, parse_getent


@pytest.mark.parametrize(
    ("output", "answer", "micros"),
    [
        pytest.param(
            "addr 192.0.2.1\naddr 2001:db8::1\naddr 192.0.2.1\nus 812\n",
            ("192.0.2.1", "2001:db8::1"),
            (812,),
            id="addresses-sorted-deduplicated",
        ),
        pytest.param("error NONAME\nus 9000 300 280\n", ("error NONAME",), (9000, 300, 280),
                     id="failure-is-an-answer"),
        pytest.param("us 5\n", (), (5,), id="no-address"),
    ],
)  # fmt: skip
def test_parse_client(output: str, answer: tuple[str, ...], micros: tuple[int, ...]) -> None:
    assert parse_client(output) == (answer, micros)


def test_parse_client_without_timing_is_an_error() -> None:
    with pytest.raises(AssertionError, match="no timing"):
        parse_client("addr 192.0.2.1\n")


@pytest.mark.parametrize(
    ("returncode", "stdout", "answer"),
    [
        pytest.param(
            0,
            "192.0.2.1       STREAM www.example.test\n192.0.2.1       DGRAM  \n"
            "2001:db8::1     STREAM \n",
            ("192.0.2.1", "2001:db8::1"),
            id="every-socktype-once",
        ),
        pytest.param(2, "", ("error NONAME",), id="not-found"),
    ],
)
def test_parse_getent(returncode: int, stdout: str, answer: tuple[str, ...]) -> None:
    result = subprocess.CompletedProcess(["getent"], returncode, stdout, "")
    assert parse_getent(result) == answer


def frame(payload: bytes, sport: int, dport: int, proto: int = socket.IPPROTO_UDP) -> bytes:
    """An Ethernet (zero addresses) + IPv4 + UDP frame from 10.53.0.53 to 10.53.0.10."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, proto, 0,
        socket.inet_aton("10.53.0.53"), socket.inet_aton("10.53.0.10"),
    )  # fmt: skip
    return b"\0" * 12 + b"\x08\x00" + ip + udp


QUERY = dns.message.make_query("www.example.test.shop.svc.cluster.local.", "AAAA")
REPLY = dns.message.make_response(QUERY)
REPLY.set_rcode(dns.rcode.NXDOMAIN)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            frame(QUERY.to_wire(), 40000, 53),
            {"src": "10.53.0.53:40000", "dst": "10.53.0.10:53", "qr": False,
             "name": "www.example.test.shop.svc.cluster.local.", "type": "AAAA",
             "rcode": "NOERROR", "answer": []},
            id="query",
        ),
        pytest.param(
            frame(REPLY.to_wire(), 53, 40000),
            {"src": "10.53.0.53:53", "dst": "10.53.0.10:40000", "qr": True,
             "name": "www.example.test.shop.svc.cluster.local.", "type": "AAAA",
             "rcode": "NXDOMAIN", "answer": []},
            id="reply",
        ),
        pytest.param(frame(b"\x01\x02", 40000, 53),
                     {"src": "10.53.0.53:40000", "dst": "10.53.0.10:53", "garbage": True},
                     id="not-dns"),
        pytest.param(frame(QUERY.to_wire(), 40000, 8080), None, id="other-port"),
        pytest.param(frame(QUERY.to_wire(), 40000, 53, socket.IPPROTO_TCP), None, id="tcp"),
        pytest.param(b"\0" * 20, None, id="runt"),
    ],
)  # fmt: skip
def test_query_log_decodes_frames(data: bytes, expected: dict[str, object] | None) -> None:
    assert dnslog.decode(data) == expected
