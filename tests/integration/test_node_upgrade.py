"""Upgrades with no lost queries: a new nodecache binds the same address with SO_REUSEPORT,
the old one gets SIGTERM (what the DaemonSet controller does once the new pod is Ready with
``maxSurge: 1``), steps aside, answers what is queued to it, drains and exits.

A steady stream runs across the replacement: ``QUERIES`` queries over ``STREAM_S`` seconds,
from ``FLOWS`` client sockets (so the kernel's reuseport hash spreads them over both
processes), each query sent once (no retries) and counted by (socket, ID), and TCP clients
opening one connection per query. Loopback only; the cluster upstream is an in-process kdns,
the default upstream a scripted one.

Just before the replacement, ``SLOW`` queries go to the old process alone (the new one is not
bound yet) for names the upstream answers only after ``SLOW_S``: the old process is still
draining them well after its SIGTERM. That is the window in which a process that merely stops
taking queries, still in the reuseport group, would drop its share of the stream; stepping
aside sends that share to the new process, and the slow queries still get their answers.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import dns.message
import pytest

from tests.support.cluster import fixture_objects
from tests.support.fault_upstream import Action, FaultUpstream, fault_upstream
from tests.support.servers import RunningServer, running_server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
QUERIES = 4000
STREAM_S = 4.0
FLOWS = 64
TCP_CLIENTS = 4
TCP_PER_CLIENT = 5000  # a bound; the stream's end stops them first
SLOW = 8
SLOW_S = 1.5  # under the 2 s per-try upstream timeout: answered, not SERVFAIL
NAMES = [
    "kubernetes.default.svc.cluster.local.",
    "kube-dns.kube-system.svc.cluster.local.",
    "nothere.default.svc.cluster.local.",
]


@dataclass
class Process:
    popen: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    def logged(self, pattern: str) -> re.Match[str] | None:
        for line in list(self.log):
            if found := re.search(pattern, line):
                return found
        return None


def start_nodecache(listen: str, cluster: RunningServer, other: FaultUpstream) -> Process:
    command = [sys.executable, "-m", "nodecache", "serve", "--listen", listen,
               "--cluster-upstream", f"127.0.0.1:{cluster.port}",
               "--upstream", f"127.0.0.1:{other.port}", "--health-listen", "none"]  # fmt: skip
    popen = subprocess.Popen(
        command, cwd=ROOT, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    process = Process(popen)
    stderr = popen.stderr
    assert stderr is not None
    threading.Thread(
        target=lambda: process.log.extend(iter(stderr.readline, "")), daemon=True
    ).start()
    wait_until(lambda: process.logged(r"serving on 127\.0\.0\.1:\d+"), 15,
               message=f"nodecache did not start: {process.log}")  # fmt: skip
    return process


@dataclass
class Stream:
    """The client side: ``QUERIES`` queries paced over ``STREAM_S``, one send each."""

    port: int
    sent: dict[tuple[int, int], float] = field(default_factory=dict)
    answered: dict[tuple[int, int], float] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)
    _done_sending: threading.Event = field(default_factory=threading.Event)

    def run(self, on_progress: Callable[[int], None]) -> None:
        socks = []
        for _ in range(FLOWS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.connect(("127.0.0.1", self.port))
            sock.setblocking(False)
            socks.append(sock)
        templates = [dns.message.make_query(name, "A", use_edns=0).to_wire() for name in NAMES]
        receiver = threading.Thread(target=self._receive, args=(socks,), daemon=True)
        receiver.start()
        try:
            start = time.monotonic()
            for index in range(QUERIES):
                delay = start + index * STREAM_S / QUERIES - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                flow, query_id = index % FLOWS, index // FLOWS
                packet = query_id.to_bytes(2, "big") + templates[index % len(templates)][2:]
                self.sent[(flow, query_id)] = time.monotonic()
                socks[flow].send(packet)
                on_progress(index)
            self._done_sending.set()
            receiver.join(timeout=5)
        finally:
            for sock in socks:
                sock.close()

    def _receive(self, socks: list[socket.socket]) -> None:
        selector = selectors.DefaultSelector()
        for flow, sock in enumerate(socks):
            selector.register(sock, selectors.EVENT_READ, flow)
        quiet_until: float | None = None
        while True:
            if self._done_sending.is_set():
                if len(self.answered) >= len(self.sent):
                    return
                quiet_until = quiet_until or time.monotonic() + 3.0  # stragglers, then stop
                if time.monotonic() > quiet_until:
                    return
            for key, _ in selector.select(timeout=0.05):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                while True:
                    try:
                        reply = ready.recv(4096)
                    except BlockingIOError:
                        break
                    except ConnectionRefusedError:
                        self.bad.append(f"flow {key.data}: ICMP port unreachable")
                        continue
                    self._check(key.data, reply)

    def _check(self, flow: int, reply: bytes) -> None:
        query_id = int.from_bytes(reply[:2], "big")
        if not reply[2] & 0x80:
            self.bad.append(f"flow {flow} id {query_id}: not a response")
        elif reply[3] & 0xF not in (0, 3):  # NOERROR or NXDOMAIN, never SERVFAIL/REFUSED
            self.bad.append(f"flow {flow} id {query_id}: rcode {reply[3] & 0xF}")
        self.answered[(flow, query_id)] = time.monotonic()


@dataclass
class TCPClients:
    """``TCP_CLIENTS`` threads, each opening one connection per query (as a resolver retrying a
    truncated answer does), back to back until stopped, at most ``TCP_PER_CLIENT`` each."""

    port: int
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for _ in range(TCP_CLIENTS):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        query = dns.message.make_query(NAMES[0], "A").to_wire()
        for _ in range(TCP_PER_CLIENT):
            if self.stop.is_set():
                return
            started = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.sendall(len(query).to_bytes(2, "big") + query)
                    reply = _read_framed(sock)
                ok = reply[:2] == query[:2] and reply[3] & 0xF in (0, 3)  # as the UDP stream
                failure = None if ok else f"bad reply {reply[:4].hex()}"
            except OSError as error:
                failure = repr(error)
            with self._lock:
                self.started.append(started)
                if failure is None:
                    self.ok += 1
                else:
                    self.failures.append(failure)


def _read_framed(sock: socket.socket) -> bytes:
    data = b""
    while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"EOF after {len(data)} bytes")
        data += chunk
    return data[2:]


@pytest.fixture
def kdns_upstream() -> Iterator[RunningServer]:
    with running_server(fixture_objects()) as server:
        yield server


@pytest.fixture
def slow_upstream() -> Iterator[FaultUpstream]:
    records = [f"slow{i}.example.test. 300 IN A 192.0.2.{i + 1}" for i in range(SLOW)]
    with fault_upstream(records) as upstream:
        for i in range(SLOW):
            upstream.plan(f"slow{i}.example.test.", Action("delay", SLOW_S))
        yield upstream


def send_slow(port: int) -> list[socket.socket]:
    socks = []
    for i in range(SLOW):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(SLOW_S + 5)
        sock.connect(("127.0.0.1", port))
        sock.send(dns.message.make_query(f"slow{i}.example.test.", "A").to_wire())
        socks.append(sock)
    return socks


def slow_answers(socks: list[socket.socket]) -> int:
    answered = 0
    for sock in socks:
        with sock:
            try:
                reply = dns.message.from_wire(sock.recv(4096))
            except OSError:
                continue
            answered += bool(reply.answer) and reply.rcode() == 0
    return answered


def test_replacement_under_a_steady_stream_loses_nothing(
    kdns_upstream: RunningServer,
    slow_upstream: FaultUpstream,
    record_property: Callable[[str, object], None],
) -> None:
    old = start_nodecache("127.0.0.1:0", kdns_upstream, slow_upstream)
    found = old.logged(r"serving on 127\.0\.0\.1:(\d+)")
    assert found is not None
    port = int(found.group(1))
    stream = Stream(port)
    tcp = TCPClients(port)
    events: dict[str, float] = {}
    new: list[Process] = []
    slow: list[socket.socket] = []

    def replace_at_a_quarter(index: int) -> None:
        if index == QUERIES // 4:
            threading.Thread(target=replace, daemon=True).start()

    def replace() -> None:
        slow.extend(send_slow(port))  # only the old process is bound: all of them go to it
        events["slow_sent"] = time.monotonic()
        events["slow_sent_wall"] = time.time()
        events["new_started"] = time.monotonic()
        new.append(start_nodecache(f"127.0.0.1:{port}", kdns_upstream, slow_upstream))
        events["sigterm"] = time.monotonic()
        old.popen.send_signal(signal.SIGTERM)
        old.popen.wait(timeout=15)
        events["old_exited"] = time.monotonic()

    try:
        tcp.start()
        stream.run(replace_at_a_quarter)
        tcp.finish()
        wait_until(lambda: "old_exited" in events, 15, message=f"old did not exit: {old.log}")
    finally:
        for process in [old, *new]:
            if process.popen.poll() is None:
                process.popen.terminate()
                process.popen.wait(timeout=10)
    slow_answered = slow_answers(slow)
    lost = [key for key in stream.sent if key not in stream.answered]
    after_exit = [t for t in stream.sent.values() if t > events["old_exited"]]
    tcp_in_handover = [t for t in tcp.started if events["sigterm"] <= t <= events["old_exited"]]
    record_property("queries", len(stream.sent))
    record_property("lost", len(lost))
    record_property("tcp_queries", tcp.ok + len(tcp.failures))
    record_property("tcp_failed", len(tcp.failures))
    sys.stdout.write(
        f"\nupgrade: {len(stream.sent)} queries over {STREAM_S:g} s, {len(lost)} lost; "
        f"old exited {events['old_exited'] - events['sigterm']:.2f} s after SIGTERM; "
        f"{len(after_exit)} queries sent after it exited; {slow_answered}/{SLOW} slow queries "
        f"answered by the old process while it drained; TCP: {tcp.ok + len(tcp.failures)} "
        f"queries on their own connections ({len(tcp_in_handover)} during the handover), "
        f"{len(tcp.failures)} failed (resets)\n"
    )
    assert old.popen.returncode == 0
    assert old.logged("handing over"), old.log
    shutdown = old.logged(r"^(\S+ \S+) INFO \S+: shutting down: no new queries; (\d+) in flight")
    assert shutdown is not None, old.log
    shutdown_at = datetime.strptime(shutdown.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    if shutdown_at < events["slow_sent_wall"] + SLOW_S - 0.2:
        # Only when the old process stopped taking queries well inside the slow answers'
        # window (by its own log's clock): on a loaded machine the replacement's start and the
        # handover can outlast SLOW_S, and then nothing is left in flight to drain.
        assert int(shutdown.group(2)) >= 1, old.log
    assert slow_answered == SLOW
    assert not old.logged("iptables"), "a handover leaves the node plumbing to the successor"
    assert after_exit, "the replacement finished before the stream did"
    assert stream.bad == []
    assert lost == []
    # A connection the kernel queued to the old listener's backlog in the instant before it
    # closed is reset (about 1 in 15,000 here) unless net.ipv4.tcp_migrate_req=1 carries it over:
    # test_node_tcp_handover.py proves that case. Anything else (a timeout, an EOF: a query
    # nodecache took and dropped) fails here.
    resets = [f for f in tcp.failures if f.startswith("ConnectionResetError")]
    assert tcp.failures == resets, tcp.failures[:5]
    assert len(resets) <= 5, "more than the rare backlog race"
    assert tcp_in_handover, "no TCP query was made while the old process handed over"
    assert len(stream.sent) == QUERIES
