"""nodecache.searchpath's decisions, with fake upstreams, inline or manual executors and an
injected clock: no sockets, no sleeps.

The cluster upstream (kdns's part) and the default upstream (the node's resolvers, authoritative
here for the host search domain ``corp.test`` and for ``example.test``) are scripted zones. A pod
in ``shop`` sends from 10.244.0.5, which ``--autopath-clients 10.244.0.0/24`` trusts.
"""

from __future__ import annotations

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from kdns.model import Pod
from kdns.resolver.message import Kind
from kdns.resolver.upstream import Failure
from nodecache.searchpath import autopath
from nodecache.searchpath.clients import ANY, ClientFilter, PodDirectory, eligible, parse_cidr
from nodecache.searchpath.policy import SearchPath
from tests.unit.resolver.fakes import InlineExecutor, ManualExecutor, make_query, make_reply, soa
from tests.unit.resolver.test_core import CLUSTER_SOA, World

POD = ("10.244.0.5", 40000)
STRANGER = ("10.9.9.9", 40000)

CLUSTER = {
    ("shop.svc.cluster.local.", "A"): "nodata",
    ("cart.shop.svc.cluster.local.", "A"): ["cart.shop.svc.cluster.local. 5 IN A 10.96.0.11"],
    ("cart.shop.svc.cluster.local.", "AAAA"): "nodata",
    ("data.svc.cluster.local.", "A"): "nodata",
    ("db.data.svc.cluster.local.", "A"): ["db.data.svc.cluster.local. 5 IN A 10.244.1.30"],
    ("db.data.svc.cluster.local.", "AAAA"): "nodata",
    ("cluster.local.", "SOA"): [CLUSTER_SOA],
}
EXTERNAL = {
    ("www.example.test.", "A"): ["www.example.test. 60 IN A 192.0.2.1"],
    ("www.example.test.", "AAAA"): ["www.example.test. 60 IN AAAA 2001:db8::1"],
    ("v6.example.test.", "A"): "nodata",
    ("v6.example.test.", "AAAA"): ["v6.example.test. 60 IN AAAA 2001:db8::6"],
    ("txtonly.corp.test.", "A"): "nodata",
    ("txtonly.corp.test.", "AAAA"): "nodata",
    ("broken.corp.test.", "A"): "servfail",
    ("foo.corp.test.", "A"): ["foo.corp.test. 60 IN A 198.51.100.7"],
    ("foo.corp.test.", "AAAA"): "nodata",
}


def zone_of(name: str) -> str:
    for zone in ("cluster.local.", "corp.test.", "example.test."):
        if name.endswith(zone):
            return zone
    return "."


def scripted(records: dict[tuple[str, str], object]):  # type: ignore[no-untyped-def]
    def handler(name: str, rdtype: str) -> bytes | Failure:
        zone = zone_of(name)
        negative = {
            "cluster.local.": CLUSTER_SOA,
            ".": ". 60 IN SOA a.root.test. hostmaster.root.test. 1 7200 1800 86400 30",
        }.get(zone) or soa(zone, 60, 30)
        found = records.get((name, rdtype))
        if found == "servfail":
            return Failure("servfail", "scripted")
        if isinstance(found, list):
            return make_reply(name, rdtype, answer=found)
        exists = found == "nodata" or any(key[0] == name for key in records)
        rcode = dns.rcode.NOERROR if exists else dns.rcode.NXDOMAIN
        return make_reply(name, rdtype, authority=[negative], rcode=rcode)

    return handler


class Node:
    def __init__(self, *, executor: object | None = None, **options: object) -> None:
        self.world = World()
        self.world.cluster.handler = scripted(CLUSTER)
        self.world.default.handler = scripted(EXTERNAL)
        self.world.stub.handler = scripted(EXTERNAL)  # World routes corp.test to a stub
        clients = options.pop("clients", ClientFilter([parse_cidr("10.244.0.0/24")]))
        self.policy = SearchPath(
            ["cluster.local"],
            clients,  # type: ignore[arg-type]
            host_search=["corp.test"],
            clock=self.world.clock,
            executor=executor or InlineExecutor(),  # type: ignore[arg-type]
            **options,  # type: ignore[arg-type]
        )
        self.world.resolver.policy = self.policy
        self.policy.bind(self.world.resolver)
        self.policy.start()  # learns the zone SOA (inline)

    def ask(
        self, name: str, rdtype: str = "A", client: tuple[str, int] | None = POD
    ) -> dns.message.Message:
        return dns.message.from_wire(self.world.resolver.resolve(make_query(name, rdtype), client))

    def sent(self) -> int:
        world = self.world
        return world.cluster.count() + world.default.count() + world.stub.count()


