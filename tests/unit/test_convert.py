"""Table-driven tests for kdns.source.convert: raw object dict -> model record, or ConvertError."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest

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
from kdns.source.convert import USED_KINDS, ConvertError, convert

# --- object builders: the smallest valid object of each kind, plus overrides ------------------


def _meta(name: str, namespace: str | None, labels: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": "0b5e1b1c-0000-4000-8000-000000000001"}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels is not None:
        meta["labels"] = labels
    return meta


def ns_obj(name: str = "shop", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name, None), **extra}


def svc_obj(
    spec: dict[str, Any] | None = None, *, name: str = "cart", namespace: str | None = "shop"
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace),
    }
    if spec is not None:
        obj["spec"] = spec
    return obj


def ports_svc(*ports: Any) -> dict[str, Any]:
    return svc_obj({"clusterIP": "10.96.10.11", "ports": list(ports)})


def eps_obj(
    endpoints: Any = (),
    ports: Any = (),
    *,
    address_type: Any = "IPv4",
    service: str | None = "cart",
    labels: Any = "default",
) -> dict[str, Any]:
    if labels == "default":
        labels = {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
        if service is not None:
            labels["kubernetes.io/service-name"] = service
    obj: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {**_meta("cart-abc12", "shop"), "labels": labels},
        "addressType": address_type,
        "endpoints": list(endpoints) if isinstance(endpoints, tuple) else endpoints,
        "ports": list(ports) if isinstance(ports, tuple) else ports,
    }
    return obj


def ep(*addresses: Any, **extra: Any) -> dict[str, Any]:
    return {"addresses": list(addresses), **extra}


def pod_obj(
    status: dict[str, Any] | None = None,
    *,
    name: str = "cart-1",
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": _meta(name, "shop")}
    if status is not None:
        obj["status"] = status
    if spec is not None:
        obj["spec"] = spec
    return obj


def without(obj: dict[str, Any], *path: str) -> dict[str, Any]:
    """A deep copy of obj with the key at path removed."""
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def with_(obj: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    """A deep copy of obj with the key at path set to value."""
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


# --- valid conversions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    obj: dict[str, Any]
    expected: KubeObject | None


TRIGGER = "endpoints.kubernetes.io/last-change-trigger-time"
CART_PORTS = (ServicePort("http", 80, "TCP"), ServicePort("grpc", 9090, "TCP"))

CASES = [
    # Namespace
    Case("namespace", ns_obj("shop"), Namespace("shop")),
    Case(
        "namespace-ignores-metadata-namespace",
        with_(ns_obj("data"), "bogus", "metadata", "namespace"),
        Namespace("data"),
    ),
    # Service: addresses
    Case(
        "service-clusterip-only",
        svc_obj({"clusterIP": "10.96.10.11"}),
        Service("shop", "cart", cluster_ips=("10.96.10.11",)),
    ),
    Case(
        "service-clusterips-preferred-over-clusterip",
        svc_obj({"clusterIP": "10.96.10.20", "clusterIPs": ["10.96.10.20", "fd00:10:96::20"]}),
        Service("shop", "cart", cluster_ips=("10.96.10.20", "fd00:10:96::20")),
    ),
    Case(
        "service-empty-clusterips-falls-back",
        svc_obj({"clusterIP": "10.96.10.11", "clusterIPs": []}),
        Service("shop", "cart", cluster_ips=("10.96.10.11",)),
    ),
    Case(
        "service-ipv6-canonicalised",
        svc_obj({"clusterIPs": ["FD00:10:96:0:0:0:0:20"]}),
        Service("shop", "cart", cluster_ips=("fd00:10:96::20",)),
    ),
    Case(
        "service-duplicate-ips-collapse",
        svc_obj({"clusterIPs": ["10.96.10.11", "10.96.10.11"]}),
        Service("shop", "cart", cluster_ips=("10.96.10.11",)),
    ),
    Case(
        "service-headless-clusterip",
        svc_obj({"clusterIP": "None"}),
        Service("shop", "cart", headless=True),
    ),
    Case(
        "service-headless-clusterips",
        svc_obj({"clusterIP": "None", "clusterIPs": ["None"]}),
        Service("shop", "cart", headless=True),
    ),
    Case(
        "service-being-allocated-no-clusterip",
        svc_obj({"type": "ClusterIP"}),
        Service("shop", "cart"),
    ),
    Case("service-empty-clusterip", svc_obj({"clusterIP": ""}), Service("shop", "cart")),
    Case("service-no-spec", svc_obj(None), Service("shop", "cart")),
    Case(
        "service-nodeport-type-kept",
        svc_obj({"type": "NodePort", "clusterIP": "10.96.10.11"}),
        Service("shop", "cart", type="NodePort", cluster_ips=("10.96.10.11",)),
    ),
    Case(
        "service-loadbalancer-type-kept",
        svc_obj({"type": "LoadBalancer", "clusterIP": "10.96.10.11"}),
        Service("shop", "cart", type="LoadBalancer", cluster_ips=("10.96.10.11",)),
    ),
    # Service: ExternalName
    Case(
        "service-externalname",
        svc_obj({"type": "ExternalName", "externalName": "payments.example.com"}),
        Service("shop", "cart", type="ExternalName", external_name="payments.example.com"),
    ),
    Case(
        "service-externalname-ignores-clusterip",
        svc_obj({"type": "ExternalName", "externalName": "x.example.com", "clusterIP": "junk"}),
        Service("shop", "cart", type="ExternalName", external_name="x.example.com"),
    ),
    # Service: ports and flags
    Case(
        "service-ports",
        ports_svc(
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
            {"name": "grpc", "port": 9090, "targetPort": "grpc"},
        ),
        Service("shop", "cart", cluster_ips=("10.96.10.11",), ports=CART_PORTS),
    ),
    Case(
        "service-port-defaults",
        ports_svc({"port": 8080}),
        Service("shop", "cart", cluster_ips=("10.96.10.11",), ports=(ServicePort("", 8080),)),
    ),
    Case(
        "service-port-null-name-and-protocol",
        ports_svc({"name": None, "port": 53, "protocol": None}),
        Service("shop", "cart", cluster_ips=("10.96.10.11",), ports=(ServicePort("", 53),)),
    ),
    Case(
        "service-port-udp-sctp",
        ports_svc(
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "sig", "port": 2905, "protocol": "SCTP"},
        ),
        Service(
            "shop",
            "cart",
            cluster_ips=("10.96.10.11",),
            ports=(ServicePort("dns", 53, "UDP"), ServicePort("sig", 2905, "SCTP")),
        ),
    ),
    Case(
        "service-port-bounds",
        ports_svc({"name": "a", "port": 1}, {"name": "b", "port": 65535}),
        Service(
            "shop",
            "cart",
            cluster_ips=("10.96.10.11",),
            ports=(ServicePort("a", 1), ServicePort("b", 65535)),
        ),
    ),
    Case(
        "service-ports-null",
        svc_obj({"clusterIP": "10.96.10.11", "ports": None}),
        Service("shop", "cart", cluster_ips=("10.96.10.11",)),
    ),
    Case(
        "service-publish-not-ready",
        svc_obj({"clusterIP": "None", "publishNotReadyAddresses": True}),
        Service("shop", "cart", headless=True, publish_not_ready_addresses=True),
    ),
    # metadata.namespace defaulting
    Case(
        "namespace-defaults-when-absent",
        svc_obj({"clusterIP": "10.96.0.1"}, name="kubernetes", namespace=None),
        Service("default", "kubernetes", cluster_ips=("10.96.0.1",)),
    ),
    Case(
        "namespace-defaults-when-null",
        with_(svc_obj({"clusterIP": "10.96.0.1"}), None, "metadata", "namespace"),
        Service("default", "cart", cluster_ips=("10.96.0.1",)),
    ),
    # EndpointSlice
    Case(
        "slice-full",
        eps_obj(
            [
                ep(
                    "10.244.1.30",
                    conditions={"ready": True, "serving": True, "terminating": False},
                    hostname="db-0",
                    nodeName="kind-worker",
                    targetRef={"kind": "Pod", "name": "db-0", "namespace": "shop"},
                ),
                ep("10.244.1.31", conditions={"ready": False}, hostname="db-1"),
                ep("10.244.1.32", conditions={}),
                ep("10.244.1.33"),
            ],
            [{"name": "postgres", "port": 5432, "protocol": "TCP"}],
        ),
        EndpointSlice(
            "shop",
            "cart-abc12",
            "cart",
            "IPv4",
            (
                Endpoint(("10.244.1.30",), True, "db-0", "db-0"),
                Endpoint(("10.244.1.31",), False, "db-1"),
                Endpoint(("10.244.1.32",), None),
                Endpoint(("10.244.1.33",), None),
            ),
            (EndpointPort("postgres", 5432, "TCP"),),
        ),
    ),
    Case(
        "slice-targetref-not-a-pod",
        eps_obj([ep("172.18.0.2", targetRef={"kind": "Node", "name": "kind-control-plane"})]),
        EndpointSlice("shop", "cart-abc12", "cart", "IPv4", (Endpoint(("172.18.0.2",)),)),
    ),
    Case(
        "slice-null-endpoints-and-ports",
        eps_obj(None, None),
        EndpointSlice("shop", "cart-abc12", "cart", "IPv4"),
    ),
    # endpoints.kubernetes.io/last-change-trigger-time: DNS programming latency's start.
    Case(
        "slice-trigger-time",
        with_(eps_obj(), {TRIGGER: "2026-12-02T07:00:00.5Z"}, "metadata", "annotations"),
        EndpointSlice("shop", "cart-abc12", "cart", "IPv4", changed_at=1796194800.5),
    ),
    Case(
        "slice-trigger-time-nanoseconds-and-offset",
        with_(
            eps_obj(), {TRIGGER: "2026-12-02T08:00:00.123456789+01:00"}, "metadata", "annotations"
        ),
        EndpointSlice("shop", "cart-abc12", "cart", "IPv4", changed_at=1796194800.123456),
    ),
    Case(
        "slice-trigger-time-unreadable-is-ignored",
        with_(eps_obj(), {TRIGGER: "yesterday"}, "metadata", "annotations"),
        EndpointSlice("shop", "cart-abc12", "cart", "IPv4"),
    ),
    Case(
        "slice-trigger-time-without-zone-is-ignored",
        with_(eps_obj(), {TRIGGER: "2026-12-02T07:00:00"}, "metadata", "annotations"),
        EndpointSlice("shop", "cart-abc12", "cart", "IPv4"),
    ),
    Case(
        "slice-missing-endpoints-and-ports",
        without(without(eps_obj(), "endpoints"), "ports"),
        EndpointSlice("shop", "cart-abc12", "cart", "IPv4"),
    ),
    Case(
        "slice-without-service-label",
        eps_obj(service=None),
        EndpointSlice("shop", "cart-abc12", "", "IPv4"),
    ),
    Case(
        "slice-null-labels",
        eps_obj(labels=None),
        EndpointSlice("shop", "cart-abc12", "", "IPv4"),
    ),
    Case(
        "slice-port-defaults-and-null-port",
        eps_obj(ports=[{"port": 8080}, {"name": None, "port": None, "protocol": "UDP"}]),
        EndpointSlice(
            "shop",
            "cart-abc12",
            "cart",
            "IPv4",
            (),
            (EndpointPort("", 8080, "TCP"), EndpointPort("", None, "UDP")),
        ),
    ),
    Case(
        "slice-ipv6-canonicalised",
        eps_obj([ep("fd00:10:244:0::1:14", "fd00:10:244::2:14")], address_type="IPv6"),
        EndpointSlice(
            "shop",
            "cart-abc12",
            "cart",
            "IPv6",
            (Endpoint(("fd00:10:244::1:14", "fd00:10:244::2:14")),),
        ),
    ),
    Case(
        "slice-fqdn-addresses-kept-verbatim",
        eps_obj([ep("db.example.com")], address_type="FQDN"),
        EndpointSlice("shop", "cart-abc12", "cart", "FQDN", (Endpoint(("db.example.com",)),)),
    ),
    Case(
        "slice-endpoint-with-no-addresses",
        eps_obj([ep()]),
        EndpointSlice("shop", "cart-abc12", "cart", "IPv4", (Endpoint(()),)),
    ),
    # Pod
    Case(
        "pod-podips",
        pod_obj(
            {"podIP": "10.244.1.20", "podIPs": [{"ip": "10.244.1.20"}, {"ip": "fd00:10:244::1:14"}]}
        ),
        Pod("shop", "cart-1", ("10.244.1.20", "fd00:10:244::1:14")),
    ),
    Case(
        "pod-podip-fallback",
        pod_obj({"phase": "Running", "podIP": "10.244.1.11"}),
        Pod("shop", "cart-1", ("10.244.1.11",)),
    ),
    Case(
        "pod-empty-podips-falls-back",
        pod_obj({"podIP": "10.244.1.11", "podIPs": []}),
        Pod("shop", "cart-1", ("10.244.1.11",)),
    ),
    Case("pod-pending-no-ip", pod_obj({"phase": "Pending"}), Pod("shop", "cart-1", ())),
    Case("pod-no-status", pod_obj(None), Pod("shop", "cart-1", ())),
    Case("pod-empty-podip", pod_obj({"podIP": ""}), Pod("shop", "cart-1", ())),
    Case(
        "pod-dns-facts-for-autopath",
        pod_obj(
            {"phase": "Running", "podIP": "10.244.1.11"},
            spec={
                "nodeName": "node-a",
                "dnsPolicy": "ClusterFirstWithHostNet",
                "hostNetwork": True,
                "dnsConfig": {"searches": ["corp.example"], "options": [{"name": "ndots"}]},
            },
        ),
        Pod(
            "shop",
            "cart-1",
            ("10.244.1.11",),
            dns_policy="ClusterFirstWithHostNet",
            host_network=True,
            dns_searches=("corp.example",),
            node_name="node-a",
        ),
    ),
    Case(
        "pod-finished-phase",
        pod_obj({"phase": "Succeeded", "podIP": "10.244.1.11"}),
        Pod("shop", "cart-1", ("10.244.1.11",), finished=True),
    ),
    # Kinds and versions we do not use
    Case("unused-configmap", {"apiVersion": "v1", "kind": "ConfigMap", "data": {}}, None),
    Case("unused-deployment", {"apiVersion": "apps/v1", "kind": "Deployment"}, None),
    Case("unused-legacy-endpoints", {"apiVersion": "v1", "kind": "Endpoints"}, None),
    Case(
        "unused-endpointslice-v1beta1",
        with_(eps_obj([ep("not even checked")]), "discovery.k8s.io/v1beta1", "apiVersion"),
        None,
    ),
    Case(
        "unused-service-wrong-group",
        with_(svc_obj({"clusterIP": "bogus"}), "example.com/v1", "apiVersion"),
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_convert(case: Case) -> None:
    assert convert(case.obj) == case.expected


# --- errors -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCase:
    id: str
    obj: Any
    field: str
    message: str
    """A substring of ConvertError.message."""


ERROR_CASES = [
    # envelope and metadata
    ErrorCase("not-a-mapping", ["a", "list"], "<object>", "expected a mapping, got a list"),
    ErrorCase("kind-missing", without(ns_obj(), "kind"), "kind", "got None"),
    ErrorCase("kind-not-string", with_(ns_obj(), 7, "kind"), "kind", "got 7"),
    ErrorCase("apiversion-missing", without(ns_obj(), "apiVersion"), "apiVersion", "got None"),
    ErrorCase("metadata-missing", without(svc_obj({}), "metadata"), "metadata", "missing"),
    ErrorCase("metadata-not-mapping", with_(svc_obj({}), "x", "metadata"), "metadata", "mapping"),
    ErrorCase("name-missing", without(svc_obj({}), "metadata", "name"), "metadata.name", "missing"),
    ErrorCase("name-empty", with_(pod_obj(), "", "metadata", "name"), "metadata.name", "''"),
    ErrorCase("name-not-string", with_(ns_obj(), 12, "metadata", "name"), "metadata.name", "12"),
    ErrorCase(
        "namespace-not-string",
        with_(svc_obj({}), ["shop"], "metadata", "namespace"),
        "metadata.namespace",
        "expected a string, got a list",
    ),
    # Service
    ErrorCase("spec-not-mapping", svc_obj(None) | {"spec": []}, "spec", "expected a mapping"),
    ErrorCase("type-unknown", svc_obj({"type": "Ingress"}), "spec.type", "got 'Ingress'"),
    ErrorCase("type-not-string", svc_obj({"type": 3}), "spec.type", "expected a string"),
    ErrorCase("ports-not-list", svc_obj({"ports": {"port": 80}}), "spec.ports", "list"),
    ErrorCase("port-not-mapping", ports_svc("80"), "spec.ports[0]", "expected a mapping"),
    ErrorCase(
        "port-word",
        ports_svc({"name": "http", "port": 80}, {"name": "grpc", "port": "eighty"}),
        "spec.ports[1].port",
        "expected an integer 1-65535, got 'eighty'",
    ),
    ErrorCase("port-numeric-string", ports_svc({"port": "80"}), "spec.ports[0].port", "'80'"),
    ErrorCase("port-zero", ports_svc({"port": 0}), "spec.ports[0].port", "got 0"),
    ErrorCase("port-too-big", ports_svc({"port": 65536}), "spec.ports[0].port", "got 65536"),
    ErrorCase("port-bool", ports_svc({"port": True}), "spec.ports[0].port", "got True"),
    ErrorCase("port-float", ports_svc({"port": 80.0}), "spec.ports[0].port", "got 80.0"),
    ErrorCase("port-missing", ports_svc({"name": "http"}), "spec.ports[0].port", "missing"),
    ErrorCase("port-name-int", ports_svc({"name": 80, "port": 80}), "spec.ports[0].name", "80"),
    ErrorCase(
        "port-protocol-lowercase",
        ports_svc({"port": 80, "protocol": "tcp"}),
        "spec.ports[0].protocol",
        "expected one of TCP, UDP, SCTP, got 'tcp'",
    ),
    ErrorCase(
        "port-protocol-http",
        ports_svc({"port": 80}, {"port": 81, "protocol": "HTTP"}),
        "spec.ports[1].protocol",
        "'HTTP'",
    ),
    ErrorCase(
        "clusterip-invalid",
        svc_obj({"clusterIP": "10.96.0.300"}),
        "spec.clusterIP",
        "expected an IP address, got '10.96.0.300'",
    ),
    ErrorCase("clusterip-int", svc_obj({"clusterIP": 10}), "spec.clusterIP", "string, got 10"),
    ErrorCase(
        "clusterips-second-invalid",
        svc_obj({"clusterIPs": ["10.96.10.20", "fd00::zz"]}),
        "spec.clusterIPs[1]",
        "'fd00::zz'",
    ),
    ErrorCase(
        "clusterips-none-mixed",
        svc_obj({"clusterIPs": ["None", "10.96.10.20"]}),
        "spec.clusterIPs",
        '"None" must be the only entry',
    ),
    ErrorCase(
        "clusterips-not-list", svc_obj({"clusterIPs": "10.96.0.1"}), "spec.clusterIPs", "list"
    ),
    ErrorCase(
        "clusterip-zone-index",
        svc_obj({"clusterIP": "fe80::1%eth0"}),
        "spec.clusterIP",
        "zone index",
    ),
    ErrorCase(
        "externalname-missing",
        svc_obj({"type": "ExternalName"}),
        "spec.externalName",
        "missing",
    ),
    ErrorCase(
        "externalname-empty",
        svc_obj({"type": "ExternalName", "externalName": ""}),
        "spec.externalName",
        "non-empty string",
    ),
    ErrorCase(
        "publish-not-ready-string",
        svc_obj({"publishNotReadyAddresses": "true"}),
        "spec.publishNotReadyAddresses",
        "expected a boolean, got 'true'",
    ),
    # EndpointSlice
    ErrorCase("addresstype-missing", without(eps_obj(), "addressType"), "addressType", "missing"),
    ErrorCase("addresstype-unknown", eps_obj(address_type="IPv5"), "addressType", "'IPv5'"),
    ErrorCase(
        "service-label-not-string",
        eps_obj(labels={"kubernetes.io/service-name": 5}),
        'metadata.labels["kubernetes.io/service-name"]',
        "got 5",
    ),
    ErrorCase("labels-not-mapping", eps_obj(labels=["x"]), "metadata.labels", "mapping"),
    ErrorCase("endpoints-not-list", eps_obj({"addresses": []}), "endpoints", "list"),
    ErrorCase(
        "endpoint-not-mapping", eps_obj([ep("10.0.0.1"), "10.0.0.2"]), "endpoints[1]", "mapping"
    ),
    ErrorCase(
        "addresses-missing", eps_obj([{"hostname": "a"}]), "endpoints[0].addresses", "missing"
    ),
    ErrorCase(
        "addresses-not-list",
        eps_obj([{"addresses": "10.0.0.1"}]),
        "endpoints[0].addresses",
        "expected a list",
    ),
    ErrorCase(
        "address-invalid",
        eps_obj([ep("10.244.1.1"), ep("10.244.1.2", "10.244.1.x")]),
        "endpoints[1].addresses[1]",
        "'10.244.1.x'",
    ),
    ErrorCase(
        "address-v6-in-v4-slice",
        eps_obj([ep("fd00:10:244::1")]),
        "endpoints[0].addresses[0]",
        "expected an IPv4 address",
    ),
    ErrorCase(
        "address-v4-in-v6-slice",
        eps_obj([ep("10.244.1.1")], address_type="IPv6"),
        "endpoints[0].addresses[0]",
        "expected an IPv6 address",
    ),
    ErrorCase(
        "address-fqdn-empty",
        eps_obj([ep("")], address_type="FQDN"),
        "endpoints[0].addresses[0]",
        "non-empty string",
    ),
    ErrorCase(
        "ready-string",
        eps_obj([ep("10.0.0.1", conditions={"ready": "true"})]),
        "endpoints[0].conditions.ready",
        "expected a boolean",
    ),
    ErrorCase(
        "conditions-not-mapping",
        eps_obj([ep("10.0.0.1", conditions=[True])]),
        "endpoints[0].conditions",
        "mapping",
    ),
    ErrorCase(
        "hostname-int",
        eps_obj([ep("10.0.0.1", hostname=0)]),
        "endpoints[0].hostname",
        "expected a string",
    ),
    ErrorCase(
        "targetref-name-int",
        eps_obj([ep("10.0.0.1", targetRef={"kind": "Pod", "name": 1})]),
        "endpoints[0].targetRef.name",
        "expected a string",
    ),
    ErrorCase("slice-ports-not-list", eps_obj(ports="http"), "ports", "list"),
    ErrorCase("slice-port-too-big", eps_obj(ports=[{"port": 70000}]), "ports[0].port", "70000"),
    ErrorCase("slice-port-string", eps_obj(ports=[{"port": "http"}]), "ports[0].port", "'http'"),
    ErrorCase(
        "slice-port-protocol",
        eps_obj(ports=[{"port": 80, "protocol": "QUIC"}]),
        "ports[0].protocol",
        "'QUIC'",
    ),
    # Pod
    ErrorCase("status-not-mapping", pod_obj(None) | {"status": "Running"}, "status", "mapping"),
    ErrorCase("podip-invalid", pod_obj({"podIP": "pending"}), "status.podIP", "'pending'"),
    ErrorCase(
        "pod-dnsconfig-searches-not-strings",
        pod_obj(None, spec={"dnsConfig": {"searches": [3]}}),
        "spec.dnsConfig.searches[0]",
        "string",
    ),
    ErrorCase(
        "pod-hostnetwork-not-bool",
        pod_obj(None, spec={"hostNetwork": "yes"}),
        "spec.hostNetwork",
        "'yes'",
    ),
    ErrorCase("podips-not-list", pod_obj({"podIPs": "10.0.0.1"}), "status.podIPs", "list"),
    ErrorCase(
        "podips-entry-not-mapping",
        pod_obj({"podIPs": ["10.0.0.1"]}),
        "status.podIPs[0]",
        "mapping",
    ),
    ErrorCase(
        "podips-ip-missing",
        pod_obj({"podIPs": [{"ip": "10.0.0.1"}, {}]}),
        "status.podIPs[1].ip",
        "missing",
    ),
    ErrorCase(
        "podips-ip-invalid",
        pod_obj({"podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::g"}]}),
        "status.podIPs[1].ip",
        "'fd00::g'",
    ),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: c.id)
def test_convert_error_names_field(case: ErrorCase) -> None:
    with pytest.raises(ConvertError) as info:
        convert(case.obj)
    assert info.value.field == case.field
    assert case.message in info.value.message
    assert str(info.value) == f"{case.field}: {info.value.message}"


def test_used_kinds_are_exactly_the_four_dns_reads() -> None:
    assert set(USED_KINDS) == {
        ("v1", "Namespace"),
        ("v1", "Service"),
        ("discovery.k8s.io/v1", "EndpointSlice"),
        ("v1", "Pod"),
    }


def test_convert_does_not_mutate_input() -> None:
    obj = eps_obj([ep("10.244.1.1", conditions={"ready": True})], [{"port": 80}])
    before = copy.deepcopy(obj)
    convert(obj)
    assert obj == before


def test_long_values_are_truncated_in_messages() -> None:
    with pytest.raises(ConvertError) as info:
        convert(ports_svc({"port": "x" * 500}))
    assert len(info.value.message) < 120
