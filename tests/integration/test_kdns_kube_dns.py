"""kdns following the kube-dns ConfigMap (stubDomains, upstreamNameservers) without a restart,
through the fake kube-apiserver and the unmodified ``kubernetes`` client (issue 14 item 5, the
kdns half).

kdns is wired as ``kdns serve`` wires it (``build_config`` over the settings, the ConfigMap
overlaid by ``kdns.resolver.kubedns.overlay``, ``make_forwarder``, ``KubeDnsForwarding``) and
serves on 127.0.0.1:0. Two scriptable upstreams answer ``stub.test`` with different addresses, so
the answer shows which one the ConfigMap points at; each step asks a fresh name, so no cached
answer hides a change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import pytest

from kdns.config import Config, build_config
from kdns.forwarding import KubeDnsForwarding, make_forwarder
from kdns.resolver.kubedns import KubeDns, overlay
from tests.fakeapi import FakeKube
from tests.integration.test_kube_dns_configmap import kube_dns, stub_records
from tests.support.cluster import fixture_objects
from tests.support.fault_upstream import FaultUpstream
from tests.support.servers import RunningServer, running_server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


class Kdns:
    def __init__(self, server: RunningServer, following: KubeDnsForwarding) -> None:
        self.server = server
        self.following = following
        self.asked = 0

    def answer(self, zone: str) -> list[str] | str:
        """The A addresses for a name under ``zone`` not asked before, or the rcode."""
        self.asked += 1
        reply = self.server.query(dns.message.make_query(f"n{self.asked}.{zone}.", "A"))
        if reply.rcode() != dns.rcode.NOERROR:
            return dns.rcode.to_text(reply.rcode())
        return [rr.address for rrset in reply.answer for rr in rrset if rrset.rdtype == 1]


@contextlib.contextmanager
def running_kdns(values: dict[str, Any]) -> Iterator[Kdns]:
    def load(configmap: KubeDns) -> Config:
        return build_config(overlay(values, configmap))

    config = build_config(values)
    forwarder = make_forwarder(config)
    assert forwarder is not None  # the ConfigMap may add routes: always a forwarder
    following = KubeDnsForwarding(load, forwarder)
    following.start(config)
    try:
        with running_server(fixture_objects(), config.zone, forwarder=forwarder) as server:
            yield Kdns(server, following)
    finally:
        following.stop()
        forwarder.resolver.close()


@pytest.fixture(name="fake")
def _fake() -> Iterator[FakeKube]:
    with FakeKube() as fake:
        yield fake


def test_configmap_edits_are_followed_without_a_restart(fake: FakeKube, tmp_path: Path) -> None:
    with FaultUpstream(stub_records(1)) as first, FaultUpstream(stub_records(2)) as second:
        fake.apply(kube_dns({"stub.test": [f"127.0.0.1:{first.port}"]}, None))
        resolv = tmp_path / "resolv.conf"
        resolv.write_text("search example.test\n")  # no nameserver: nothing forwarded by default
        values = {
            "listen": ["127.0.0.1:0"],
            "resolv_conf": str(resolv),
            "kube_dns_configmap": "kube-system/kube-dns",
            "kubeconfig": str(fake.write_kubeconfig(tmp_path / "kubeconfig")),
        }
        with running_kdns(values) as kdns:
            ask = kdns.answer
            following = kdns.following
            steps = [
                # (what the ConfigMap becomes, zone asked, the answer that shows it applied)
                (None, "stub.test", ["198.51.100.1"]),
                (None, "ext.test", "REFUSED"),
                (kube_dns({"stub.test": [f"127.0.0.1:{second.port}"]}, None), "stub.test",
                 ["198.51.100.2"]),
                (kube_dns(None, [f"127.0.0.1:{first.port}"]), "ext.test", ["203.0.113.1"]),
                (kube_dns(None, [f"127.0.0.1:{first.port}"]), "stub.test", ["198.51.100.1"]),
            ]  # fmt: skip
            for configmap, zone, expected in steps:
                if configmap is not None:
                    fake.apply(configmap)
                wait_until(
                    lambda z=zone, e=expected: ask(z) == e,
                    timeout=10,
                    message=f"{zone} answered {expected}",
                )
            applied = following.follower.applied
            # One that does not parse, or that the rest of the config rejects, is refused by
            # name and the last good one stays.
            for bad in [
                {**kube_dns(None, None), "data": {"stubDomains": "{not json"}},
                kube_dns({"stub.test": ["127.0.0.1:0"]}, None),
            ]:
                rejected = following.follower.rejected
                fake.apply(bad)
                wait_until(lambda r=rejected: following.follower.rejected > r, timeout=10)
                assert ask("ext.test") == ["203.0.113.1"]
            assert following.follower.applied == applied
            # Deleting the ConfigMap removes what it added.
            fake.delete("ConfigMap", "kube-system", "kube-dns")
            wait_until(lambda: ask("ext.test") == "REFUSED", timeout=10)


def test_own_stub_domains_and_upstream_win_over_the_configmap(
    fake: FakeKube, tmp_path: Path
) -> None:
    with FaultUpstream(stub_records(4)) as mine, FaultUpstream(stub_records(5)) as theirs:
        theirs_at = f"127.0.0.1:{theirs.port}"
        fake.apply(kube_dns({"stub.test": [theirs_at]}, [theirs_at]))
        values = {
            "listen": ["127.0.0.1:0"],
            "upstream": [f"127.0.0.1:{mine.port}"],
            "stub_domains": {"stub.test": [f"127.0.0.1:{mine.port}"]},
            "kube_dns_configmap": "kube-system/kube-dns",
            "kubeconfig": str(fake.write_kubeconfig(tmp_path / "kubeconfig")),
        }
        with running_kdns(values) as kdns:
            assert kdns.following.follower.applied == 1
            assert kdns.answer("stub.test") == ["198.51.100.4"]
            assert kdns.answer("ext.test") == ["203.0.113.4"]
