"""Zone transfer (``transfer: {to: [CIDR...]}``): ``dig AXFR`` and ``IXFR`` from an allowed
address (127.0.0.1) and a refused one (127.0.0.2), REFUSED over UDP on both loops, NOTAUTH off
the apex, a 10,000-Service zone in bounded messages while other clients keep being answered,
and the cap on concurrent transfers."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdns import wire
from kdns.config import ConfigError, ZoneConfig, build_config
from kdns.model import KubeObject, Namespace, Service, ServicePort
from kdns.runtime import Runtime
from kdns.serve.protocol import Responder
from kdns.serve.transfer import MESSAGE_SIZE, ZoneTransfer
from kdns.zonefile import render
from tests.support.cluster import fixture_objects
from tests.support.dnscase import expected_lines, normalize_line
from tests.support.servers import RunningServer, running_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ALLOW = (ipaddress.ip_network("127.0.0.1/32"),)
needs_dig = pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with running_server(fixture_objects(), transfer_to=ALLOW) as running:
        yield running


@pytest.fixture(scope="module")
def python_loop_server() -> Iterator[RunningServer]:
    with running_server(fixture_objects(), transfer_to=ALLOW, python_udp_loop=True) as running:
        yield running


def dig(server: RunningServer, *args: str, source: str = "127.0.0.1") -> str:
    result = subprocess.run(
        ["dig", f"@{server.host}", "-p", str(server.port), "-b", source, "+nocookie", *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return result.stdout


def record_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip() and not line.startswith(";")]


def zone_lines(server: RunningServer) -> set[str]:
    table = server.runtime.table
    assert table is not None
    rendered = render(table.index, ("cluster", "local")).splitlines()
    return expected_lines(tuple(line for line in rendered if not line.startswith(";")))


@needs_dig
@pytest.mark.parametrize("qtype", ["AXFR", "IXFR=1"])
def test_dig_transfer_from_an_allowed_address_is_the_whole_zone(
    server: RunningServer, qtype: str
) -> None:
    lines = record_lines(dig(server, "cluster.local.", qtype))
    assert lines, "no records transferred"
    assert lines[0].split()[3] == "SOA"
    assert lines[-1].split()[3] == "SOA"
    transferred: set[str] = set()
    for line in lines:
        transferred |= normalize_line(line)
    assert transferred == zone_lines(server)
    assert "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1" in {" ".join(x.split()) for x in lines}


@needs_dig
@pytest.mark.parametrize("qtype", ["AXFR", "IXFR=1"])
def test_dig_transfer_from_another_address_is_refused(server: RunningServer, qtype: str) -> None:
    output = dig(server, "cluster.local.", qtype, source="127.0.0.2")
    assert "Transfer failed" in output or "REFUSED" in output, output
    assert not record_lines(output), output


def frames(
    server: RunningServer, qname: str, qtype: str = "AXFR", timeout: float = 60.0
) -> list[bytes]:
    """Every message of one transfer, read off a plain TCP socket until the closing SOA (or
    the first message when it is an error)."""
    query = dns.message.make_query(qname, qtype).to_wire()
    out: list[bytes] = []
    soas = 0
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">H", len(query)) + query)
        reader = sock.makefile("rb")
        while soas < 2:
            (length,) = struct.unpack(">H", reader.read(2))
            frame = reader.read(length)
            out.append(frame)
            message = dns.message.from_wire(frame, one_rr_per_rrset=True)
            if message.rcode() != dns.rcode.NOERROR:
                break
            soas += sum(1 for rrset in message.answer if rrset.rdtype == dns.rdatatype.SOA)
    return out


@pytest.mark.parametrize(
    ("qname", "rcode"),
    [("svc.cluster.local.", "NOTAUTH"), ("example.com.", "NOTAUTH"), ("in-addr.arpa.", "NOTAUTH")],
    ids=["below-the-apex", "outside", "reverse-zone"],
)
def test_transfer_of_a_name_that_is_not_a_cluster_zone_is_notauth(
    server: RunningServer, qname: str, rcode: str
) -> None:
    [frame] = frames(server, qname)
    assert dns.rcode.to_text(dns.message.from_wire(frame).rcode()) == rcode


@pytest.mark.parametrize("loop", ["c-loop", "python-loop"])
@pytest.mark.parametrize("qtype", ["AXFR", "IXFR"])
def test_transfer_over_udp_is_refused(
    server: RunningServer, python_loop_server: RunningServer, loop: str, qtype: str
) -> None:
    target = python_loop_server if loop == "python-loop" else server
    reply = target.query(dns.message.make_query("cluster.local.", qtype), "udp")
    assert dns.rcode.to_text(reply.rcode()) == "REFUSED"
    assert not reply.answer


def big_cluster(services: int) -> list[KubeObject]:
    objects: list[KubeObject] = [Namespace(f"ns{n}") for n in range(10)]
    for i in range(services):
        ip = f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"
        objects.append(Service(f"ns{i % 10}", f"service-{i}", cluster_ips=(ip,),
                               ports=(ServicePort("http", 80),)))  # fmt: skip
    return objects


def test_a_10000_service_zone_in_bounded_messages_while_others_are_answered() -> None:
    with running_server(big_cluster(10_000), transfer_to=ALLOW) as big:
        result: dict[str, list[bytes]] = {}
        worker = threading.Thread(
            target=lambda: result.setdefault("frames", frames(big, "cluster.local."))
        )
        worker.start()
        latencies: list[float] = []
        probe = dns.message.make_query("service-7.ns7.svc.cluster.local.", "A")
        deadline = time.monotonic() + 60
        while worker.is_alive() and len(latencies) < 2000 and time.monotonic() < deadline:
            started = time.monotonic()
            transport = "tcp" if len(latencies) % 2 else "udp"
            reply = big.query(probe, transport)  # raises on a 3 s timeout
            latencies.append(time.monotonic() - started)
            assert [rrset.to_text() for rrset in reply.answer] == [
                "service-7.ns7.svc.cluster.local. 5 IN A 10.96.0.7"
            ]
        worker.join(timeout=60)
        messages = result["frames"]
        assert len(messages) > 10
        assert all(len(frame) <= MESSAGE_SIZE for frame in messages)
        names = set()
        for frame in messages:
            for rrset in dns.message.from_wire(frame).answer:
                if rrset.rdtype == dns.rdatatype.A:
                    names.add(rrset.name.to_text())
        assert len([n for n in names if n.startswith("service-")]) == 10_000
        assert latencies, "the transfer ended before any other query was sent"
        assert max(latencies) < 3.0


def test_at_most_max_concurrent_transfers_run_and_a_closed_one_frees_its_slot(
    server: RunningServer,
) -> None:
    transfer = ZoneTransfer(server.responder, ALLOW, max_concurrent=1)
    query = dns.message.make_query("cluster.local.", "AXFR").to_wire()
    peer = ("127.0.0.1", 40000)
    first = transfer.answer(query, peer)
    assert isinstance(first, Iterator)
    busy = transfer.answer(query, peer)
    assert isinstance(busy, bytes)
    assert busy[3] & 0xF == wire.REFUSED
    first.close()  # never started: the slot is still freed
    second = transfer.answer(query, peer)
    assert isinstance(second, Iterator)
    assert len(list(second)) >= 1
    assert transfer.active == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [({"to": ["10.0.0.0/8", "nope"]}, "transfer.to[1]: 'nope' is not an IP network"),
     (["10.0.0.0/8"], "transfer: expected a mapping with the key 'to'"),
     ({"from": ["10.0.0.0/8"]}, "transfer: expected a mapping")],
    ids=["bad-cidr", "not-a-mapping", "unknown-key"],
)  # fmt: skip
def test_transfer_config_errors_name_the_field(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build_config({"transfer": value})
    assert message in str(raised.value)


@needs_dig
def test_kdns_serve_wires_transfer_custom_records_and_rewrite_from_its_config(
    tmp_path: Path,
) -> None:
    """The CLI end to end: one config file with ``transfer``, ``records`` and ``rewrite``."""
    from tests.integration.test_cli import DEMO, _logged, _start

    config = tmp_path / "kdns.yaml"
    config.write_text(
        "transfer: {to: [127.0.0.1/32]}\n"
        "records: ['db.corp.test. 30 IN A 192.0.2.10']\n"
        "rewrite: ['name suffix .corp.example. .svc.cluster.local. answer auto']\n"
    )
    process, log = _start(["--manifests", str(DEMO), "--listen", "127.0.0.1:0", "--upstream",
                           "none", "--health-listen", "none", "--config", str(config)])  # fmt: skip
    try:
        port = wait_until(
            lambda: _logged(log, r"serving on 127\.0\.0\.1:(\d+)"), timeout=20, message="no port"
        )
        served = RunningServer("127.0.0.1", port, None, None, None)  # type: ignore[arg-type]
        assert "192.0.2.10" in dig(served, "+short", "db.corp.test.")
        assert "10.96.10.11" in dig(served, "+short", "cart.shop.corp.example.")
        lines = record_lines(dig(served, "cluster.local.", "AXFR"))
        assert any(line.startswith("cart.shop.svc.cluster.local.") for line in lines)
        assert not record_lines(dig(served, "cluster.local.", "AXFR", source="127.0.0.2"))
        assert any("zone transfers allowed to 127.0.0.1/32" in line for line in log)
    finally:
        process.terminate()
        process.wait(timeout=10)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=60),
    tail=st.sampled_from([b"\x00\x00\xfc\x00\x01", b"\x00\x00\xfb\x00\x01", b"\x00\x00\xfc"]),
)
def test_malformed_transfer_questions_never_raise(body: bytes, tail: bytes) -> None:
    """Whatever follows a header, a question ending in AXFR/IXFR is answered or dropped."""
    transfer = ZoneTransfer(_FUZZ_SERVER, ALLOW)
    reply = transfer.answer(b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + body + tail,
                            ("127.0.0.1", 1))  # fmt: skip
    if isinstance(reply, Iterator):
        for message in reply:
            dns.message.from_wire(message)
    assert transfer.active == 0
    assert _FUZZ_SERVER.errors == 0


_FUZZ_SERVER = Responder()
Runtime(ZoneConfig(), _FUZZ_SERVER).replace(fixture_objects())
