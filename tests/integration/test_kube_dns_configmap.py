"""The kube-dns ConfigMap (stubDomains, upstreamNameservers) followed by nodecache without a
restart, from the API (the fake kube-apiserver, through the unmodified ``kubernetes`` client) and
from a mounted directory, as NodeLocal DNSCache reads it (issue 14 item 5).

nodecache runs as a subprocess (tests/integration/test_nodecache.py's harness); two scriptable
upstreams serve ``stub.test`` with different addresses, so the answer shows which one the
ConfigMap points at. Each step asks a name not asked before, so no cached answer hides a change.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from tests.fakeapi import FakeKube
from tests.integration.test_nodecache import NodeCache, addresses, nodecache
from tests.support.cluster import fixture_objects
from tests.support.fault_upstream import FaultUpstream
from tests.support.servers import RunningServer, running_server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def stub_records(last_octet: int) -> list[str]:
    return [
        "stub.test. 300 IN SOA ns.stub.test. hostmaster.stub.test. 1 7200 1800 86400 60",
        *[f"n{i}.stub.test. 300 IN A 198.51.100.{last_octet}" for i in range(20)],
        "ext.test. 300 IN SOA ns.ext.test. hostmaster.ext.test. 1 7200 1800 86400 60",
        *[f"n{i}.ext.test. 300 IN A 203.0.113.{last_octet}" for i in range(20)],
    ]


def kube_dns(stubs: dict[str, list[str]] | None, upstreams: list[str] | None) -> dict[str, object]:
    data = {}
    if stubs is not None:
        data["stubDomains"] = json.dumps(stubs)
    if upstreams is not None:
        data["upstreamNameservers"] = json.dumps(upstreams)
    return {
        "kind": "ConfigMap",
        "metadata": {"name": "kube-dns", "namespace": "kube-system"},
        "data": data,
    }


@pytest.fixture(name="kdns", scope="module")
def _kdns() -> Iterator[RunningServer]:
    with running_server(fixture_objects()) as server:
        yield server


class Names:
    """A fresh name per question, so the cache never answers for a previous ConfigMap."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self, zone: str) -> str:
        self.next += 1
        return f"n{self.next}.{zone}."


def answer(node: NodeCache, name: str) -> list[str] | str:
    reply = node.query(name)
    if reply.rcode() != dns.rcode.NOERROR:
        return dns.rcode.to_text(reply.rcode())
    return addresses(reply)


def test_configmap_through_the_api_is_followed_without_a_restart(
    kdns: RunningServer, tmp_path: Path
) -> None:
    fresh = Names()
    with (
        FaultUpstream(stub_records(1)) as first,
        FaultUpstream(stub_records(2)) as second,
        FakeKube() as fake,
    ):
        fake.apply(kube_dns({"stub.test": [f"127.0.0.1:{first.port}"]}, None))
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        with nodecache(
            tmp_path, "--cluster-upstream", f"127.0.0.1:{kdns.port}", "--upstream", "none",
            "--kube-dns-configmap", "kube-system/kube-dns", "--kubeconfig", str(kubeconfig),
            "--node-name", "node-a",
        ) as node:  # fmt: skip
            # At start: the stub domain from the ConfigMap; everything else refused (none).
            assert answer(node, fresh("stub.test")) == ["198.51.100.1"]
            assert answer(node, fresh("ext.test")) == "REFUSED"
            # An edit moves the stub domain to the second server.
            fake.apply(kube_dns({"stub.test": [f"127.0.0.1:{second.port}"]}, None))
            wait_until(
                lambda: answer(node, fresh("stub.test")) == ["198.51.100.2"],
                timeout=10,
                message="the edited stubDomains",
            )
            # A ConfigMap that does not parse is rejected and the previous one stays.
            fake.apply({**kube_dns(None, None), "data": {"stubDomains": "{not json"}})
            wait_until(
                lambda: node.logged(
                    "kube-dns ConfigMap kube-system/kube-dns rejected (stubDomains: not valid JSON"
                ),
                timeout=10,
            )
            assert answer(node, fresh("stub.test")) == ["198.51.100.2"]
            # One the rest of the config rejects (checked by building it): named, and kept out.
            fake.apply(kube_dns({"bad zone!": [f"127.0.0.1:{first.port}"]}, None))
            wait_until(lambda: node.logged("rejected (stub_domains.bad zone!"), timeout=10)
            assert answer(node, fresh("stub.test")) == ["198.51.100.2"]
            # Deleting the ConfigMap removes what it added.
            fake.delete("ConfigMap", "kube-system", "kube-dns")
            wait_until(
                lambda: answer(node, fresh("stub.test")) == "REFUSED",
                timeout=10,
                message="stub domain gone with the ConfigMap",
            )
            assert node.process.poll() is None


def test_upstream_nameservers_replace_the_default_upstream_only(
    kdns: RunningServer, tmp_path: Path
) -> None:
    fresh = Names()
    with FaultUpstream(stub_records(3)) as upstream, FakeKube() as fake:
        fake.apply(kube_dns(None, [f"127.0.0.1:{upstream.port}"]))
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        resolv = tmp_path / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\n")  # would loop to nodecache's own :53 if used
        with nodecache(
            tmp_path, "--cluster-upstream", f"127.0.0.1:{kdns.port}",
            "--host-resolv-conf", str(resolv),
            "--kube-dns-configmap", "kube-system/kube-dns", "--kubeconfig", str(kubeconfig),
            "--node-name", "node-a",
        ) as node:  # fmt: skip
            assert answer(node, fresh("ext.test")) == ["203.0.113.3"]
            # Cluster names still go to the cluster DNS.
            reply = node.query("svc1.testns.svc.cluster.local.")
            assert addresses(reply) == ["10.0.0.1"]


def test_explicit_upstream_and_file_stub_domains_win_over_the_configmap(
    kdns: RunningServer, tmp_path: Path
) -> None:
    fresh = Names()
    with (
        FaultUpstream(stub_records(4)) as mine,
        FaultUpstream(stub_records(5)) as theirs,
        FakeKube() as fake,
    ):
        fake.apply(
            kube_dns({"stub.test": [f"127.0.0.1:{theirs.port}"]}, [f"127.0.0.1:{theirs.port}"])
        )
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        with nodecache(
            tmp_path, "--cluster-upstream", f"127.0.0.1:{kdns.port}",
            "--upstream", f"127.0.0.1:{mine.port}",
            "--kube-dns-configmap", "kube-system/kube-dns", "--kubeconfig", str(kubeconfig),
            "--node-name", "node-a",
            config=f"stub_domains:\n  stub.test: ['127.0.0.1:{mine.port}']\n",
        ) as node:  # fmt: skip
            assert answer(node, fresh("stub.test")) == ["198.51.100.4"]
            assert answer(node, fresh("ext.test")) == ["203.0.113.4"]


def test_configmap_from_a_mounted_directory(kdns: RunningServer, tmp_path: Path) -> None:
    fresh = Names()
    mounted = tmp_path / "kube-dns"
    mounted.mkdir()
    with FaultUpstream(stub_records(6)) as stub:
        (mounted / "stubDomains").write_text(json.dumps({"stub.test": [f"127.0.0.1:{stub.port}"]}))
        with nodecache(
            tmp_path, "--cluster-upstream", f"127.0.0.1:{kdns.port}", "--upstream", "none",
            "--kube-dns-configmap-dir", str(mounted),
        ) as node:  # fmt: skip
            assert answer(node, fresh("stub.test")) == ["198.51.100.6"]