def cname_target(reply: dns.message.Message) -> str | None:
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.CNAME:
            return str(rrset[0].target)
    return None


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(
        item.address
        for rrset in reply.answer
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        for item in rrset
    )


WALK_CASES = [
    # name asked by the pod, type, expected rcode, CNAME target, addresses
    pytest.param("www.example.test.shop.svc.cluster.local.", "A", "NOERROR", "www.example.test.",
                 ["192.0.2.1"], id="found-as-is-last-candidate"),
    pytest.param("www.example.test.shop.svc.cluster.local.", "AAAA", "NOERROR",
                 "www.example.test.", ["2001:db8::1"], id="found-as-is-AAAA"),
    pytest.param("v6.example.test.shop.svc.cluster.local.", "A", "NOERROR", "v6.example.test.",
                 [], id="found-v6-only-A-is-cname-and-nodata"),
    pytest.param("db.data.shop.svc.cluster.local.", "A", "NOERROR", "db.data.svc.cluster.local.",
                 ["10.244.1.30"], id="R3.1-other-namespace"),
    pytest.param("cart.shop.svc.cluster.local.", "A", "NOERROR", None, ["10.96.0.11"],
                 id="R3.1-first-expansion-exists"),
    pytest.param("txtonly.shop.svc.cluster.local.", "A", "NXDOMAIN", None, [],
                 id="musl-nodata-pair-declines"),
    pytest.param("broken.shop.svc.cluster.local.", "A", "NXDOMAIN", None, [],
                 id="musl-servfail-declines"),
    pytest.param("nowhere.example.test.shop.svc.cluster.local.", "A", "NXDOMAIN", None, [],
                 id="not-found-plain-nxdomain"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "rdtype", "rcode", "target", "found"), WALK_CASES)
def test_walk(name: str, rdtype: str, rcode: str, target: str | None, found: list[str]) -> None:
    node = Node()
    reply = node.ask(name, rdtype)
    assert dns.rcode.to_text(reply.rcode()) == rcode
    assert cname_target(reply) == target
    assert addresses(reply) == found
    if rcode == "NXDOMAIN":
        assert reply.answer == []
        assert [str(rrset.name) for rrset in reply.authority] == ["cluster.local."]


def test_a_and_aaaa_in_flight_together_share_one_walk() -> None:
    manual = ManualExecutor()
    node = Node(executor=manual)
    assert manual.run_all() == 1  # the zone SOA, learned at start
    name = "www.example.test.shop.svc.cluster.local."
    got: list[bytes] = []
    for rdtype in ("A", "AAAA"):
        assert node.world.resolver.answer(make_query(name, rdtype), got.append, POD) is None
    assert got == []
    assert manual.run_all() == 1  # one walk for the pair
    replies = [dns.message.from_wire(reply) for reply in got]
    assert [cname_target(r) for r in replies] == ["www.example.test."] * 2
    assert [addresses(r) for r in replies] == [["192.0.2.1"], ["2001:db8::1"]]
    assert node.policy.stats.decisions["found"] == 1


def test_the_clients_own_walk_after_not_found_is_never_autopathed() -> None:
    """``foo.bar`` exists nowhere. After the walk from its first expansion says NOT_FOUND,
    the client walks on itself: ``foo.bar.svc.cluster.local`` reads like a first expansion of
    ``foo`` in namespace ``bar`` (a trusted range does not know the pod's namespace), and a
    walk from it would find ``foo.corp.test``: an answer the client's real walk never gives."""
    node = Node()
    search = ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.test", ""]
    for domain in search:
        name = f"foo.bar.{domain}." if domain else "foo.bar."
        for rdtype in ("A", "AAAA"):
            reply = node.ask(name, rdtype)
            assert reply.rcode() == dns.rcode.NXDOMAIN, (name, rdtype)
            assert cname_target(reply) is None
    assert node.policy.stats.decisions["not_found"] == 1


