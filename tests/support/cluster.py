"""The fixture cluster the rule tests query: one object per behaviour the spec names.

Modelled on CoreDNS's handler_test fixtures (testns, svc1, hdls1, ext-svc, ...). Each comment
says which rule an object exists for.
"""

from __future__ import annotations

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

HTTP = (ServicePort("http", 80, "TCP"),)


def _slice(
    ns: str, svc: str, name: str, *endpoints: Endpoint, ports=None, family="IPv4"
) -> EndpointSlice:  # type: ignore[no-untyped-def]
    return EndpointSlice(
        ns, name, svc, family, tuple(endpoints),
        tuple(ports) if ports is not None else (EndpointPort("http", 8080, "TCP"),),
    )  # fmt: skip


def fixture_objects() -> list[KubeObject]:
    return [
        Namespace("default"),
        Namespace("kube-system"),
        Namespace("testns"),
        Namespace("emptyns"),  # R8: exists with no services -> NODATA
        Namespace("other"),  # R13.1: hidden by --namespaces testns
        Service("kube-system", "kube-dns", cluster_ips=("10.96.0.10",),
                ports=(ServicePort("dns", 53, "UDP"), ServicePort("dns-tcp", 53, "TCP"))),
        # R3.1, R3.4, R3.9: a ClusterIP service with one named port and one endpoint.
        Service("testns", "svc1", cluster_ips=("10.0.0.1",), ports=HTTP),
        _slice("testns", "svc1", "svc1-abc", Endpoint(("172.0.0.1",), True, "", "svc1-pod")),
        # R3.1: IPv6-only ClusterIP.
        Service("testns", "svc6", cluster_ips=("1234:abcd::1",), ports=HTTP),
        # R3.2: dual-stack.
        Service("testns", "dual", cluster_ips=("10.0.0.20", "fd00::20"), ports=HTTP),
        # R3.5, R3.6: several ports, one unnamed, one UDP.
        Service("testns", "multi", cluster_ips=("10.0.0.3",), ports=(
            ServicePort("http", 80, "TCP"), ServicePort("", 8080, "TCP"),
            ServicePort("dns", 53, "UDP"))),
        # R4: headless, two families, duplicate hostnames, one not-ready endpoint.
        Service("testns", "hdls1", headless=True, ports=HTTP),
        _slice("testns", "hdls1", "hdls1-v4",
               Endpoint(("172.0.0.2",), True, ""),
               Endpoint(("172.0.0.3",), True, "dup-name"),
               Endpoint(("172.0.0.4",), None, "dup-name"),  # R5.2: unset means ready
               Endpoint(("172.0.0.5",), False, "notready")),
        _slice("testns", "hdls1", "hdls1-v6", Endpoint(("5678:abcd::1",), True, ""),
               family="IPv6"),
        # R4.2: headless with no slices, and with only not-ready endpoints.
        Service("testns", "hdls-empty", headless=True, ports=HTTP),
        Service("testns", "hdls-unready", headless=True, ports=HTTP),
        _slice("testns", "hdls-unready", "hdls-unready-1", Endpoint(("172.0.1.1",), False, "")),
        # R5.3 / A2: publishNotReadyAddresses keeps a ready:false endpoint.
        Service("testns", "hdls-pub", headless=True, ports=HTTP, publish_not_ready_addresses=True),
        _slice("testns", "hdls-pub", "hdls-pub-1", Endpoint(("172.0.2.1",), False, "starting")),
        # R4.7: no ports on the slice: A works, SRV is NODATA.
        Service("testns", "hdls-noport", headless=True),
        _slice("testns", "hdls-noport", "hdls-noport-1", Endpoint(("172.0.3.1",), True, ""), ports=()),
        # R5.4: FQDN slices are ignored.
        Service("testns", "hdls-fqdn", headless=True, ports=HTTP),
        _slice("testns", "hdls-fqdn", "hdls-fqdn-1", Endpoint(("example.com",), True, ""),
               family="FQDN"),
        # R5.1: several slices per service; the same IP twice collapses.
        Service("testns", "hdls-multi", headless=True, ports=HTTP),
        _slice("testns", "hdls-multi", "hdls-multi-a", Endpoint(("172.0.4.1",), True, "a")),
        _slice("testns", "hdls-multi", "hdls-multi-b", Endpoint(("172.0.4.2",), True, "b"),
               Endpoint(("172.0.4.1",), True, "a")),
        # R4.9 / R13.3: endpoints named after their pods.
        Service("testns", "hdls-pods", headless=True, ports=HTTP),
        _slice("testns", "hdls-pods", "hdls-pods-1", Endpoint(("172.0.5.1",), True, "", "web-0")),
        # R6: ExternalName out of zone, in zone, IP-like, and to a missing in-zone name.
        Service("testns", "ext", type="ExternalName", external_name="ext.interwebs.test"),
        Service("testns", "ext-in", type="ExternalName", external_name="svc1.testns.svc.cluster.local"),
        Service("testns", "ext-ip", type="ExternalName", external_name="192.0.2.10"),
        Service("testns", "ext-gone", type="ExternalName",
                external_name="nothere.testns.svc.cluster.local"),
        # R1.5: a Service in a namespace with no Namespace object is not served.
        Service("ghost", "svc", cluster_ips=("10.0.0.99",), ports=HTTP),
        # R13.1: a Service in a namespace hidden by --namespaces.
        Service("other", "svc", cluster_ips=("10.0.0.98",), ports=HTTP),
        # R7.2: pods for --pods verified.
        Pod("testns", "web-0", ("172.0.5.1",)),
        Pod("testns", "v6pod", ("fd00:244::30",)),
    ]  # fmt: skip
