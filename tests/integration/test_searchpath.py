"""nodecache's search-path absorption over real sockets: local NXDOMAIN and node-scoped autopath.

Peers: kdns in-process serving the fixture cluster (tests/support/cluster.py) as the cluster
upstream; NSD authoritative for ``example.test``, which is also the node's one host search
domain. nodecache runs in-process (``NodeCache``) on 127.0.0.1:0 with
``--autopath-clients 127.0.0.2/32``: queries sent from 127.0.0.2 are a trusted ClusterFirst
pod, from 127.0.0.3 an unknown client. dnspython binds the source address.

What reaches kdns is read from nodecache's own counters (the cluster route's upstream queries);
the network-namespace proof with glibc and musl clients counts packets (test_ndots_netns.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from kdns.config import ZoneConfig
from kdns.config import build_config as kdns_build_config
from kdns.serve import tally
from nodecache.config import build_config
from nodecache.service import NodeCache
from tests.fakeapi import FakeKube
from tests.support.cluster import fixture_objects
from tests.support.nsd import running_nsd
from tests.support.servers import running_server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

POD = "127.0.0.2"
STRANGER = "127.0.0.3"
TIMEOUT_S = 3.0


@dataclass
class World:
    node: NodeCache
    port: int

    def ask(self, name: str, rdtype: str = "A", source: str = POD) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        return dns.query.udp(query, "127.0.0.1", port=self.port, timeout=TIMEOUT_S, source=source)

    def to_kdns(self) -> int:
        """Queries nodecache has sent to kdns (the cluster upstream group)."""
        total = 0
        for route in self.node.resolver.router.routes():
            if route.name.startswith("cluster:"):
                return int(route.upstream.stats.queries)  # type: ignore[attr-defined]
        return total

    @property
    def stats(self):  # type: ignore[no-untyped-def]
        assert self.node.searchpath is not None
        return self.node.searchpath.policy.stats


@contextlib.contextmanager
def world(
    tmp_path: Path, *flags: tuple[str, object], kdns_config: ZoneConfig | None = None
) -> Iterator[World]:
    with running_server(fixture_objects(), kdns_config) as kdns, running_nsd() as nsd:
        resolv = tmp_path / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\nsearch example.test\noptions ndots:5\n")
        values: dict[str, object] = {
            "listen": ["127.0.0.1:0"],
            "health_listen": "none",
            "cluster_upstream": [f"127.0.0.1:{kdns.port}"],
            "upstream": [f"127.0.0.1:{nsd.port}"],
            "host_resolv_conf": str(resolv),
            "cluster_transport": "udp",
            "autopath_clients": [f"{POD}/32"],
        }
        values.update(dict(flags))
        config = build_config(values)
        node = NodeCache(config, lambda: config)
        node.start()
        try:
            port = node.udp_servers[0].address[1]
            found = World(node, port)
            # The zone SOA (for shape answers) is learned at start, in the background.
            found.ask("warmup.cluster.local", "SOA")
            yield found
        finally:
            node.shutdown()


def answers(reply: dns.message.Message) -> list[str]:
    return sorted(rrset.to_text().split(" ", 1)[1] for rrset in reply.answer)


def addresses(reply: dns.message.Message) -> set[str]:
    return {
        item.address
        for rrset in reply.answer
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        for item in rrset
    }


# Each row: the query, its type, the client, then the expected rcode, CNAME target (or None)
# and addresses.
AUTOPATH_CASES = [
    pytest.param("www.testns.svc.cluster.local.", "A", POD, "NOERROR",
                 "www.example.test.", {"192.0.2.1"}, id="external-via-host-domain-A"),
    pytest.param("www.testns.svc.cluster.local.", "AAAA", POD, "NOERROR",
                 "www.example.test.", {"2001:db8::1"}, id="external-via-host-domain-AAAA"),
    pytest.param("svc1.testns.default.svc.cluster.local.", "A", POD, "NOERROR",
                 "svc1.testns.svc.cluster.local.", {"10.0.0.1"}, id="R3.1-other-namespace"),
    pytest.param("svc1.testns.svc.cluster.local.", "A", POD, "NOERROR",
                 None, {"10.0.0.1"}, id="R3.1-same-namespace-exists-no-cname"),
    pytest.param("svc6.testns.default.svc.cluster.local.", "A", POD, "NOERROR",
                 "svc6.testns.svc.cluster.local.", set(), id="R3.1-v6-only-A-is-cname-nodata"),
    pytest.param("hdls1.testns.default.svc.cluster.local.", "A", POD, "NOERROR",
                 "hdls1.testns.svc.cluster.local.", {"172.0.0.2", "172.0.0.3", "172.0.0.4"},
                 id="R4.1-headless-several-endpoints"),
    pytest.param("nothere.testns.svc.cluster.local.", "A", POD, "NXDOMAIN",
                 None, set(), id="R8-exists-nowhere-plain-nxdomain"),
    pytest.param("www.testns.svc.cluster.local.", "A", STRANGER, "NXDOMAIN",
                 None, set(), id="untrusted-client-no-autopath"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "rdtype", "source", "rcode", "cname", "found"), AUTOPATH_CASES)
def test_autopath_answers_like_the_client_walk(
    tmp_path: Path,
    name: str,
    rdtype: str,
    source: str,
    rcode: str,
    cname: str | None,
    found: set[str],
) -> None:
    with world(tmp_path) as w:
        reply = w.ask(name, rdtype, source)
        assert dns.rcode.to_text(reply.rcode()) == rcode
        cnames = [
            item.target.to_text()
            for rrset in reply.answer
            if rrset.rdtype == dns.rdatatype.CNAME and rrset.name.to_text() == name
            for item in rrset
        ]
        assert cnames == ([cname] if cname else [])
        assert addresses(reply) == found
        if rcode == "NXDOMAIN":
            assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA]


def test_autopath_decides_the_pair_once_and_caches_it(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        first = [w.ask("www.testns.svc.cluster.local.", t) for t in ("A", "AAAA")]
        sent = w.to_kdns()
        again = [w.ask("www.testns.svc.cluster.local.", t) for t in ("A", "AAAA")]
        assert [answers(r) for r in again] == [answers(r) for r in first]
        assert w.to_kdns() == sent  # warm: nothing more reaches kdns
        assert w.stats.decisions["found"] == 1
        assert w.stats.autopath_answers == 4
        assert w.node.handler.stats.remembered == 2  # the warm pair: from the memo, unparsed
        # www.testns.svc.cluster.local -> www.svc.cluster.local (ns www: cut) -> www.cluster.local
        # (shape) -> www.example.test: 3 candidates per type the client did not send.
        assert w.stats.client_queries_saved == 4 * 3


def test_search_path_probes_are_not_client_requests(tmp_path: Path) -> None:
    """The walk's own queries through the cache are the node's, not a client's: CoreDNS's
    coredns_dns_requests_total counts only what clients sent (issue 13)."""
    with world(tmp_path) as w:
        for rdtype in ("A", "AAAA"):
            w.ask("www.testns.svc.cluster.local.", rdtype)
        assert sum(w.stats.probes.values()) > 0
        counts = tally.read_counts(w.node.udp_servers[0].counts())
        assert sum(counts.requests.values()) == 3  # the warmup SOA and the two questions
        assert sum(counts.responses.values()) == 3


LOCAL_CASES = [
    pytest.param("api.github.com.cluster.local.", "shape", id="R1.4-not-svc-or-pod"),
    pytest.param("a.b.c.svc1.testns.svc.cluster.local.", "shape", id="R1.4-too-many-labels"),
    pytest.param("www.example.test.testns.svc.cluster.local.", "shape",
                 id="R3.9-port-protocol-cannot-exist"),
    pytest.param("x.nons.svc.cluster.local.", "cut", id="R1.5-missing-namespace-cut"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "mechanism"), LOCAL_CASES)
def test_local_nxdomain_without_asking_kdns(tmp_path: Path, name: str, mechanism: str) -> None:
    # kdns's records (and so its SOA) live 60 s here, not 5: the zone SOA the shape answers
    # carry must not expire mid-test on a loaded machine, which costs one query to kdns.
    with world(tmp_path, ("autopath", "off"), kdns_config=ZoneConfig(ttl_s=60)) as w:
        if mechanism == "cut":
            # The first name under the namespace costs one probe for <ns>.svc.<zone>.
            assert w.ask("probe.nons.svc.cluster.local.", source=STRANGER).rcode() == 3
        sent = w.to_kdns()
        for rdtype in ("A", "AAAA", "SRV", "TXT"):
            reply = w.ask(name, rdtype, STRANGER)
            assert reply.rcode() == dns.rcode.NXDOMAIN, rdtype
            [soa] = reply.authority
            assert soa.rdtype == dns.rdatatype.SOA
            assert soa.name.to_text() == "cluster.local."
        assert w.to_kdns() == sent
        assert w.stats.local[mechanism] >= 4


NOT_CUT_CASES = [
    pytest.param("_tcp.svc1.testns.svc.cluster.local.", "SRV", "NXDOMAIN", id="R3.9-below-service"),
    pytest.param("_http._tcp.svc1.testns.svc.cluster.local.", "SRV", "NOERROR",
                 id="R3.4-srv-under-an-nxdomain-sibling"),
    pytest.param("testns.svc.cluster.local.", "A", "NOERROR", id="R8-existing-namespace-nodata"),
    pytest.param("emptyns.svc.cluster.local.", "A", "NOERROR", id="R8-empty-namespace-nodata"),
    pytest.param("x.y.cluster.local.", "SOA", "NOERROR", id="R8-soa-off-apex-is-kdns-nodata"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "rdtype", "rcode"), NOT_CUT_CASES)
def test_no_cut_below_a_service_and_kdns_answers_kept(
    tmp_path: Path, name: str, rdtype: str, rcode: str
) -> None:
    with world(tmp_path, ("autopath", "off")) as w:
        assert dns.rcode.to_text(w.ask("_tcp.svc1.testns.svc.cluster.local.", "SRV").rcode()) == (
            "NXDOMAIN"
        )
        assert dns.rcode.to_text(w.ask(name, rdtype, STRANGER).rcode()) == rcode


@pytest.mark.parametrize(
    ("autopath", "local"),
    [
        pytest.param("on", "on", id="absorption-on"),
        pytest.param("off", "off", id="absorption-off"),
    ],
)
def test_absorption_on_and_off_give_the_client_the_same_addresses(
    tmp_path: Path, autopath: str, local: str
) -> None:
    """The client's walk, done by hand as glibc would, ends at the same addresses."""
    search = ["testns.svc.cluster.local", "svc.cluster.local", "cluster.local", "example.test"]
    with world(tmp_path, ("autopath", autopath), ("local_nxdomain", local)) as w:
        for short, expected in [
            ("www", {"192.0.2.1", "2001:db8::1"}),
            ("svc1.testns", {"10.0.0.1"}),
            ("hdls1", {"172.0.0.2", "172.0.0.3", "172.0.0.4", "5678:abcd::1"}),
            ("nowhere", set()),
        ]:
            got: set[str] = set()
            for domain in [*search, ""]:
                name = f"{short}.{domain}." if domain else f"{short}."
                replies = [w.ask(name, t) for t in ("A", "AAAA")]
                got = set().union(*(addresses(r) for r in replies))
                if got:
                    break
            assert got == expected, short


