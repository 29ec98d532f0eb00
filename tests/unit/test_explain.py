"""``explain`` (issue 15): the libc query plan, and the offline lookups against what the ndots
lab observes with real glibc and musl in a network namespace (tests/support/ndots.py).

The lab's counts (``EXPECTED_OFF_COLD``, and the absorption targets of test_ndots.py) are the
reference: an offline nodecache over the same snapshot (examples/demo-cluster.yaml), the same
resolv.conf and the lab's NSD zones (``--outside-zone``) must predict the same queries sent by
the client, to kdns and to NSD, and the same answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdns.admin import libc, lookup
from kdns.admin.libc import GLIBC, MUSL, Reply, Verdict
from kdns.admin.outside import Outside
from kdns.admin.podconf import resolv_conf
from kdns.admin.snapshot import ClusterDNS, KdnsAlone
from kdns.config import ZoneConfig
from kdns.source.manifests import load_snapshot
from nodecache import cli
from nodecache.admin.offline import OfflineNode, cluster_first_namespace
from tests.support import ndots

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo-cluster.yaml"
OPTIONS = libc.read_options(ndots.POD_RESOLV_CONF)
SEARCH = ("ns.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.test")
PLAIN = libc.ResolverOptions((), SEARCH, 5)

# --- the plan --------------------------------------------------------------------------------

PLANS = [
    pytest.param(GLIBC, "cart", PLAIN, (
        "cart.ns.svc.cluster.local.", "cart.svc.cluster.local.", "cart.cluster.local.",
        "cart.corp.test.", "cart.",
    ), id="glibc-0-dots-search-first-as-is-last"),
    pytest.param(MUSL, "cart", PLAIN, (
        "cart.ns.svc.cluster.local.", "cart.svc.cluster.local.", "cart.cluster.local.",
        "cart.corp.test.", "cart.",
    ), id="musl-0-dots-search-first-as-is-last"),
    pytest.param(GLIBC, "a.b.c.d.e.f", PLAIN, (
        "a.b.c.d.e.f.", "a.b.c.d.e.f.ns.svc.cluster.local.", "a.b.c.d.e.f.svc.cluster.local.",
        "a.b.c.d.e.f.cluster.local.", "a.b.c.d.e.f.corp.test.",
    ), id="glibc-dots-at-ndots-as-is-first-then-search"),
    pytest.param(MUSL, "a.b.c.d.e.f", PLAIN, ("a.b.c.d.e.f.",), id="musl-dots-at-ndots-no-search"),
    pytest.param(MUSL, "a.b.c.d.e", PLAIN, (
        "a.b.c.d.e.ns.svc.cluster.local.", "a.b.c.d.e.svc.cluster.local.",
        "a.b.c.d.e.cluster.local.", "a.b.c.d.e.corp.test.", "a.b.c.d.e.",
    ), id="musl-4-dots-still-searches"),
    pytest.param(GLIBC, "www.example.com.", PLAIN, ("www.example.com.",), id="glibc-trailing-dot"),
    pytest.param(MUSL, "www.example.com.", PLAIN, ("www.example.com.",), id="musl-trailing-dot"),
    pytest.param(GLIBC, "x.y", libc.ResolverOptions((), SEARCH, 1), (
        "x.y.", "x.y.ns.svc.cluster.local.", "x.y.svc.cluster.local.", "x.y.cluster.local.",
        "x.y.corp.test.",
    ), id="glibc-ndots-1"),
    pytest.param(MUSL, "x", libc.ResolverOptions((), ("a" * 120, "b" * 120, "c" * 20), 5), (
        f"x.{'a' * 120}.", f"x.{'b' * 120}.", "x.",
    ), id="musl-reads-255-characters-of-search"),
]  # fmt: skip


@pytest.mark.parametrize(("libc_name", "name", "options", "expected"), PLANS)
def test_candidates(
    libc_name: str, name: str, options: libc.ResolverOptions, expected: tuple[str, ...]
) -> None:
    assert libc.candidates(name, options, libc_name) == expected


VERDICTS = [
    pytest.param(GLIBC, Reply.NXDOMAIN, Reply.NXDOMAIN, Verdict.NEXT, id="glibc-nxdomain-next"),
    pytest.param(MUSL, Reply.NXDOMAIN, Reply.NXDOMAIN, Verdict.NEXT, id="musl-nxdomain-next"),
    pytest.param(GLIBC, Reply.NODATA, Reply.NODATA, Verdict.NEXT, id="glibc-nodata-next"),
    pytest.param(MUSL, Reply.NODATA, Reply.NODATA, Verdict.STOP, id="musl-nodata-stops"),
    pytest.param(GLIBC, Reply.SERVFAIL, Reply.SERVFAIL, Verdict.NEXT, id="glibc-servfail-next"),
    pytest.param(MUSL, Reply.SERVFAIL, Reply.NXDOMAIN, Verdict.STOP, id="musl-servfail-stops"),
    pytest.param(GLIBC, Reply.ADDRESSES, Reply.NODATA, Verdict.FOUND, id="glibc-a-only-found"),
    pytest.param(MUSL, Reply.NODATA, Reply.ADDRESSES, Verdict.FOUND, id="musl-aaaa-only-found"),
]


@pytest.mark.parametrize(("libc_name", "a", "aaaa", "verdict"), VERDICTS)
def test_judge(libc_name: str, a: Reply, aaaa: Reply, verdict: Verdict) -> None:
    assert libc.judge(libc_name, a, aaaa) is verdict


def test_resolv_conf_options() -> None:
    options = libc.read_options("nameserver 10.96.0.10\nsearch a b\noptions rotate ndots:3\n")
    assert options == libc.ResolverOptions(("10.96.0.10",), ("a", "b"), 3)
    assert libc.read_options("options ndots:40\n").ndots == libc.MAX_NDOTS


# --- the lookups, against the lab ----------------------------------------------------------


@pytest.fixture(scope="module")
def dns() -> ClusterDNS:
    outside = Outside(ndots.ZONES.items())
    return ClusterDNS(load_snapshot([DEMO]), ZoneConfig(), outside)


def answer(found: lookup.Lookup) -> tuple[str, ...]:
    """In the lab client's terms (``gai_client``: ``error NONAME``)."""
    return found.addresses or (f"error {found.error.removeprefix('EAI_')}",)


