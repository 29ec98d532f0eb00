"""Property tests: the compiled table answers exactly what the slow path answers.

Hypothesis draws random cluster states and random queries. The fast path is a ``Responder``
whose table was built incrementally (a first state, then a second applied as a diff); the
reference is a table with no compiled entries, so every query goes through ``resolve``. Replies
must be byte-identical (same query, so same ID). Random bytes must never raise.
"""

from __future__ import annotations

import os

import dns.message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdns.config import ZoneConfig, build_config
from kdns.model import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    KubeObject,
    Namespace,
    Pod,
    Service,
    ServicePort,
)
from kdns.runtime import Runtime
from kdns.serve.protocol import Responder
from kdns.table import AnswerTable

NAMESPACES = ["a", "b", "c"]
SERVICES = ["web", "db", "x"]
V4 = [f"10.0.0.{i}" for i in range(1, 6)]
V6 = ["fd00::1", "fd00::2"]
PORTS = [ServicePort("http", 80), ServicePort("", 8080), ServicePort("dns", 53, "UDP")]
HOSTNAMES = ["", "", "h0", "h1"]


@st.composite
def clusters(draw: st.DrawFn) -> list[KubeObject]:
    objects: list[KubeObject] = [Namespace(n) for n in draw(st.sets(st.sampled_from(NAMESPACES)))]
    for ns in NAMESPACES:
        for name in draw(st.sets(st.sampled_from(SERVICES))):
            kind = draw(st.sampled_from(["ClusterIP", "headless", "ExternalName"]))
            if kind == "ExternalName":
                target = draw(st.sampled_from(
                    ["ext.example.com", f"web.{ns}.svc.cluster.local", "192.0.2.1", f"{name}.{ns}.svc.cluster.local"]
                ))  # fmt: skip
                objects.append(Service(ns, name, type="ExternalName", external_name=target))
                continue
            ports = tuple(draw(st.lists(st.sampled_from(PORTS), max_size=2, unique=True)))
            ips = tuple(draw(st.lists(st.sampled_from(V4 + V6), max_size=2, unique=True)))
            objects.append(Service(ns, name, cluster_ips=() if kind == "headless" else ips,
                                   headless=kind == "headless", ports=ports,
                                   publish_not_ready_addresses=draw(st.booleans())))  # fmt: skip
            for index in range(draw(st.integers(0, 2))):
                family = draw(st.sampled_from(["IPv4", "IPv6"]))
                pool = V4 if family == "IPv4" else V6
                endpoints = tuple(
                    Endpoint((draw(st.sampled_from(pool)),), draw(st.sampled_from([True, False, None])),
                             draw(st.sampled_from(HOSTNAMES)), draw(st.sampled_from(["", "pod-1"])))
                    for _ in range(draw(st.integers(0, 3)))
                )  # fmt: skip
                slice_ports = tuple(
                    EndpointPort(p.name, p.port, p.protocol)
                    for p in draw(st.lists(st.sampled_from(PORTS), max_size=2, unique=True))
                )
                objects.append(
                    EndpointSlice(ns, f"{name}-{index}", name, family, endpoints, slice_ports)
                )  # type: ignore[arg-type]
        if draw(st.booleans()):
            objects.append(Pod(ns, "p", (draw(st.sampled_from(V4 + V6)),)))
    return objects


def candidate_names() -> st.SearchStrategy[str]:
    base = st.sampled_from(
        [f"{s}.{n}.svc.cluster.local" for s in SERVICES for n in NAMESPACES]
        + [f"{n}.svc.cluster.local" for n in NAMESPACES]
        + [f"_http._tcp.{s}.{n}.svc.cluster.local" for s in SERVICES for n in NAMESPACES]
        + [f"_dns._udp.{s}.a.svc.cluster.local" for s in SERVICES]
        + [f"h0.{s}.a.svc.cluster.local" for s in SERVICES]
        + [f"10-0-0-1.{s}.b.svc.cluster.local" for s in SERVICES]
        + ["10-0-0-1.a.pod.cluster.local", "fd00--1.b.pod.cluster.local", "a.pod.cluster.local"]
        + ["cluster.local", "svc.cluster.local", "pod.cluster.local", "dns-version.cluster.local"]
        + ["ns.dns.cluster.local", "example.com", "web.a.svc.cluster.local.a.svc.cluster.local"]
        + [f"{i}.0.0.10.in-addr.arpa" for i in range(1, 6)]
        + ["1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa"]
        + ["db.corp.example", "alias.corp.example", "legacy.cluster.local", "x.corp.example"]
        + ["web.a.corp.example", "_http._tcp.web.b.corp.example", "h0.web.a.corp.example"]
    )
    return base.flatmap(
        lambda name: st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
            lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper, strict=True))
        )
    )


