"""The cluster zone's shape (nodecache.searchpath.shape) never denies what kdns would answer.

A table of names per rule, and a hypothesis property over random cluster states, random names
and every qtype: whenever ``shape`` calls a name IMPOSSIBLE, kdns's own answer (the real
``Responder`` over the real table) is NXDOMAIN; and whenever kdns answers ``<ns>.svc.<zone>``
NXDOMAIN (the namespace cut), every name ``shape`` places under that namespace is NXDOMAIN in
kdns too. Those two facts are what make answering them on the node safe.
"""

from __future__ import annotations

import os

import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdns import wire
from kdns.model import KubeObject, Service
from kdns.names import text_to_name
from kdns.runtime import Runtime
from kdns.serve.protocol import Responder
from nodecache.searchpath.shape import Kind, place, to_labels, to_wire, unshaped_subtrees
from tests.unit.test_fast_equals_slow import CONFIGS, clusters

ZONES = (("cluster", "local"),)

SHAPE_CASES = [
    # (name, qtype, kind, namespace)
    ("api.github.com.cluster.local", wire.A, Kind.IMPOSSIBLE, ""),  # R1.4: not svc/pod
    ("www.example.test.shop.svc.cluster.local", wire.A, Kind.IMPOSSIBLE, ""),  # R3.9: proto
    ("a.b.c.d.e.shop.svc.cluster.local", wire.A, Kind.IMPOSSIBLE, ""),  # R1.4: too long
    ("_http._tcp.web.shop.svc.cluster.local", wire.SRV, Kind.NAMESPACE, "shop"),  # R3.4
    ("http.sctp.web.shop.svc.cluster.local", wire.SRV, Kind.NAMESPACE, "shop"),  # R3.9c
    ("_tcp.web.shop.svc.cluster.local", wire.SRV, Kind.NAMESPACE, "shop"),  # endpoint _tcp
    ("web.shop.svc.cluster.local", wire.A, Kind.NAMESPACE, "shop"),  # R3.1
    ("shop.svc.cluster.local", wire.A, Kind.NAMESPACE, "shop"),  # the cut name itself
    ("github.com.svc.cluster.local", wire.A, Kind.NAMESPACE, "com"),  # second expansion
    ("svc.cluster.local", wire.A, Kind.OTHER, ""),  # R8: type root
    ("cluster.local", wire.NS, Kind.OTHER, ""),  # R10: apex
    ("dns-version.cluster.local", wire.TXT, Kind.OTHER, ""),  # R11
    ("ns.dns.cluster.local", wire.A, Kind.OTHER, ""),  # R9
    ("10-0-0-1.shop.pod.cluster.local", wire.A, Kind.OTHER, ""),  # R7: --pods decides
    ("api.github.com.cluster.local", wire.SOA, Kind.OTHER, ""),  # R8: SOA off-apex NODATA
    ("www.example.test", wire.A, Kind.OUTSIDE, ""),
    ("local", wire.A, Kind.OUTSIDE, ""),
]


@pytest.mark.parametrize(
    ("name", "qtype", "kind", "namespace"),
    [pytest.param(*case, id=f"{case[0]}-{case[1]}") for case in SHAPE_CASES],
)
def test_place(name: str, qtype: int, kind: Kind, namespace: str) -> None:
    found = place(text_to_name(name), qtype, ZONES)
    assert found.kind is kind
    assert found.namespace == namespace


@pytest.mark.parametrize("name", ["Cart.Shop.svc.cluster.local", "a.b", "x"])
def test_wire_round_trip(name: str) -> None:
    labels = text_to_name(name)
    assert to_labels(to_wire(labels)) == labels


LABELS = ["svc", "pod", "a", "b", "c", "web", "db", "x", "_http", "_tcp", "tcp", "_udp", "dns",
          "http", "www", "com", "example", "h0", "10-0-0-1", "cluster", "local"]  # fmt: skip
QTYPES = ["A", "AAAA", "SRV", "PTR", "TXT", "CNAME", "MX", "ANY", "SOA", "NS"]


