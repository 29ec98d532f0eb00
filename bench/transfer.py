"""A zone transfer of a large cluster zone, and what the other clients see meanwhile.

A kdns server (in this process, as the tests run one) serves ``--services`` ClusterIP Services
with transfers allowed to 127.0.0.1. One thread reads an AXFR off a plain TCP socket (frames
counted, not parsed, so the client costs little); meanwhile the main thread sends one query at
a time, alternating UDP and TCP on fresh connections, until the transfer ends (bounded by
``--max-probes`` and a deadline). It prints the transfer's time, messages and bytes, and the
probe latencies per transport (p50, p99, max).

Usage: python bench/transfer.py [--services 10000] [--max-probes 5000]
"""

from __future__ import annotations

import argparse
import socket
import struct
import threading
import time

import dns.message

from kdns import wire
from tests.integration.test_transfer import ALLOW, big_cluster
from tests.support.servers import RunningServer, running_server


def read_transfer(server: RunningServer, result: dict[str, float]) -> None:
    query = dns.message.make_query("cluster.local.", "AXFR").to_wire()
    started = time.monotonic()
    messages = size = soas = 0
    with socket.create_connection((server.host, server.port), timeout=60) as sock:
        sock.sendall(struct.pack(">H", len(query)) + query)
        reader = sock.makefile("rb")
        while soas < 2:
            (length,) = struct.unpack(">H", reader.read(2))
            frame = reader.read(length)
            messages, size = messages + 1, size + length
            soas += soa_count(frame)
    result.update(seconds=time.monotonic() - started, messages=messages, bytes=size)


def soa_count(frame: bytes) -> int:
    """SOA records in a message's answer section (the first and the last of a transfer)."""
    (ancount,) = struct.unpack_from(">H", frame, 6)
    offset = wire.parse_question(frame).end
    count = 0
    for _ in range(ancount):
        rtype, _fixed, offset = wire.skip_rr(frame, offset)
        count += rtype == wire.SOA
    return count


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--max-probes", type=int, default=5000)
    args = parser.parse_args()
    with running_server(big_cluster(args.services), transfer_to=ALLOW) as server:
        result: dict[str, float] = {}
        worker = threading.Thread(target=read_transfer, args=(server, result))
        latencies: dict[str, list[float]] = {"udp": [], "tcp": []}
        probe = dns.message.make_query("service-7.ns7.svc.cluster.local.", "A")
        deadline = time.monotonic() + 120
        worker.start()
        sent = 0
        while worker.is_alive() and sent < args.max_probes and time.monotonic() < deadline:
            transport = "tcp" if sent % 2 else "udp"
            started = time.monotonic()
            server.query(probe, transport)
            latencies[transport].append(time.monotonic() - started)
            sent += 1
        worker.join(timeout=120)
    print(
        f"{args.services} Services: transfer {result['seconds']:.2f} s, "
        f"{int(result['messages'])} messages, {int(result['bytes'])} bytes"
    )
    for transport, values in latencies.items():
        if values:
            print(
                f"{transport}: {len(values)} queries during it, p50 "
                f"{percentile(values, 0.5) * 1000:.2f} ms, p99 {percentile(values, 0.99) * 1000:.2f}"
                f" ms, max {max(values) * 1000:.2f} ms"
            )


if __name__ == "__main__":
    main()