CASE_LIBC = [
    pytest.param(case, libc_name, id=f"{case.id}-{libc_name}")
    for case in ndots.CASES
    for libc_name in ndots.LIBCS
]


@pytest.mark.parametrize(("case", "libc_name"), CASE_LIBC)
def test_without_absorption_explain_counts_what_the_lab_observes(
    case: ndots.Case, libc_name: str
) -> None:
    cold, warm = ndots.explained(case, libc_name, absorb=False)
    assert ndots.predicted_counts(cold) == ndots.Counts(*ndots.EXPECTED_OFF_COLD[case.id])
    assert answer(cold) == ndots.EXPECTED_ANSWER[case.id]
    assert (warm.queries_sent, warm.queries_left) == (cold.queries_sent, 0)


@pytest.mark.parametrize(("case", "libc_name"), CASE_LIBC)
def test_with_absorption_explain_keeps_the_answer_and_the_lab_targets(
    case: ndots.Case, libc_name: str
) -> None:
    """test_ndots.py's targets: the same answer; never more queries; the external name costs
    the client 2 queries, at most H+3 leave cold and none warm; warm, nothing reaches kdns."""
    cold, warm = ndots.explained(case, libc_name, absorb=True)
    plain_sent, plain_kdns, plain_nsd = ndots.EXPECTED_OFF_COLD[case.id]
    assert answer(cold) == answer(warm) == ndots.EXPECTED_ANSWER[case.id]
    assert cold.queries_sent <= plain_sent
    assert cold.queries_left <= plain_kdns + plain_nsd
    assert warm.left_to("kdns") == 0
    if case.id == "external":
        assert cold.queries_sent == warm.queries_sent == 2
        assert cold.queries_left <= ndots.H + 3
        assert warm.queries_left == 0


def test_the_autopath_answer_is_shown_with_what_the_walk_asked(dns: ClusterDNS) -> None:
    node = OfflineNode(dns, OPTIONS.search)
    found = lookup.run("www.example.test", OPTIONS, GLIBC, node, "cold")
    first = found.steps[0].a
    assert (first.how, first.cname) == ("autopath", "www.example.test.")
    assert first.left == (
        "kdns test.svc.cluster.local. A",  # the namespace cut; .cluster.local is the shape's
        "upstream www.example.test.corp.test. A",
        "upstream www.example.test.lab.test. A",
        "upstream www.example.test. A",
        "upstream www.example.test. AAAA",
    )


