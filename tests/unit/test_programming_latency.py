"""DNS programming latency (coredns_kubernetes_dns_programming_duration_seconds), measured as
CoreDNS's kubernetes plugin measures it: a changed EndpointSlice of a headless Service with the
controller's trigger time, from that time to the table that answers it. Time is injected."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kdns.config import ZoneConfig
from kdns.model import Endpoint, EndpointSlice, KubeObject, Namespace, Service
from kdns.runtime import PROGRAMMING_BUCKETS, Runtime
from kdns.serve.protocol import Responder

NOW = 1_796_194_800.0


def service(headless: bool, kind: str = "ClusterIP") -> Service:
    if kind == "ExternalName":
        return Service("shop", "db", type="ExternalName", external_name="db.example.com")
    ips = () if headless else ("10.96.0.5",)
    return Service("shop", "db", cluster_ips=ips, headless=headless)


def endpoints(ip: str, changed_at: float | None) -> EndpointSlice:
    return EndpointSlice("shop", "db-1", "db", "IPv4", (Endpoint((ip,)),), changed_at=changed_at)


@dataclass(frozen=True)
class Row:
    id: str
    service: Service
    changed_at: float | None
    observed: dict[str, int]
    """service_kind -> observations after one change"""


ROWS = [
    Row(
        "headless with selector: measured", service(True), NOW - 0.75, {"headless_with_selector": 1}
    ),
    Row("ClusterIP: not measured (CoreDNS measures headless only)", service(False), NOW - 0.75, {}),
    Row("no trigger time (no selector, hand-made slice): not measured", service(True), None, {}),
    Row("ExternalName: not measured", service(False, "ExternalName"), NOW - 0.75, {}),
]


def observations(runtime: Runtime) -> dict[str, int]:
    return {
        kind: sum(histogram.read()[0])
        for kind, histogram in runtime.programming.items()
        if sum(histogram.read()[0])
    }


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_a_changed_slice_is_measured_from_its_trigger_time(row: Row) -> None:
    runtime = Runtime(ZoneConfig(), Responder())
    runtime.store.clock = lambda: NOW
    initial: list[KubeObject] = [Namespace("shop"), row.service, endpoints("10.0.0.1", NOW - 3600)]
    runtime.replace(initial)
    assert observations(runtime) == {}, "the initial load is not a change"
    runtime.apply(lambda store: store.upsert(endpoints("10.0.0.2", row.changed_at)))
    assert observations(runtime) == row.observed
    if row.observed:
        counts, total = runtime.programming["headless_with_selector"].read()
        assert total == pytest.approx(0.75)
        assert counts.index(1) == 10  # 0.75 s: le=1.024 (0.001 * 2**10)
        assert PROGRAMMING_BUCKETS[10] == pytest.approx(1.024)


def test_an_unchanged_slice_on_relist_is_not_measured_again() -> None:
    runtime = Runtime(ZoneConfig(), Responder())
    runtime.store.clock = lambda: NOW
    runtime.replace([Namespace("shop"), service(True), endpoints("10.0.0.1", NOW - 10)])
    changed = endpoints("10.0.0.2", NOW - 1)
    runtime.apply(lambda store: store.upsert(changed))
    runtime.apply(lambda store: store.upsert(changed))  # the same object again: no change
    assert observations(runtime) == {"headless_with_selector": 1}


def test_a_clock_behind_the_trigger_time_counts_zero_not_negative() -> None:
    runtime = Runtime(ZoneConfig(), Responder())
    runtime.store.clock = lambda: NOW
    runtime.replace([Namespace("shop"), service(True), endpoints("10.0.0.1", None)])
    runtime.apply(lambda store: store.upsert(endpoints("10.0.0.2", NOW + 5)))
    counts, total = runtime.programming["headless_with_selector"].read()
    assert counts[0] == 1
    assert total == 0.0
