"""nodecache.node.sync: the rules only once the listener answers; the interface every tick."""

from __future__ import annotations

import pytest

from nodecache.node.plumbing import Plumbing
from nodecache.node.sync import NodeSync
from tests.unit.node_fakes import FakeNode


@pytest.mark.parametrize(
    ("probes", "rules_after_each"),
    [
        pytest.param("+", [24], id="answers-at-once"),
        pytest.param("--+", [0, 0, 24], id="rules-wait-for-the-listener"),
        pytest.param("+-+", [24, 24, 24], id="a-failed-probe-removes-nothing"),
    ],
)
def test_ticks(probes: str, rules_after_each: list[int]) -> None:
    fake = FakeNode()
    plumbing = Plumbing([("169.254.20.10", 53), ("10.96.0.10", 53)], 8080, fake)
    answers = iter(probes)
    sync = NodeSync(plumbing, lambda: next(answers) == "+", 60.0)
    counts = []
    for _ in probes:
        sync.tick()
        assert "nodelocaldns" in fake.links  # the interface never waits for the probe
        counts.append(sum(len(rows) for rows in fake.tables.values()))
    assert counts == rules_after_each
    assert sync.installed == ("+" in probes)


def test_tick_restores_what_was_deleted() -> None:
    fake = FakeNode()
    plumbing = Plumbing([("10.96.0.10", 53)], None, fake)
    sync = NodeSync(plumbing, lambda: True, 60.0)
    sync.tick()
    fake.tables[(False, "raw")].pop()
    del fake.links["nodelocaldns"]
    assert sync.tick()
    assert sum(len(rows) for rows in fake.tables.values()) == 10
    assert fake.links["nodelocaldns"] == (True, ["10.96.0.10"])