def cluster_names(
    objects: list[KubeObject], custom: tuple[tuple[str, ...], ...] = ()
) -> st.SearchStrategy[list[str]]:
    """Labels left of the zone: mostly grammar-shaped and built from the drawn cluster's own
    Services and ports (so real names are common), sometimes random, and sometimes a custom
    record's name (``custom``, relative to the zone), one of its ancestors or a child."""
    services = [obj for obj in objects if isinstance(obj, Service)] or [Service("a", "web")]
    ports = [(p.name, p.protocol.lower()) for svc in services for p in svc.ports if p.name]
    ports = ports or [("http", "tcp")]

    @st.composite
    def names(draw: st.DrawFn) -> list[str]:
        if custom and draw(st.integers(0, 4)) == 0:
            labels = list(draw(st.sampled_from(custom)))
            return draw(st.sampled_from([labels, labels[1:], labels[2:], ["x", *labels]]))
        if draw(st.integers(0, 3)) == 0:
            return draw(st.lists(st.sampled_from(LABELS), max_size=7))
        service = draw(st.sampled_from(services))
        base = [service.name, service.namespace, "svc"]
        kind = draw(st.sampled_from(["service", "endpoint", "port", "port", "junk"]))
        if kind == "endpoint":
            base.insert(0, draw(st.sampled_from(["h0", "h1", "10-0-0-1", "fd00--1", "_tcp"])))
        elif kind == "port":
            port, protocol = draw(st.sampled_from(ports))
            underscore = draw(st.sampled_from(["_", ""]))
            protocol = draw(st.sampled_from([protocol, protocol, "example", "tcp"]))
            base[:0] = [underscore + port, underscore + protocol]
        elif kind == "junk":
            base[:0] = draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=4))
        return base

    return names()


def under(labels: list[str], subtree: tuple[str, ...]) -> bool:
    return len(labels) >= len(subtree) and tuple(labels[len(labels) - len(subtree) :]) == subtree


def kdns_rcode(responder: Responder, name: str, qtype: str) -> int:
    packet = dns.message.make_query(name, qtype).to_wire()
    reply = responder.answer(packet)
    assert reply is not None
    return dns.message.from_wire(reply).rcode()


@settings(
    max_examples=int(os.environ.get("KDNS_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(objects=clusters(), config_index=st.integers(0, len(CONFIGS) - 1), data=st.data())
def test_local_denials_are_kdns_denials(
    objects: list[KubeObject], config_index: int, data: st.DataObject
) -> None:
    config = CONFIGS[config_index]
    custom = tuple(name[:-2] for name in config.custom.by_name if name[-2:] == ZONES[0])
    kept_out = unshaped_subtrees(config.custom.by_name, ZONES)
    queries = data.draw(
        st.lists(
            st.tuples(cluster_names(objects, custom), st.sampled_from(QTYPES)),
            min_size=1,
            max_size=20,
        )
    )
    responder = Responder()
    Runtime(config, responder).replace(objects)
    for labels, qtype in queries:
        name = ".".join([*labels, "cluster", "local"]) + "."
        if any(under(labels, subtree[:-2]) for subtree in kept_out):
            continue  # kdns serves it outside the grammar: nodecache passes it to kdns
        found = place(text_to_name(name), dns.rdatatype.from_text(qtype), ZONES)
        rcode = kdns_rcode(responder, name, qtype)
        if found.kind is Kind.IMPOSSIBLE:
            assert rcode == dns.rcode.NXDOMAIN, (name, qtype)
        if found.kind is Kind.NAMESPACE:
            cut = ".".join(found.cut) + "."
            if kdns_rcode(responder, cut, "A") == dns.rcode.NXDOMAIN:
                assert rcode == dns.rcode.NXDOMAIN, (name, qtype, cut)


@pytest.mark.parametrize(
    ("name", "cut"),
    [
        # Found by the property above: a custom record below a namespace the cluster lacks
        # made kdns deny the cut name while answering a name under it.
        pytest.param(
            "web.a.svc.cluster.local.", "a.svc.cluster.local.", id="custom-under-absent-ns"
        ),
    ],
)
def test_a_custom_name_keeps_its_namespace_cut_open(name: str, cut: str) -> None:
    responder = Responder()
    Runtime(CONFIGS[5], responder).replace([Service("a", "x")])
    assert kdns_rcode(responder, name, "A") == dns.rcode.NOERROR
    assert kdns_rcode(responder, cut, "A") == dns.rcode.NOERROR  # NODATA: an empty non-terminal