def _pod(name: str, ip: str, node: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "testns"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}], **spec},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def test_pod_watch_limits_autopath_to_this_nodes_cluster_first_pods(tmp_path: Path) -> None:
    """The node-scoped Pod watch (kdns's informer, against the fake API server) decides who
    gets autopath: only ClusterFirst pods of this node, and it follows changes."""
    fake = FakeKube().start()
    try:
        fake.apply(_pod("first", "127.0.0.4", "node-a"))
        fake.apply(_pod("default-policy", "127.0.0.5", "node-a", dnsPolicy="Default"))
        fake.apply(_pod("elsewhere", "127.0.0.6", "node-b"))
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        flags = (("autopath_clients", []), ("kubeconfig", str(kubeconfig)), ("node_name", "node-a"))
        with world(tmp_path, *flags) as w:
            name = "www.testns.svc.cluster.local."

            def target(source: str) -> str | None:
                for rrset in w.ask(name, "A", source).answer:
                    if rrset.rdtype == dns.rdatatype.CNAME:
                        return str(rrset[0].target)
                return None

            wait_until(lambda: target("127.0.0.4") is not None, timeout=10, message="pod synced")
            assert target("127.0.0.4") == "www.example.test."
            assert target("127.0.0.5") is None  # dnsPolicy: Default
            assert target("127.0.0.6") is None  # not on this node: never listed
            fake.apply(_pod("default-policy", "127.0.0.5", "node-a", dnsPolicy="ClusterFirst"))
            wait_until(lambda: target("127.0.0.5") is not None, timeout=10, message="update seen")
            selectors = {r.query.get("fieldSelector") for r in fake.requests_for(resource="pods")}
            assert selectors == {"spec.nodeName=node-a"}
    finally:
        fake.stop()