@pytest.mark.parametrize(
    ("first", "claimed"),
    [("www.example.test.shop.svc.cluster.local.", True),  # FOUND: answered with a CNAME
     ("nothere.shop.svc.cluster.local.", True),  # NOT_FOUND
     ("cart.shop.svc.cluster.local.", False)],  # EXISTS: the cache's answer is the policy's
    ids=["found", "not-found", "exists"],
)  # fmt: skip
def test_a_walk_that_rewrites_a_name_tells_the_claim_watchers(first: str, claimed: bool) -> None:
    """The C loop serves cache hits without asking the policy: when an autopath decision
    starts to cover a name, ``may_shortcut`` turns false for it and the watchers hear of it
    (the resolver's front drops the name's views, ``Cache.drop_views``)."""
    node = Node()
    heard: list[bytes] = []
    node.policy.watch_claims(heard.append)
    node.ask(first)
    wire_name = dns.name.from_text(first).to_wire()
    assert heard == ([wire_name] if claimed else [])
    assert node.policy.may_shortcut(wire_name, Kind.POSITIVE) is not claimed


def test_a_walks_nxdomain_settles_the_clients_other_type_outside_the_zone() -> None:
    node = Node()
    node.ask("nothere.shop.svc.cluster.local.")  # NOT_FOUND: probed the candidates' A only
    sent = node.sent()
    reply = node.ask("nothere.corp.test.", "AAAA")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert [str(rrset.name) for rrset in reply.authority] == ["corp.test."]
    assert node.sent() == sent
    assert node.policy.stats.local["name"] >= 1


def test_decision_is_cached_for_the_answer_ttl() -> None:
    node = Node()
    name = "www.example.test.shop.svc.cluster.local."
    node.ask(name)
    node.ask(name, "AAAA")
    sent = node.sent()
    assert cname_target(node.ask(name)) == "www.example.test."
    assert node.sent() == sent  # warm
    assert node.policy.stats.decisions["found"] == 1
    node.world.clock.advance(31)  # past the capped 30 s answer TTL
    node.ask(name)
    assert node.policy.stats.decisions["found"] == 2


def test_a_name_that_appears_is_seen_once_the_first_expansions_nxdomain_expires() -> None:
    """The CNAME says the first expansion does not exist: it holds only as long as that
    NXDOMAIN (kdns's 5 s negative TTL), not the target's longer TTL."""
    node = Node()
    name = "db.data.shop.svc.cluster.local."
    assert cname_target(node.ask(name)) == "db.data.svc.cluster.local."
    now_there = {**CLUSTER, (name, "A"): [f"{name} 5 IN A 10.244.9.9"], (name, "AAAA"): "nodata"}
    node.world.cluster.handler = scripted(now_there)
    node.world.clock.advance(2)
    assert cname_target(node.ask(name)) == "db.data.svc.cluster.local."
    node.world.clock.advance(4)
    reply = node.ask(name)
    assert cname_target(reply) is None
    assert addresses(reply) == ["10.244.9.9"]


def test_cold_external_lookup_leaves_the_node_at_most_h_plus_3_times() -> None:
    """H=1 host domain; the 3-label name's first expansion is shape-impossible."""
    node = Node()
    sent = node.sent()
    name = "www.example.test.shop.svc.cluster.local."
    for rdtype in ("A", "AAAA"):
        node.ask(name, rdtype)
    # www.example.test.svc.cluster.local (cut probe test.svc), .cluster.local (shape),
    # .corp.test (1), then A and AAAA of www.example.test.
    assert node.sent() - sent <= 1 + 3


@pytest.mark.parametrize(
    ("client", "options", "target"),
    [
        pytest.param(POD, {}, "db.data.svc.cluster.local.", id="trusted"),
        pytest.param(STRANGER, {}, None, id="untrusted"),
        pytest.param(None, {}, None, id="no-client-address"),
        pytest.param(POD, {"autopath_on": False}, None, id="autopath-off"),
        pytest.param(
            POD,
            {"clients": ClientFilter([parse_cidr("10.244.0.0/24")], namespaces=["other"])},
            None,
            id="namespace-not-listed",
        ),
    ],
)
def test_who_gets_autopath(
    client: tuple[str, int] | None, options: dict[str, object], target: str | None
) -> None:
    node = Node(**options)
    reply = node.ask("db.data.shop.svc.cluster.local.", "A", client)
    assert cname_target(reply) == target


