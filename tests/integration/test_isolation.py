"""Cluster names keep kdns's time while the default route's upstream is slow or dead (issue 11).

nodecache runs in-process (``NodeCache``) on 127.0.0.1:0 in front of kdns (in-process, the
fixture cluster, over TCP as in production) and a fault upstream as the default route that
answers every name after 1 s, or never. A burst of 2,000 unique external names (3,300 a second,
the issue's rate) goes in over UDP while a prober asks unique cluster-zone names (each a miss
that kdns must answer) every 10 ms, during the burst and for 2 s after it (longer, up to 8 s,
until 50 lookups were made after it); their p99 must stay within 100 ms (``P99_BOUND_S``). The
burst must really have piled up on the default route: most of it is dropped there after
``max_queue_wait_s`` or shed by the walks, none of it reaches kdns's route. Twice:
names as given (search-path absorption off), and as a ClusterFirst pod's first search
expansions, which nodecache's autopath walks on its own pool (``AUTOPATH``).

Bounded: 2,000 packets, 3-9 s of probing per case, every query with a 2 s timeout.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from nodecache.config import build_config
from nodecache.service import NodeCache
from tests.support.cluster import fixture_objects
from tests.support.fault_upstream import Action, FaultUpstream
from tests.support.servers import running_server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BURST = 2000
BURST_RATE_QPS = 3300
PROBE_EVERY_S = 0.01
AFTER_S = 2.0
AFTER_MAX_S = 8.0
AFTER_LOOKUPS = 50
P99_BOUND_S = 0.1
"""Three orders of magnitude under the failure (31 s, and 1 s per lookup behind the slow route),
and above this process's own noise: nodecache, kdns, the fault upstream, the burst's sender and
the prober share one interpreter here, so a probe can wait out another thread's GIL turn (CI
measured p99 50.4 ms, max 273 ms, on a busy 2-core machine; 5-10 ms typical when quiet)."""
QUERY_TIMEOUT_S = 2.0
POD = "127.0.0.2"
"""The source of a ClusterFirst pod in namespace ``default`` (``autopath_clients``)."""


@dataclass(frozen=True)
class Client:
    """Who asks what: the burst's names and the probes' names, from ``source``."""

    source: str
    burst: str
    probe: str
    answer: int
    """The probes' rcode when kdns answers them."""
    during_max_s: float | None = None
    """None: the p99 bound covers the lookups during the burst too; else their bound."""


PLAIN = Client("127.0.0.1", "x{}.burst.example.", "probe{}.testns.svc.cluster.local.",
               dns.rcode.NXDOMAIN)  # fmt: skip
"""Names as given (search-path absorption off): each probe a miss kdns answers NXDOMAIN."""
AUTOPATH = Client(POD, "x{}.burst.example.default.svc.cluster.local.",
                  "10-0-{}-1.testns.pod.default.svc.cluster.local.", dns.rcode.NOERROR,
                  during_max_s=1.5)  # fmt: skip
"""A pod's first search expansions, which nodecache walks: the burst's end at the slow default
route, the probes' at a pod name kdns has (``10-0-N-1.testns.pod.cluster.local``), answered
with a CNAME and its A; every step of those walks is asked of kdns. During the burst the walks
of 3,300 names a second (each asks kdns for its cluster candidates) keep this process's CPU
busy, and a probe waits its turn for it (85-250 ms at most, measured here; 1.14 s once with a
CPU hog on one of the two cores): those get a bound of their own, 1.5 s, under the 2 s they
were lost for before (the walks held the policy's pool for the slow upstream's time, and the
probes timed out)."""


@dataclass
class Probe:
    """Unique cluster-zone lookups through nodecache, timed, on their own thread."""

    port: int
    client: Client
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    """(sent at, latency, rcode); a timeout is QUERY_TIMEOUT_S and rcode -1."""
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        index = 0
        while not self.stop.is_set() and index < 10_000:
            index += 1
            query = dns.message.make_query(self.client.probe.format(index), "A")
            sent = time.monotonic()
            try:
                reply = dns.query.udp(
                    query,
                    "127.0.0.1",
                    port=self.port,
                    timeout=QUERY_TIMEOUT_S,
                    source=self.client.source,
                )
                self.samples.append((sent, time.monotonic() - sent, reply.rcode()))
            except dns.exception.Timeout:
                self.samples.append((sent, QUERY_TIMEOUT_S, -1))
            self.stop.wait(PROBE_EVERY_S)