def test_kdns_alone_sends_every_query_to_kdns(dns: ClusterDNS) -> None:
    found = lookup.run("www.example.test", OPTIONS, GLIBC, KdnsAlone(dns), "cold")
    assert (found.queries_sent, found.left_to("kdns"), found.left_to("upstream")) == (12, 12, 6)
    assert found.addresses == ("192.0.2.1", "2001:db8::1")


@pytest.mark.parametrize(
    ("search", "namespace"),
    [
        pytest.param(ndots.CLUSTER_SEARCH + ndots.HOST_SEARCH, "shop", id="cluster-first"),
        pytest.param(("shop.svc.cluster.local", "corp.test"), None, id="custom-list"),
        pytest.param(("a.b.svc.cluster.local", "svc.cluster.local", "cluster.local"), None,
                     id="not-a-namespace"),
    ],
)  # fmt: skip
def test_cluster_first_shape(search: tuple[str, ...], namespace: str | None) -> None:
    assert cluster_first_namespace(search, ("cluster.local",)) == namespace


# --- the command -----------------------------------------------------------------------------


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_nodecache_explain_json_has_the_variants_and_the_fix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(
        ["explain", "--manifests", str(DEMO), "--namespace", "shop", "--host-search",
         "corp.test", "--json", "cart.shop.svc.cluster.local"],
        capsys,
    )  # fmt: skip
    assert code == 0
    document = json.loads(out)
    labels = [item["label"] for item in document["lookups"]]
    assert labels == ["as typed", "trailing dot", "absorption off", "again, warm"]
    fixes = [(s["lookup"]["label"], s["lookup"]["queries_left"]) for s in document["suggestions"]]
    assert fixes == [("FQDN cart.shop.svc.cluster.local.", 2), ("ndots 2", 2)]
    assert document["lookups"][0]["queries_left"] == 4
    first = document["lookups"][0]["queries"][0]
    assert (first["answered_by"], first["cname"]) == ("autopath", "cart.shop.svc.cluster.local.")
    assert document["lookups"][0]["addresses"] == ["10.96.10.11"]


ERRORS = [
    pytest.param(["explain", "cart"], "--resolv-conf FILE, --namespace NS or --pod NS/NAME",
                 id="no-resolv-conf"),
    pytest.param(["explain", "--namespace", "shop", "cart"], "--manifests PATH", id="no-source"),
    pytest.param(["explain", "--manifests", str(DEMO), "--pod", "shop", "cart"], "--pod:",
                 id="bad-pod"),
    pytest.param(["explain", "--manifests", str(DEMO), "--pod", "shop/nope", "cart"],
                 "no Pod shop/nope", id="missing-pod"),
    pytest.param(["explain", "--namespace", "shop", "--server", "127.0.0.1:99999", "cart"],
                 "--server:", id="bad-server"),
    pytest.param(["explain", "--manifests", str(DEMO), "--namespace", "shop",
                  "--outside-zone", "/nonexistent", "cart"], "--outside-zone:", id="bad-zone"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), ERRORS)
def test_bad_flags_exit_2_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert message in err


# --- the kubelet's resolv.conf ---------------------------------------------------------------

KUBELET = [
    pytest.param({}, "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local "
                 "cluster.local corp.test\noptions ndots:5\n", id="cluster-first"),
    pytest.param({"host_network": True}, "search corp.test\n", id="host-network-is-default"),
    pytest.param({"dns_policy": "ClusterFirstWithHostNet", "host_network": True},
                 "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local "
                 "cluster.local corp.test\noptions ndots:5\n", id="cluster-first-with-host-net"),
    pytest.param({"dns_policy": "Default"}, "search corp.test\n", id="default"),
    pytest.param({"dns_policy": "None", "searches": ("a.example",)}, "search a.example\n",
                 id="none-with-dns-config"),
    pytest.param({"searches": ("corp.test", "b.example")},
                 "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local "
                 "cluster.local corp.test b.example\noptions ndots:5\n", id="searches-merged"),
]  # fmt: skip


@pytest.mark.parametrize(("pod", "expected"), KUBELET)
def test_the_kubelets_resolv_conf(pod: dict[str, object], expected: str) -> None:
    assert resolv_conf("shop", "cluster.local", ("corp.test",), **pod) == expected  # type: ignore[arg-type]
