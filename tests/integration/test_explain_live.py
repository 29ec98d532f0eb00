"""``explain --server`` (issue 15) against real servers on loopback: kdns in-process over the
demo snapshot, and nodecache as a subprocess in front of it (absorption on, 127.0.0.1 trusted
as a ClusterFirst pod). The live lookup, read through nodecache's ``/metrics``, must be what
the offline explain predicts for the same snapshot: the same queries, answered the same way,
the same queries sent to kdns, the same addresses. Each case gets a fresh nodecache (a cold
cache, no learned namespace cuts), as the offline answerer starts cold.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdns import cli as kdns_cli
from kdns.admin import libc, lookup
from kdns.admin.live import LiveServer
from kdns.admin.outside import Outside
from kdns.admin.snapshot import ClusterDNS
from kdns.config import ZoneConfig
from kdns.source.manifests import load_snapshot
from nodecache import cli as nodecache_cli
from nodecache.admin.offline import OfflineNode
from tests.fakeapi import FakeKube
from tests.integration.test_nodecache import NodeCache, nodecache
from tests.support.fault_upstream import FaultUpstream, fault_upstream
from tests.support.servers import RunningServer, running_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-cluster.yaml"
RESOLV_CONF = (
    "nameserver 127.0.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\n"
    "options ndots:5\n"
)
OPTIONS = libc.read_options(RESOLV_CONF)
ROOT_ZONE = (
    ". 300 IN SOA ns.root.test. hostmaster.root.test. 1 7200 1800 86400 30",
    "www.example.test. 300 IN A 192.0.2.1",
    "www.example.test. 300 IN AAAA 2001:db8::1",
)
"""The world outside the cluster, for both: the live node's upstream serves it, and the
offline explain reads it as its ``--outside-zone``."""


@pytest.fixture(scope="module")
def kdns() -> Iterator[RunningServer]:
    with running_server(list(load_snapshot([DEMO]).state.objects())) as server:
        yield server


@pytest.fixture(scope="module")
def internet() -> Iterator[FaultUpstream]:
    with fault_upstream(ROOT_ZONE) as upstream:
        yield upstream


@pytest.fixture
def node(kdns: RunningServer, internet: FaultUpstream, tmp_path: Path) -> Iterator[NodeCache]:
    host = tmp_path / "host-resolv.conf"
    host.write_text("# the node: no search domains\n")
    with nodecache(
        tmp_path, "--cluster-upstream", f"127.0.0.1:{kdns.port}", "--upstream", "{}:{}".format(*internet.address),
        "--host-resolv-conf", str(host), "--autopath-clients", "127.0.0.1/32", config="",
    ) as running:  # fmt: skip
        # The zone's SOA, learned at start, is not part of any lookup.
        wait_until(
            lambda: running.metric("nodecache_upstream_replies_total", '{upstream="cluster"}') >= 1,
            timeout=10,
            message="nodecache learned the zone SOA",
        )
        yield running


CASES = [
    pytest.param("cart", "glibc", id="same-namespace-glibc"),
    pytest.param("kubernetes.default", "glibc", id="other-namespace-glibc"),
    pytest.param("db.data", "musl", id="headless-musl"),
    pytest.param("cart.shop.svc.cluster.local", "glibc", id="four-dots-glibc"),
    pytest.param("nope.shop", "musl", id="missing-musl"),
    pytest.param("www.example.test", "glibc", id="external-glibc"),
    pytest.param("nowhere.example.test", "musl", id="nowhere-musl"),
]


@pytest.mark.parametrize(("name", "libc_name"), CASES)
def test_live_nodecache_lookup_is_what_offline_explain_predicts(
    node: NodeCache, name: str, libc_name: str
) -> None:
    metrics = f"http://127.0.0.1:{node.health_port}/metrics"
    live = lookup.run(name, OPTIONS, libc_name, LiveServer(("127.0.0.1", node.port), metrics), "")
    outside = Outside([("root", "\n".join(ROOT_ZONE))])
    dns = ClusterDNS(load_snapshot([DEMO]), ZoneConfig(), outside)
    offline = lookup.run(name, OPTIONS, libc_name, OfflineNode(dns, OPTIONS.search), "")

    def shown(found: lookup.Lookup) -> list[tuple[str, int, str, str, int]]:
        return [
            (q.qname, q.qtype, q.how, q.rcode, (q.left and len(q.left)) or 0)
            for step in found.steps
            for q in (step.a, step.aaaa)
        ]

    assert shown(live) == shown(offline)
    assert (live.addresses, live.error) == (offline.addresses, offline.error)
    assert live.left_to("kdns") == offline.left_to("kdns")
    assert live.left_to("upstream") == offline.left_to("upstream")


def test_kdns_explain_live_prints_json(
    kdns: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(RESOLV_CONF)
    code = kdns_cli.main(["explain", "--server", f"127.0.0.1:{kdns.port}", "--resolv-conf",
                          str(conf), "--libc", "musl", "--json", "kubernetes.default"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == 0
    document = json.loads(out)
    main = document["lookups"][0]
    assert main["addresses"] == ["10.96.0.1"]
    assert [q["rcode"] for q in main["queries"]] == ["NXDOMAIN", "NXDOMAIN", "NOERROR", "NOERROR"]
    assert {q["answered_by"] for q in main["queries"]} == {"kdns"}
    assert main["to_kdns"] == main["queries_sent"] == 4


# --- --pod through the API -------------------------------------------------------------------

WEB_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {"dnsPolicy": "ClusterFirst", "dnsConfig": {"searches": ["corp.test"]}},
    "status": {"podIP": "10.244.1.99"},
}  # fmt: skip


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with FakeKube() as fake:
        fake.apply(WEB_POD)
        yield fake.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")


@pytest.mark.parametrize(
    ("pod", "code", "expected"),
    [
        pytest.param("shop/web", 0, "search shop.svc.cluster.local svc.cluster.local "
                     "cluster.local corp.test", id="read-from-the-api"),
        pytest.param("shop/nope", 2, "--pod: Pod shop/nope: the API server answered 404",
                     id="missing"),
    ],
)  # fmt: skip
def test_explain_reads_the_pod_from_the_api(
    kube: Path, pod: str, code: int, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = nodecache_cli.main(["explain", "--manifests", str(DEMO), "--kubeconfig", str(kube),
                                 "--pod", pod, "--json", "cart"])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == code
    if code:
        assert expected in err
        return
    conf = json.loads(out)["resolv_conf"]
    assert f"search {' '.join(conf['search'])}" == expected
    assert conf["ndots"] == 5
