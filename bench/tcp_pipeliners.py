"""Memory held by TCP clients that pipeline queries and never read the replies (issue 11 item 5).

For kdns (serving examples/demo-cluster.yaml) and nodecache (in front of that kdns), each run as
its own process from the source tree ``--source`` (default: this checkout; pass another
worktree to measure the code before a change): open ``--connections`` TCP connections, each
from its own loopback address (127.0.X.Y, so no per-client limit applies), each with a
``--rcvbuf`` receive buffer, and push pipelined queries for ``cart.shop.svc.cluster.local A``
on every one until the server stops reading them (at most ``--max-queries`` per connection and
``--fill-seconds`` in all). The clients never read. Then:

* ``held``: the server's RSS (VmRSS from /proc) with the pipeliners connected, the largest
  seen over ``--hold-seconds`` (the servers with a write timeout close them within it);
* ``after``: the RSS ``--settle-seconds`` after the clients closed their sockets;
* ``open``: how many of the connections the server still had open at the end of the hold
  (the client sees EOF or a reset when the server closed one).

Prints one Markdown table row per server; progress goes to stderr. Bounded in connections,
queries and time; both servers are stopped on the way out (by their own pid).

Usage: python3 bench/tcp_pipeliners.py [--source DIR] [--connections 1024] [--rcvbuf 4096]
                                       [--max-queries 20000] [--fill-seconds 60]
                                       [--hold-seconds 8] [--settle-seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "cart.shop.svc.cluster.local"


def query_frame(qid: int) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode() for part in NAME.split("."))
    wire = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + b"\x00\x01\x00\x01"
    return struct.pack(">H", len(wire)) + wire


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def server(argv: list[str], source: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    env = {**os.environ, "PYTHONPATH": str(source)}
    process = subprocess.Popen(
        [sys.executable, *argv], cwd=source, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        port = None
        deadline = time.monotonic() + 30
        for line in process.stderr:
            found = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
            if time.monotonic() > deadline:
                break
        if port is None:
            raise RuntimeError(f"{argv[:3]} did not report its port")
        # Keep reading its log so it never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in process.stderr or ()], daemon=True).start()
        yield process, port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def answered_once(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(query_frame(1))
        sock.recv(4096)


def source_address(index: int) -> str:
    return f"127.0.{1 + index // 250}.{2 + index % 250}"


def pipeliners(port: int, count: int, rcvbuf: int) -> list[socket.socket]:
    socks = []
    for index in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # Small, so the queries pile up in the server, not in our own kernel buffers.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        sock.bind((source_address(index), 0))
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
    return socks


def fill(socks: list[socket.socket], max_queries: int, seconds: float) -> int:
    """Push queries round-robin until every socket would block twice running (the server
    stopped reading it) or was closed; returns the queries sent."""
    frame = query_frame(2)
    batch = frame * 64
    sent = dict.fromkeys(range(len(socks)), 0)
    blocked = dict.fromkeys(range(len(socks)), 0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        active = [i for i in sent if blocked[i] < 2 and sent[i] < max_queries]
        if not active:
            break
        for i in active:
            try:
                n = socks[i].send(batch)
                sent[i] += n // len(frame)
                blocked[i] = 0
            except BlockingIOError:
                blocked[i] += 1
            except OSError:
                blocked[i] = 2
        select.select([], [], [], 0.05)
    return sum(sent.values())


TCP_ESTABLISHED = 1


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed or reset the connection (TCP_INFO's state is no longer
    ESTABLISHED: CLOSE_WAIT after its FIN, CLOSE after its RST), whatever is still unread."""
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return state != TCP_ESTABLISHED


def measure(name: str, argv: list[str], source: Path, args: argparse.Namespace) -> str:
    with server(argv, source) as (process, port):
        answered_once(port)
        time.sleep(1)
        before = rss_kib(process.pid)
        socks = pipeliners(port, args.connections, args.rcvbuf)
        sent = fill(socks, args.max_queries, args.fill_seconds)
        held = rss_kib(process.pid)
        hold_end = time.monotonic() + args.hold_seconds
        while time.monotonic() < hold_end:
            held = max(held, rss_kib(process.pid))
            time.sleep(0.2)
        still_open = sum(not closed_by_server(sock) for sock in socks)
        for sock in socks:
            sock.close()
        time.sleep(args.settle_seconds)
        after = rss_kib(process.pid)
        answered_once(port)  # still serving
    print(
        f"{name}: before {before} KiB, held {held} KiB, after {after} KiB, "
        f"{still_open} of {len(socks)} open, {sent} queries",
        file=sys.stderr,
    )
    mib = 1024
    return (
        f"| {name} | {before / mib:.1f} | {held / mib:.1f} (+{(held - before) / mib:.1f}) | "
        f"{after / mib:.1f} (+{(after - before) / mib:.1f}) | {still_open} / {len(socks)} | "
        f"{sent:,} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT)
    parser.add_argument("--connections", type=int, default=1024)
    parser.add_argument("--rcvbuf", type=int, default=4096)
    parser.add_argument("--max-queries", type=int, default=20_000)
    parser.add_argument("--fill-seconds", type=float, default=60.0)
    parser.add_argument("--hold-seconds", type=float, default=8.0)
    parser.add_argument("--settle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    source = args.source.resolve()
    demo = source / "examples" / "demo-cluster.yaml"
    kdns = ["-m", "kdns", "serve", "--manifests", str(demo), "--listen", "127.0.0.1:0",
            "--health-listen", "none", "--upstream", "none"]  # fmt: skip
    rows = [measure("kdns", kdns, source, args)]
    with server(kdns, source) as (_kdns, kdns_port):
        nodecache = ["-m", "nodecache", "serve", "--listen", "127.0.0.1:0", "--cluster-upstream",
                     f"127.0.0.1:{kdns_port}", "--upstream", "none", "--health-listen", "none"]  # fmt: skip
        rows.append(measure("nodecache", nodecache, source, args))
    print(f"source: {source} ({args.connections} connections, SO_RCVBUF {args.rcvbuf})\n")
    print(
        "| server | RSS before (MiB) | held | after close + settle | open at end of hold | queries sent |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