LOCAL_CASES = [
    pytest.param("api.github.com.cluster.local.", "shape", 0, id="R1.4-shape"),
    pytest.param("x.nons.svc.cluster.local.", "cut", 1, id="R1.5-cut-costs-one-probe"),
]


@pytest.mark.parametrize(("name", "mechanism", "probes"), LOCAL_CASES)
def test_local_nxdomain(name: str, mechanism: str, probes: int) -> None:
    node = Node(autopath_on=False)
    sent = node.sent()
    for rdtype in ("A", "AAAA", "TXT"):
        reply = node.ask(name, rdtype, STRANGER)
        assert reply.rcode() == dns.rcode.NXDOMAIN
        [authority] = reply.authority
        assert authority.ttl == 5
    assert node.sent() - sent == probes
    assert node.policy.stats.local[mechanism] >= 3 - probes


def test_local_nxdomain_off_asks_kdns() -> None:
    node = Node(autopath_on=False, local_nxdomain=False)
    sent = node.sent()
    assert node.ask("api.github.com.cluster.local.", "A", STRANGER).rcode() == 3
    assert node.sent() - sent == 1


PODS = [
    pytest.param(Pod("shop", "a", ("10.244.0.5",)), True, id="cluster-first"),
    pytest.param(Pod("shop", "a", ("10.244.0.5",), dns_policy="Default"), False, id="default"),
    pytest.param(Pod("shop", "a", ("10.244.0.5",), dns_policy="ClusterFirstWithHostNet",
                     host_network=True), False, id="host-network"),
    pytest.param(Pod("shop", "a", ("10.244.0.5",), dns_searches=("x.test",)), False,
                 id="custom-searches"),
    pytest.param(Pod("shop", "a", ("10.244.0.5",), finished=True), False, id="finished"),
]  # fmt: skip


@pytest.mark.parametrize(("pod", "expected"), PODS)
def test_eligible_pods(pod: Pod, expected: bool) -> None:
    assert eligible(pod) is expected


def test_pod_directory_namespaces_and_conflicts() -> None:
    directory = PodDirectory("node-a")
    directory.replace(
        {
            ("shop", "a"): Pod("shop", "a", ("10.244.0.5",), node_name="node-a"),
            ("shop", "b"): Pod("shop", "b", ("10.244.0.6",), node_name="node-a"),
            ("data", "c"): Pod("data", "c", ("10.244.0.6",), node_name="node-a"),
            ("shop", "d"): Pod("shop", "d", ("10.244.0.7",), node_name="node-b"),
            ("shop", "e"): Pod("shop", "e", ("10.244.0.8",), node_name="node-a", finished=True),
        }
    )
    clients = ClientFilter([parse_cidr("192.0.2.0/24")], directory)
    assert clients.namespace("10.244.0.5") == "shop"
    assert clients.namespace("10.244.0.6") is None  # two namespaces claim it
    assert clients.namespace("10.244.0.7") is None  # another node's pod
    assert clients.namespace("10.244.0.8") is None  # finished: its IP may be reused
    assert clients.namespace("192.0.2.7") == ANY
    assert clients.allows("10.244.0.5", "shop")
    assert not clients.allows("10.244.0.5", "data")  # not its own namespace
    directory.replace({("data", "c"): Pod("data", "c", ("10.244.0.5",), node_name="node-a")})
    assert clients.namespace("10.244.0.5") == "data"  # the memo follows the directory


PLAN_CASES = [
    pytest.param("www.example.test.shop.svc.cluster.local", ("corp.test", "cluster.local"),
                 ["www.example.test.svc.cluster.local", "www.example.test.cluster.local",
                  "www.example.test.corp.test", "www.example.test"], id="host-domains-deduped"),
    pytest.param("cart.shop.svc.cluster.local", (), ["cart.svc.cluster.local",
                 "cart.cluster.local", "cart"], id="no-host-domains"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "host", "candidates"), PLAN_CASES)
def test_plan(name: str, host: tuple[str, ...], candidates: list[str]) -> None:
    walk = autopath.plan(
        tuple(name.split(".")), (("cluster", "local"),), [tuple(h.split(".")) for h in host]
    )
    assert walk is not None
    assert [".".join(c) for c in walk.candidates] == candidates


