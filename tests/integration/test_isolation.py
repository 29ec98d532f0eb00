"""Cluster names keep kdns's time while the default route's upstream is slow or dead (issue 11).

nodecache runs in-process (``NodeCache``) on 127.0.0.1:0 in front of kdns (in-process, the
fixture cluster, over TCP as in production) and a fault upstream as the default route that
answers every name after 1 s, or never. A burst of 2,000 unique external names (3,300 a second,
the issue's rate) goes in over UDP while a prober asks unique cluster-zone names (each a miss
that kdns must answer) every 10 ms, during the burst and for 3 s after it; their p99 must stay
within 50 ms. The burst must really have piled up on the default route: most of it is dropped
there after ``max_queue_wait_s``, none of it reaches kdns's route.

Bounded: 2,000 packets, about 4 s of probing per case, every query with a 2 s timeout.
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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BURST = 2000
BURST_RATE_QPS = 3300
PROBE_EVERY_S = 0.01
AFTER_S = 3.0
P99_BOUND_S = 0.05
QUERY_TIMEOUT_S = 2.0


@dataclass
class Probe:
    """Unique cluster-zone lookups through nodecache, timed, on their own thread."""

    port: int
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    """(sent at, latency, rcode); a timeout is QUERY_TIMEOUT_S and rcode -1."""
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        index = 0
        while not self.stop.is_set() and index < 10_000:
            index += 1
            query = dns.message.make_query(f"probe{index}.testns.svc.cluster.local.", "A")
            sent = time.monotonic()
            try:
                reply = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=QUERY_TIMEOUT_S)
                self.samples.append((sent, time.monotonic() - sent, reply.rcode()))
            except dns.exception.Timeout:
                self.samples.append((sent, QUERY_TIMEOUT_S, -1))
            self.stop.wait(PROBE_EVERY_S)


@contextmanager
def nodecache_in_front(tmp_path: Path, default: Action) -> Iterator[NodeCache]:
    with running_server(fixture_objects()) as kdns, FaultUpstream(default=default) as slow:
        resolv = tmp_path / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\n")
        config = build_config(
            {
                "listen": ["127.0.0.1:0"],
                "health_listen": "none",
                "cluster_upstream": [f"127.0.0.1:{kdns.port}"],
                "upstream": [f"127.0.0.1:{slow.port}"],
                "host_resolv_conf": str(resolv),
                "autopath": "off",
                "local_nxdomain": "off",  # every probe must be asked of kdns
                "drain_timeout_s": 1,
            }
        )
        node = NodeCache(config, lambda: config)
        node.start()
        try:
            yield node
        finally:
            node.shutdown()


def _burst(port: int) -> None:
    """BURST unique external names at BURST_RATE_QPS, fire and forget."""
    chunk = 100
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        started = time.monotonic()
        for first in range(0, BURST, chunk):
            for index in range(first, first + chunk):
                query = dns.message.make_query(f"x{index}.burst.example.", "A")
                sock.sendto(query.to_wire(), ("127.0.0.1", port))
            due = started + (first + chunk) / BURST_RATE_QPS
            time.sleep(max(0.0, due - time.monotonic()))  # pacing the load, not waiting on it


def _p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100, method="inclusive")[98]


DEFAULT_UPSTREAMS = [
    pytest.param(Action("delay", 1.0), id="default-upstream-answers-in-1s"),
    pytest.param(Action("drop"), id="default-upstream-never-answers"),
]


@pytest.mark.parametrize("default", DEFAULT_UPSTREAMS)
def test_cluster_names_answer_within_50ms_p99_during_and_after_a_burst_of_external_names(
    tmp_path: Path, default: Action
) -> None:
    with nodecache_in_front(tmp_path, default) as node:
        port = node.udp_servers[0].address[1]
        warm = dns.message.make_query("svc1.testns.svc.cluster.local.", "A")
        assert dns.query.udp(warm, "127.0.0.1", port=port, timeout=QUERY_TIMEOUT_S).answer
        probe = Probe(port)
        prober = threading.Thread(target=probe.run, daemon=True)
        prober.start()
        burst_started = time.monotonic()
        _burst(port)
        burst_ended = time.monotonic()
        probe.stop.wait(AFTER_S)
        probe.stop.set()
        prober.join(timeout=QUERY_TIMEOUT_S + 1)

        during = [s for s in probe.samples if burst_started <= s[0] < burst_ended]
        after = [s for s in probe.samples if s[0] >= burst_ended]
        assert len(during) >= 10, len(during)
        assert len(after) >= 50, len(after)
        assert {rcode for _at, _latency, rcode in probe.samples} == {dns.rcode.NXDOMAIN}
        latencies = [latency for _at, latency, _rcode in during + after]
        assert _p99(latencies) <= P99_BOUND_S, (
            f"p99 {_p99(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms over "
            f"{len(latencies)} lookups"
        )
        # The burst really piled up on the default route (32 workers, 1 s or 5 s each), and
        # was shed there: dropped after max_queue_wait_s, never queued on kdns's route.
        lanes = node.resolver.lanes()
        default_lane, cluster_lane = lanes["default"], lanes["cluster:cluster.local"]
        assert default_lane.stats.expired + default_lane.stats.overflows >= BURST // 2
        assert cluster_lane.stats.expired == cluster_lane.stats.overflows == 0
        assert cluster_lane.stats.fetches >= len(probe.samples)