def test_cache_hit_shortcut_keeps_existing_names_but_never_hides_autopath(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        name = "www.testns.svc.cluster.local."
        assert w.ask(name, "A", STRANGER).rcode() == dns.rcode.NXDOMAIN  # cached NXDOMAIN
        assert cname_of(w.ask(name, "A", POD)) == "www.example.test."
        assert w.ask(name, "A", STRANGER).rcode() == dns.rcode.NXDOMAIN
        assert cname_of(w.ask(name, "A", POD)) == "www.example.test."
        w.node.resolver.absorb_hits()  # the C loop's hits (a view per shape after its 1st hit)
        hits = w.node.handler.shortcut_hits
        for _ in range(3):
            assert w.ask("svc1.testns.svc.cluster.local.", "A", POD).rcode() == 0
        w.node.resolver.absorb_hits()
        assert w.node.handler.shortcut_hits == hits + 2  # the first one filled the cache
        if w.node.handler.fast_path is not None:  # an existing cluster name: C serves it too
            assert w.node.resolver.cache.stats.view_hits >= 1


def cname_of(reply: dns.message.Message) -> str | None:
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.CNAME:
            return str(rrset[0].target)
    return None


CUSTOM = ["legacy.cluster.local. 5 IN A 10.1.1.1", "web.ghost.svc.cluster.local. 5 IN A 10.2.2.2"]
CUSTOM_CASES = [
    # (custom names nodecache is told about, the questions in order, the expected answers)
    pytest.param((), [("probe.ghost.svc.cluster.local.", "NXDOMAIN"),
                      ("web.ghost.svc.cluster.local.", "10.2.2.2"),
                      ("ghost.svc.cluster.local.", "NOERROR")],
                 id="RFC8020-custom-under-absent-namespace-no-cut-learned"),
    pytest.param((), [("legacy.cluster.local.", "NXDOMAIN")],
                 id="R1.4-custom-off-grammar-denied-by-shape-unless-listed"),
    pytest.param(("legacy.cluster.local",), [("legacy.cluster.local.", "10.1.1.1"),
                                             ("x.legacy.cluster.local.", "NXDOMAIN"),
                                             ("api.github.com.cluster.local.", "NXDOMAIN")],
                 id="R1.4-custom-off-grammar-listed-passes-to-kdns"),
]  # fmt: skip


@pytest.mark.parametrize(("listed", "questions"), CUSTOM_CASES)
def test_kdns_custom_records_in_the_cluster_zone(
    tmp_path: Path, listed: tuple[str, ...], questions: list[tuple[str, str]]
) -> None:
    """kdns custom records inside cluster.local through nodecache with local NXDOMAIN on: a
    grammar-shaped one needs nothing (kdns answers its ancestors NODATA, so no namespace cut is
    learned); an off-grammar one is denied by the shape unless ``local_nxdomain_except`` names
    it, and then only that subtree goes to kdns."""
    zone = kdns_build_config({"records": CUSTOM, "upstream": "none"}).zone
    with world(
        tmp_path, ("autopath", "off"), ("local_nxdomain_except", list(listed)), kdns_config=zone
    ) as w:
        for name, expected in questions:
            reply = w.ask(name, source=STRANGER)
            got = sorted(addresses(reply)) or [dns.rcode.to_text(reply.rcode())]
            assert got == [expected], name