@contextmanager
def nodecache_in_front(tmp_path: Path, default: Action, client: Client) -> Iterator[NodeCache]:
    with running_server(fixture_objects()) as kdns, FaultUpstream(default=default) as slow:
        resolv = tmp_path / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\n")
        absorption: dict[str, object] = (
            {"autopath_clients": [f"{POD}/32"]}
            if client is AUTOPATH
            else {"autopath": "off", "local_nxdomain": "off"}  # every probe asked of kdns
        )
        config = build_config(
            {
                "listen": ["127.0.0.1:0"],
                "health_listen": "none",
                "cluster_upstream": [f"127.0.0.1:{kdns.port}"],
                "upstream": [f"127.0.0.1:{slow.port}"],
                "host_resolv_conf": str(resolv),
                "drain_timeout_s": 1,
                **absorption,
            }
        )
        node = NodeCache(config, lambda: config)
        node.start()
        try:
            yield node
        finally:
            node.shutdown()


def _burst(port: int, client: Client) -> None:
    """BURST unique external names at BURST_RATE_QPS, fire and forget."""
    chunk = 100
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((client.source, 0))
        started = time.monotonic()
        for first in range(0, BURST, chunk):
            for index in range(first, first + chunk):
                query = dns.message.make_query(client.burst.format(index), "A")
                sock.sendto(query.to_wire(), ("127.0.0.1", port))
            due = started + (first + chunk) / BURST_RATE_QPS
            time.sleep(max(0.0, due - time.monotonic()))  # pacing the load, not waiting on it


def _p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100, method="inclusive")[98]


CASES = [
    pytest.param(Action("delay", 1.0), PLAIN, id="default-upstream-answers-in-1s"),
    pytest.param(Action("drop"), PLAIN, id="default-upstream-never-answers"),
    pytest.param(Action("delay", 1.0), AUTOPATH, id="autopath-walks-default-answers-in-1s"),
    pytest.param(Action("drop"), AUTOPATH, id="autopath-walks-default-never-answers"),
]


@pytest.mark.parametrize(("default", "client"), CASES)
def test_cluster_names_answer_within_100ms_p99_during_and_after_a_burst_of_external_names(
    tmp_path: Path, default: Action, client: Client
) -> None:
    with nodecache_in_front(tmp_path, default, client) as node:
        port = node.udp_servers[0].address[1]
        warm = dns.message.make_query("svc1.testns.svc.cluster.local.", "A")
        assert dns.query.udp(warm, "127.0.0.1", port=port, timeout=QUERY_TIMEOUT_S).answer
        probe = Probe(port, client)
        prober = threading.Thread(target=probe.run, daemon=True)
        prober.start()
        burst_started = time.monotonic()
        _burst(port, client)
        burst_ended = time.monotonic()
        probe.stop.wait(AFTER_S)
        # On a slow machine the prober, in this process too, manages fewer lookups in AFTER_S:
        # go on (up to AFTER_MAX_S) until the p99 has AFTER_LOOKUPS lookups to stand on.
        wait_until(
            lambda: sum(1 for s in probe.samples if s[0] >= burst_ended) >= AFTER_LOOKUPS,
            timeout=AFTER_MAX_S - AFTER_S,
            interval=0.05,
            message=f"{AFTER_LOOKUPS} lookups after the burst",
        )
        probe.stop.set()
        prober.join(timeout=QUERY_TIMEOUT_S + 1)

        during = [s for s in probe.samples if burst_started <= s[0] < burst_ended]
        after = [s for s in probe.samples if s[0] >= burst_ended]
        assert len(during) >= 3, len(during)
        assert len(after) >= AFTER_LOOKUPS, len(after)
        assert {rcode for _at, _latency, rcode in probe.samples} == {client.answer}
        bounded = during + after
        if client.during_max_s is not None:
            slowest = max(latency for _at, latency, _rcode in during)
            assert slowest <= client.during_max_s, f"{slowest * 1000:.1f} ms during the burst"
            bounded = after
        latencies = [latency for _at, latency, _rcode in bounded]
        assert _p99(latencies) <= P99_BOUND_S, (
            f"p99 {_p99(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms over "
            f"{len(latencies)} lookups"
        )
        # The burst really piled up on the default route (32 workers, 1 s or 5 s each), and
        # was shed there or by the walks: never queued on kdns's route.
        lanes = node.resolver.lanes()
        default_lane, cluster_lane = lanes["default"], lanes["cluster:cluster.local"]
        shed = default_lane.stats.expired + default_lane.stats.overflows
        assert shed + node.resolver.stats.internal_shed >= BURST // 2
        assert cluster_lane.stats.expired == cluster_lane.stats.overflows == 0
        assert cluster_lane.stats.fetches >= len(probe.samples)
