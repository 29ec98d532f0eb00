"""Issue 11's starvation scenario: a slow (or dead) external upstream, a flood of unique external
names through nodecache, and cluster-name lookups timed all the while.

Three processes from the tree under test (``--tree``, default this checkout; ``--python``,
default that tree's ``.venv/bin/python``): kdns serving ``examples/demo-cluster.yaml``
(``--upstream none``), a stdlib UDP upstream that answers every name after ``--delay`` seconds
(``--delay -1``: never), and nodecache with kdns as its cluster upstream and that upstream as its
default route (search-path absorption off, so every cluster lookup is asked of kdns). From this
process: a flood of unique external names (``--rate`` a second for ``--flood`` seconds, fire and
forget) and a prober that asks a unique cluster-zone name (a miss each time: NXDOMAIN from
kdns) every ``--probe-every`` seconds, from before the flood until ``--after`` seconds after it,
each with a ``--timeout`` (a lookup that times out counts as lost, at the timeout).

``--autopath``: the same through nodecache's search-path absorption, as a ClusterFirst pod in
namespace ``default`` sees it: both the flood and the prober send from ``POD_SOURCE`` (trusted
with ``--autopath-clients``), the flood as first search expansions of external names
(``x....flood.example.default.svc.cluster.local``, which nodecache walks, ending at the slow
upstream), the prober as first expansions of pod names that exist
(``10-244-A-B.shop.pod.default.svc.cluster.local``: the walk finds
``10-244-A-B.shop.pod.cluster.local`` and answers a CNAME and its A; every step is asked of kdns).

It prints a Markdown section: cluster-name latency p50/p99/max and lost lookups during the flood
and after it, and nodecache's overload counters (whichever the tree exports). Progress goes to
stderr. Bounded: ``rate x flood`` packets, ``flood + after`` seconds of probing; every process is
stopped by its own pid on the way out.

Usage: python3 bench/starvation.py [--tree DIR] [--python PATH] [--delay 1.0] [--rate 2000]
                                   [--flood 10] [--after 10]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shlex
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (bench/run.py: Server, free_port, probe, wait_answering, log)
from run import Server, log  # noqa: E402

POD_SOURCE = "127.0.0.2"
"""``--autopath``: the address the flood and the prober send from, a trusted ClusterFirst pod."""
NXDOMAIN, NOERROR = 3, 0

# A UDP upstream that answers every A query with 192.0.2.1 (TTL 300) after DELAY seconds, or
# never with a negative DELAY: one thread, a heap of due replies, select() for the next one.
SLOW_UPSTREAM = """\
import heapq, select, socket, struct, sys, time
port, delay = int(sys.argv[1]), float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", port))
due = []
while True:
    timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
    if select.select([sock], [], [], timeout)[0]:
        query, peer = sock.recvfrom(4096)
        if delay >= 0 and len(query) > 12:
            end = query.index(0, 12) + 5
            reply = (query[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + query[12:end]
                     + b"\\xc0\\x0c" + struct.pack(">HHIH", 1, 1, 300, 4) + bytes([192, 0, 2, 1]))
            heapq.heappush(due, (time.monotonic() + delay, id(reply), reply, peer))
    now = time.monotonic()
    while due and due[0][0] <= now:
        _at, _id, reply, peer = heapq.heappop(due)
        sock.sendto(reply, peer)
"""


@dataclass
class Sample:
    sent: float
    latency: float
    rcode: int
    """The reply's rcode; -1 for a lookup that timed out (its latency is the timeout)."""


@dataclass
class Prober:
    """Unique cluster-zone lookups, one at a time, timed."""

    port: int
    every_s: float
    timeout_s: float
    autopath: bool = False
    samples: list[Sample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        index = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            if self.autopath:
                sock.bind((POD_SOURCE, 0))
            while not self.stop.is_set() and index < 100_000:
                index += 1
                query_id = random.randrange(65536)
                name = (
                    f"10-244-{index // 250}-{index % 250}.shop.pod.default.svc.cluster.local"
                    if self.autopath
                    else f"probe{index}.shop.svc.cluster.local"
                )
                sent = time.monotonic()
                sock.sendto(run.encode_query(name, query_id=query_id), ("127.0.0.1", self.port))
                self.samples.append(Sample(sent, *self._wait(sock, query_id, sent)))
                self.stop.wait(self.every_s)

    def _wait(self, sock: socket.socket, query_id: int, sent: float) -> tuple[float, int]:
        while True:
            left = sent + self.timeout_s - time.monotonic()
            if left <= 0:
                return self.timeout_s, -1
            sock.settimeout(left)
            try:
                reply = sock.recv(4096)
            except TimeoutError:
                return self.timeout_s, -1
            if len(reply) >= 12 and struct.unpack_from(">H", reply)[0] == query_id:
                return time.monotonic() - sent, reply[3] & 0xF
            # else a late reply to an earlier probe: keep waiting for ours


def flood(port: int, rate: int, seconds: float, autopath: bool) -> int:
    """Unique external names at ``rate`` a second for ``seconds``, fire and forget (with
    ``autopath``, as a pod's first search expansions, from ``POD_SOURCE``)."""
    total = int(rate * seconds)
    chunk = max(1, rate // 100)
    run_id = random.randrange(1 << 30)
    suffix = ".default.svc.cluster.local" if autopath else ""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        if autopath:
            sock.bind((POD_SOURCE, 0))
        sock.setblocking(False)
        started = time.monotonic()
        for first in range(0, total, chunk):
            for index in range(first, min(total, first + chunk)):
                packet = run.encode_query(
                    f"x{run_id}-{index}.flood.example{suffix}", query_id=index & 0xFFFF
                )
                try:
                    sock.sendto(packet, ("127.0.0.1", port))
                except BlockingIOError:
                    pass  # the socket buffer is full: the load is what the client could send
                while True:  # discard what comes back, so replies never fill our buffer
                    try:
                        sock.recv(4096)
                    except BlockingIOError:
                        break
            time.sleep(max(0.0, started + (first + chunk) / rate - time.monotonic()))
    return total


def start(name: str, cmd: list[str], tree: Path, workdir: Path, port: int) -> Server:
    err = workdir / f"{name}.stderr"
    env = dict(os.environ, PYTHONPATH=str(tree))
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            cmd, stdout=stderr, stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=tree
        )
    return Server(name, port, proc, err, {"cmd": shlex.join(cmd)})


def metrics(health_port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{health_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    wanted = re.compile(
        r"^(nodecache_(?:overloaded|expired|servfail)_total"
        r"|nodecache_route_(?:overflows|expired)_total\{route=\"(?:default|cluster:cluster.local)\"\}"
        r"|nodecache_inflight_queries) (\S+)$",
        re.M,
    )
    return {match.group(1): float(match.group(2)) for match in wanted.finditer(text)}


def summary(samples: list[Sample], expected: int) -> str:
    """p50/p99/max over every lookup (lost ones at the timeout), how many, how many lost,
    how many answered with anything but ``expected`` (SERVFAIL from an overloaded cache)."""
    if not samples:
        return "| — | — | — | 0 | 0 | 0 |"
    ms = sorted(sample.latency * 1000 for sample in samples)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) > 1 else ms[0]
    lost = sum(sample.rcode < 0 for sample in samples)
    wrong = sum(sample.rcode not in (-1, expected) for sample in samples)
    return (
        f"| {statistics.median(ms):.1f} | {p99:.1f} | {ms[-1]:.1f} | {len(ms)} | {lost} | {wrong} |"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--tree", type=Path, default=HERE.parent, help="the checkout to run")
    parser.add_argument("--python", help="its interpreter (default TREE/.venv/bin/python)")
    parser.add_argument("--delay", type=float, default=1.0, help="upstream reply delay; <0: never")
    parser.add_argument("--rate", type=int, default=2000, help="flood queries per second")
    parser.add_argument("--flood", type=float, default=10.0, help="flood seconds")
    parser.add_argument("--after", type=float, default=10.0, help="probing after the flood")
    parser.add_argument("--probe-every", type=float, default=0.02, help="seconds between probes")
    parser.add_argument("--timeout", type=float, default=2.0, help="a probe's timeout")
    parser.add_argument("--label", default="", help="name of the run in the output")
    parser.add_argument("--autopath", action="store_true",
                        help="through search-path absorption, as a ClusterFirst pod")  # fmt: skip
    parser.add_argument("--nodecache-arg", action="append", default=[],
                        help="one more nodecache flag (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    args.tree = args.tree.resolve()
    args.python = args.python or str(args.tree / ".venv" / "bin" / "python")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    commit = run.tool_output(["git", "-C", str(args.tree), "rev-parse", "--short", "HEAD"])
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="starvation-") as scratch:
        workdir = Path(scratch)
        try:
            kdns_port, slow_port, node_port, health_port = (run.free_port() for _ in range(4))
            demo = args.tree / "examples" / "demo-cluster.yaml"
            kdns = start("kdns", [args.python, "-m", "kdns", "serve", "--manifests", str(demo),
                                  "--listen", f"127.0.0.1:{kdns_port}", "--upstream", "none",
                                  "--health-listen", "none", "--log-level", "WARNING"],
                         args.tree, workdir, kdns_port)  # fmt: skip
            servers.append(kdns)
            slow = start("slow-upstream", [args.python, "-c", SLOW_UPSTREAM, str(slow_port),
                                           str(args.delay)], args.tree, workdir, slow_port)  # fmt: skip
            servers.append(slow)
            absorption = (
                ["--autopath", "on", "--local-nxdomain", "on", "--autopath-clients",
                 f"{POD_SOURCE}/32"]
                if args.autopath
                else ["--autopath", "off", "--local-nxdomain", "off"]
            )  # fmt: skip
            resolv = workdir / "resolv.conf"
            resolv.write_text("nameserver 127.0.0.1\n")
            node = start("nodecache", [args.python, "-m", "nodecache", "serve",
                                       "--listen", f"127.0.0.1:{node_port}",
                                       "--cluster-upstream", f"127.0.0.1:{kdns_port}",
                                       "--upstream", f"127.0.0.1:{slow_port}",
                                       "--health-listen", f"127.0.0.1:{health_port}",
                                       "--host-resolv-conf", str(resolv),
                                       *absorption, "--log-level", "WARNING",
                                       *args.nodecache_arg],
                         args.tree, workdir, node_port)  # fmt: skip
            servers.append(node)
            run.wait_answering(kdns, "cart.shop.svc.cluster.local", 30)
            run.wait_answering(node, "cart.shop.svc.cluster.local", 30)
            prober = Prober(node_port, args.probe_every, args.timeout, args.autopath)
            thread = threading.Thread(target=prober.run, daemon=True)
            log(f"{args.label or commit}: probing; flood {args.rate}/s for {args.flood:g} s")
            thread.start()
            prober.stop.wait(1.0)  # a baseline second before the flood
            flood_started = time.monotonic()
            sent = flood(node_port, args.rate, args.flood, args.autopath)
            flood_ended = time.monotonic()
            counters_at_end = metrics(health_port)
            prober.stop.wait(args.after)
            prober.stop.set()
            thread.join(timeout=args.timeout + 1)
            counters_after = metrics(health_port)
            for server in servers:
                server.ensure_alive()
        finally:
            for server in reversed(servers):
                server.stop()

    expected = NOERROR if args.autopath else NXDOMAIN
    before = [s for s in prober.samples if s.sent < flood_started]
    during = [s for s in prober.samples if flood_started <= s.sent < flood_ended]
    after = [s for s in prober.samples if s.sent >= flood_ended]
    delay = "never answers" if args.delay < 0 else f"answers after {args.delay:g} s"
    lines = [
        f"#### {args.label or commit}: default upstream {delay}, flood {sent} unique names "
        f"({args.rate}/s for {flood_ended - flood_started:.1f} s)",
        "",
        f"Tree `{args.tree}` at `{commit}`; cluster lookups every {args.probe_every * 1000:g} ms, "
        f"timeout {args.timeout:g} s (lost = timed out, counted at the timeout; SERVFAIL = "
        f"answered, but not with {'NOERROR (the CNAME)' if args.autopath else 'NXDOMAIN'})."
        + (" Through autopath, as a pod (`--autopath`)." if args.autopath else ""),
        "",
        "| cluster-name lookups | p50 ms | p99 ms | max ms | lookups | lost | SERVFAIL |",
        "|---|---|---|---|---|---|---|",
        f"| before the flood (1 s) {summary(before, expected)}",
        f"| during the flood {summary(during, expected)}",
        f"| after the flood ({args.after:g} s) {summary(after, expected)}",
        "",
        f"Command: `python3 bench/starvation.py {shlex.join(sys.argv[1:])}`. "
        "nodecache counters at the end of the flood / at the end: "
        + ", ".join(
            f"`{name}` {counters_at_end.get(name, 0):g} / {value:g}"
            for name, value in sorted(counters_after.items())
        ),
        "",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
