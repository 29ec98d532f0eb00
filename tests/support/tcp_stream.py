"""TCP DNS clients for a fixed time, one connection per query: run inside a network namespace
by tests/integration/test_node_tcp_handover.py.

``python tests/support/tcp_stream.py HOST PORT SECONDS CLIENTS`` runs CLIENTS threads, each
connecting, sending one query for ``kube-dns.kube-system.svc.cluster.local. A``, reading the
framed reply and closing, back to back for SECONDS (at most 20,000 queries per thread). It then
prints one JSON object: ``ok``, ``failures`` (the first 20, as repr), ``failed`` and
``started`` (each query's CLOCK_MONOTONIC start, the same clock in every namespace).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

import dns.message

PER_CLIENT_LIMIT = 20_000


def main() -> None:
    host, port, seconds, clients = (
        sys.argv[1],
        int(sys.argv[2]),
        float(sys.argv[3]),
        int(sys.argv[4]),
    )
    query = dns.message.make_query("kube-dns.kube-system.svc.cluster.local.", "A").to_wire()
    framed = len(query).to_bytes(2, "big") + query
    end = time.monotonic() + seconds
    lock = threading.Lock()
    ok = 0
    failures: list[str] = []
    started: list[float] = []

    def one() -> str | None:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(framed)
            data = b""
            while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
                chunk = sock.recv(4096)
                if not chunk:
                    return f"EOF after {len(data)} bytes"
                data += chunk
        reply = data[2:]
        return (
            None if reply[:2] == query[:2] and reply[3] & 0xF == 0 else f"reply {reply[:4].hex()}"
        )

    def run() -> None:
        nonlocal ok
        for _ in range(PER_CLIENT_LIMIT):
            now = time.monotonic()
            if now >= end:
                return
            try:
                failure = one()
            except OSError as error:
                failure = repr(error)
            with lock:
                started.append(now)
                if failure is None:
                    ok += 1
                else:
                    failures.append(failure)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = {"ok": ok, "failed": len(failures), "failures": failures[:20], "started": started}
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