QTYPES = ["A", "AAAA", "SRV", "PTR", "TXT", "CNAME", "MX", "ANY", "SOA", "NS", "HINFO"]
CONFIGS = [
    ZoneConfig(),
    ZoneConfig(pods="verified", endpoint_pod_names=True),
    ZoneConfig(pods="disabled", namespaces=frozenset({"a", "b"}), ttl_s=30),
    ZoneConfig(ignore_empty_service=True, endpoint_pod_names=True),
    ZoneConfig(noendpoints=True, pods="verified"),
    build_config(
        {
            "records": [
                "db.corp.example. 30 IN A 192.0.2.10",
                "alias.corp.example. CNAME db.b.svc.cluster.local.",
                "legacy.cluster.local. TXT legacy",
                "web.a.svc.cluster.local. 7 IN A 10.9.9.9",
                "ext.example.com. 9 IN AAAA 2001:db8::9",
            ],
            "hosts": ["10.0.0.1 db.corp.example files.a.svc.cluster.local"],
        }
    ).zone,
]


def reference_reply(responder: Responder, packet: bytes) -> bytes | None:
    live = responder.table
    assert live is not None
    reference = Responder(responder.max_udp_size)
    reference.table = AnswerTable(live.index, {}, {})
    return reference.answer_slow(packet)


@settings(
    max_examples=int(os.environ.get("KDNS_PROPERTY_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    first=clusters(),
    second=clusters(),
    config_index=st.integers(0, len(CONFIGS) - 1),
    queries=st.lists(
        st.tuples(candidate_names(), st.sampled_from(QTYPES), st.booleans(), st.integers(0, 0xFFFF)),
        min_size=1, max_size=12,
    ),
)  # fmt: skip
def test_incremental_fast_path_equals_slow_path(
    first: list[KubeObject],
    second: list[KubeObject],
    config_index: int,
    queries: list[tuple[str, str, bool, int]],
) -> None:
    responder = Responder()
    runtime = Runtime(CONFIGS[config_index], responder)
    runtime.replace(first)
    runtime.replace(second)
    for name, qtype, edns, qid in queries:
        query = dns.message.make_query(name, qtype, use_edns=0 if edns else None, id=qid)
        packet = query.to_wire()
        for tcp in (False, True):
            assert responder.answer(packet, tcp=tcp) == (
                reference_reply(responder, packet) if tcp is False else _ref_tcp(responder, packet)
            ), (name, qtype, edns)


def _ref_tcp(responder: Responder, packet: bytes) -> bytes | None:
    live = responder.table
    assert live is not None
    reference = Responder(responder.max_udp_size)
    reference.table = AnswerTable(live.index, {}, {})
    return reference.answer_slow(packet, tcp=True)


@settings(max_examples=300, deadline=None)
@given(packet=st.binary(max_size=80), prefix=st.sampled_from([b"", b"\x00\x01\x01\x00\x00\x01"]))
def test_random_bytes_never_raise(packet: bytes, prefix: bytes) -> None:
    responder = _FUZZ_RESPONDER
    reply = responder.answer(prefix + packet)
    assert responder.errors == 0
    if reply is not None:
        dns.message.from_wire(reply, question_only=True)


_FUZZ_RESPONDER = Responder()
# Rewrite rules and custom records on: random questions also go through their paths.
Runtime(CONFIGS[-1], _FUZZ_RESPONDER).replace(
    [Namespace("a"), Service("a", "web", cluster_ips=("10.0.0.1",))]
)
