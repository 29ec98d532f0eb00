"""NodeCache.shutdown's node plumbing decisions, against the fake iptables/ip
(tests/unit/node_fakes.py): what goes, what stays, when the rules will not go or a successor
is bound. The service is not started (no sockets): the successor check and the handover are
replaced with their outcomes, the clock of the retry with a fake."""

from __future__ import annotations

import functools

import pytest

import nodecache.service
from nodecache.config import build_config
from nodecache.node.commands import Result
from nodecache.node.plumbing import Plumbing
from nodecache.node.settings import NodeSettings
from nodecache.service import NodeCache
from tests.unit.node_fakes import FakeNode

LISTEN = [("169.254.20.10", 53), ("10.96.0.10", 53)]


def lock_busy(argv: list[str]) -> Result | None:
    if argv[0] == "iptables-restore":
        return Result(4, "", "Another app is currently holding the xtables lock.")
    return None


CASES = [
    pytest.param(False, False, False, (0, False), id="no-successor-tears-down"),
    pytest.param(False, False, True, (24, True), id="rules-stuck-keeps-interface"),
    pytest.param(True, True, False, (24, True), id="handed-over-leaves-all"),
    pytest.param(True, False, False, (24, True), id="successor-unconfirmed-leaves-all"),
]  # fmt: skip


@pytest.mark.parametrize(("successor", "confirmed", "busy", "left"), CASES)
def test_shutdown_plumbing(
    monkeypatch: pytest.MonkeyPatch,
    successor: bool,
    confirmed: bool,
    busy: bool,
    left: tuple[int, bool],
) -> None:
    config = build_config({"listen": ["127.0.0.1:0"], "health_listen": "none",
                           "upstream": ["127.0.0.1:9"], "cluster_upstream": ["127.0.0.1:9"],
                           "drain_timeout_s": 0.3})  # fmt: skip
    fake = FakeNode()
    cache = NodeCache(config, lambda: config, node=NodeSettings())
    cache.plumbing = Plumbing(LISTEN, 8080, fake)
    assert cache.plumbing.install()
    if busy:
        fake.fail = lock_busy
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    retry = functools.partial(cache.plumbing.remove_rules_within, clock=lambda: now[0], sleep=sleep)
    monkeypatch.setattr(cache.plumbing, "remove_rules_within", retry)
    monkeypatch.setattr(nodecache.service, "successor_bound", lambda servers: successor)
    monkeypatch.setattr(
        nodecache.service,
        "hand_over",
        lambda servers, answers, successor=None: bool(successor) and confirmed,
    )
    cache.shutdown()
    assert (len(fake.rules()), "nodelocaldns" in fake.links) == left
    if busy:
        restores = [c for c in fake.calls if c[0] == "iptables-restore"]
        assert len(restores) > 2, "the removal was retried within the drain budget"
        assert 0.3 <= now[0] < 1.0