@pytest.mark.parametrize(
    "name", ["shop.svc.cluster.local", "svc.cluster.local", "a.pod.cluster.local", "a.test"]
)
def test_plan_only_for_first_expansions(name: str) -> None:
    assert autopath.plan(tuple(name.split(".")), (("cluster", "local"),), ()) is None


# --- review findings: each a scenario where absorption once changed what a client got --------


def walk_like_glibc(node: Node, short: str, domains: list[str]) -> tuple[str | None, list[str]]:
    """The client's own walk (A and AAAA per candidate, then as-is): where it stops, and the
    addresses it gets."""
    for domain in [*domains, ""]:
        name = f"{short}.{domain}." if domain else f"{short}."
        replies = [node.ask(name, rdtype) for rdtype in ("A", "AAAA")]
        found = sorted({a for reply in replies for a in addresses(reply)})
        if found:
            return name, found
    return None, []


SEARCH = ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.test"]


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="plain"),
        pytest.param(
            {"clients": ClientFilter([parse_cidr("10.244.0.0/24")], namespaces=["bar"])},
            id="first-expansion-not-in-autopath-namespaces",
        ),
    ],
)
def test_a_later_candidate_is_never_walked_as_a_first_expansion(options: dict[str, object]) -> None:
    """``foo.bar`` exists nowhere; ``foo.corp.test`` does. Whatever happened to the first
    expansion, ``foo.bar.svc.cluster.local`` (``foo`` in namespace ``bar``) must not be
    autopathed to ``foo.corp.test``."""
    node = Node(**options)
    assert walk_like_glibc(node, "foo.bar", SEARCH) == (None, [])


def test_a_walk_over_budget_declines_and_the_client_walks_itself() -> None:
    node = Node()

    def slow(name: str, rdtype: str) -> bytes | Failure:
        node.world.clock.advance(0.6)  # every upstream reply takes 0.6 s
        return scripted(EXTERNAL)(name, rdtype)

    node.world.default.handler = slow
    node.world.stub.handler = slow
    reply = node.ask("www.example.test.shop.svc.cluster.local.")
    assert reply.rcode() == dns.rcode.NXDOMAIN  # plain: the walk gave up after 1 s
    assert node.policy.stats.decisions["declined"] == 1
    assert walk_like_glibc(node, "www.example.test", SEARCH) == (
        "www.example.test.",
        ["192.0.2.1", "2001:db8::1"],
    )


def test_an_aaaa_nxdomain_never_denies_the_names_a_outside_the_cluster_zone() -> None:
    """RFC 4074 §3: a broken authority answers NXDOMAIN to AAAA for a name with an A record."""
    node = Node()
    base = scripted(EXTERNAL)

    def broken(name: str, rdtype: str) -> bytes | Failure:
        if name == "legacy.corp.test.":
            if rdtype == "A":
                return make_reply(name, rdtype, answer=[f"{name} 5 IN A 192.0.2.77"])
            return make_reply(
                name, rdtype, authority=[soa("corp.test.", 300, 300)], rcode=dns.rcode.NXDOMAIN
            )
        return base(name, rdtype)

    node.world.stub.handler = broken
    # A and AAAA disagree at legacy.corp.test: the walk declines (glibc would stop there, musl
    # would go on), and the client's own walk stops where it always would.
    assert walk_like_glibc(node, "legacy", SEARCH) == ("legacy.corp.test.", ["192.0.2.77"])
    assert node.policy.stats.decisions["declined"] == 1
    node.world.clock.advance(6)  # the A entry (TTL 5) is gone; the AAAA NXDOMAIN is not
    assert addresses(node.ask("legacy.corp.test.", "A", STRANGER)) == ["192.0.2.77"]


def test_an_answer_a_cname_would_push_past_512_bytes_is_left_to_the_client() -> None:
    big = {**CLUSTER, ("big.data.svc.cluster.local.", "AAAA"): "nodata"}
    big[("big.data.svc.cluster.local.", "A")] = [
        f"big.data.svc.cluster.local. 5 IN A 10.244.1.{i}" for i in range(1, 29)
    ]
    node = Node()
    node.world.cluster.handler = scripted(big)
    reply = node.ask("big.data.shop.svc.cluster.local.")
    assert reply.rcode() == dns.rcode.NXDOMAIN  # declined: the CNAME would not fit
    assert node.policy.stats.decisions["declined"] == 1
    assert len(node.ask("big.data.svc.cluster.local.").answer[0]) == 28


def test_an_nxdomain_at_the_end_of_a_cname_is_not_learned_for_the_alias() -> None:
    node = Node()
    base = scripted(EXTERNAL)
    alias = "alias.corp.test."

    def chained(name: str, rdtype: str) -> bytes | Failure:
        if name == alias:
            cname = [f"{alias} 60 IN CNAME gone.corp.test."]
            if rdtype == "CNAME":
                return make_reply(name, rdtype, answer=cname)
            return make_reply(
                name, rdtype, answer=cname, authority=[soa("corp.test.", 60, 30)], rcode=3
            )
        return base(name, rdtype)

    node.world.stub.handler = chained
    node.ask("alias.shop.svc.cluster.local.")  # the walk probes alias.corp.test
    reply = node.ask(alias, "CNAME", STRANGER)
    assert reply.rcode() == dns.rcode.NOERROR
    assert cname_target(reply) == "gone.corp.test."


def test_soa_is_never_answered_from_a_learned_nxdomain() -> None:
    """kdns answers SOA below the apex NODATA whatever the name (R8)."""
    node = Node()
    base = scripted(CLUSTER)

    def kdns(name: str, rdtype: str) -> bytes | Failure:
        if rdtype == "SOA" and name != "cluster.local.":
            return make_reply(name, rdtype, authority=[CLUSTER_SOA])
        return base(name, rdtype)

    node.world.cluster.handler = kdns
    node.ask("nosuch.shop.svc.cluster.local.")  # learns its NXDOMAIN
    assert node.ask("nosuch.shop.svc.cluster.local.", "SOA", STRANGER).rcode() == 0


def test_a_stub_domain_inside_the_cluster_zone_is_not_judged_by_its_shape() -> None:
    node = Node(excluded=["mesh.cluster.local"])
    node.world.cluster.handler = scripted(
        {**CLUSTER, ("web.mesh.cluster.local.", "A"): ["web.mesh.cluster.local. 5 IN A 10.9.0.1"]}
    )
    assert addresses(node.ask("web.mesh.cluster.local.", "A", STRANGER)) == ["10.9.0.1"]


def test_a_stale_negative_is_never_learned() -> None:
    """A Service created while its old NXDOMAIN sits stale in the cache (RFC 8767 immediate):
    the walk must not learn that NXDOMAIN as a fact and hold it for a negative TTL."""
    from kdns.resolver.config import StaleConfig, StaleMode

    node = Node()
    node.world.cache.reconfigure(stale=StaleConfig(mode=StaleMode.IMMEDIATE))
    name = "newsvc.shop.svc.cluster.local."
    node.ask(name, "A", STRANGER)  # NXDOMAIN cached for 5 s
    node.world.clock.advance(20)  # expired, inside the stale window
    node.world.cluster.handler = scripted(
        {**CLUSTER, (name, "A"): [f"{name} 5 IN A 10.96.0.99"], (name, "AAAA"): "nodata"}
    )
    node.ask(name)  # stale NXDOMAIN to the client, refresh started
    assert node.policy.facts.nxdomain(shape_wire(name)) is None
    node.world.clock.advance(1)
    assert addresses(node.ask(name)) == ["10.96.0.99"]


def shape_wire(name: str) -> bytes:
    from nodecache.searchpath.shape import to_wire

    return to_wire(tuple(name.rstrip(".").split(".")))


def test_a_search_list_longer_than_every_client_searches_ends_the_walk_declined() -> None:
    hosts = [("a.test",), ("b.test",), ("c.test",), ("d.test",)]
    walk = autopath.plan(
        ("x", "shop", "svc", "cluster", "local"),
        (("cluster", "local"),),
        [tuple(h[0].split(".")) for h in hosts],
    )
    assert walk is not None
    assert not walk.complete
    # 6 domains: the 3 cluster ones and a, b, c; no d.test and no as-is candidate
    assert [".".join(c) for c in walk.candidates][-1] == "x.c.test"
