"""Every rule of ../shared/docs/k8s-dns-spec.md R1-R13 and every R8 row, over real sockets.

Each case is sent with dnspython over UDP, UDP with EDNS, and TCP to an in-process server on
127.0.0.1:0 serving ``tests/support/cluster.py``. Case ids cite the rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import dns.message
import pytest

from kdns.config import ZoneConfig
from kdns.names import text_to_name
from tests.support.cluster import fixture_objects
from tests.support.dnscase import Case, check, soa
from tests.support.servers import RunningServer, running_server

pytestmark = pytest.mark.integration

Z = "cluster.local."
T = "testns.svc.cluster.local."
SOA = soa()
REV_SOA = (
    "in-addr.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 0 7200 1800 86400 5"
)
REV6_SOA = "ip6.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 0 7200 1800 86400 5"


def rev(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer + "."


def nx(id: str, qname: str, qtype: str = "A", **kw: Any) -> Case:
    return Case(id, qname, qtype, "NXDOMAIN", authority=(SOA,), **kw)


def nodata(id: str, qname: str, qtype: str = "A", authority: str = SOA, **kw: Any) -> Case:
    return Case(id, qname, qtype, authority=(authority,), **kw)


CASES = [
    # R1 general
    Case("R1.2-case-insensitive", "SvC1.TestNS.svc.Cluster.Local.", "A",
         answer=(f"svc1.{T} 5 IN A 10.0.0.1",)),
    nx("R1.4-missing-svc-label", "svc1.testns.cluster.local."),
    nx("R1.4-too-many-labels", f"a.b.c.svc1.{T}"),
    nx("R1.4-bad-type-label", "svc1.testns.foo.cluster.local."),
    nx("R1.5-namespace-object-missing", "svc.ghost.svc.cluster.local."),
    # R2 dns-version
    Case("R2.1-dns-version-TXT", f"dns-version.{Z}", "TXT",
         answer=(f'dns-version.{Z} 28800 IN TXT "1.1.0"',)),
    nodata("R2.2-A6-dns-version-A-is-NODATA", f"dns-version.{Z}", "A"),
    nodata("R2.3-TXT-on-existing-name", f"svc1.{T}", "TXT"),
    nx("R2.3-TXT-on-missing-name", f"nope.{T}", "TXT"),
    # R3 ClusterIP
    Case("R3.1-clusterip-A", f"svc1.{T}", "A", answer=(f"svc1.{T} 5 IN A 10.0.0.1",)),
    Case("R3.1-clusterip-AAAA-v6", f"svc6.{T}", "AAAA", answer=(f"svc6.{T} 5 IN AAAA 1234:abcd::1",)),
    nodata("R3.2-v4-service-AAAA-NODATA", f"svc1.{T}", "AAAA"),
    nodata("R3.2-v6-service-A-NODATA", f"svc6.{T}", "A"),
    Case("R3.2-dual-stack-A", f"dual.{T}", "A", answer=(f"dual.{T} 5 IN A 10.0.0.20",)),
    Case("R3.2-dual-stack-AAAA", f"dual.{T}", "AAAA", answer=(f"dual.{T} 5 IN AAAA fd00::20",)),
    Case("R3.3-A-without-endpoints", f"multi.{T}", "A", answer=(f"multi.{T} 5 IN A 10.0.0.3",)),
    Case("R3.4-SRV-named-port", f"_http._tcp.svc1.{T}", "SRV",
         answer=(f"_http._tcp.svc1.{T} 5 IN SRV 0 100 80 svc1.{T}",),
         additional=(f"svc1.{T} 5 IN A 10.0.0.1",)),
    Case("R3.5-SRV-dual-stack-weight", f"_http._tcp.dual.{T}", "SRV",
         answer=(f"_http._tcp.dual.{T} 5 IN SRV 0 50 80 dual.{T}",),
         additional=(f"dual.{T} 5 IN A 10.0.0.20", f"dual.{T} 5 IN AAAA fd00::20")),
    Case("R3.6-SRV-bare-name-all-ports", f"multi.{T}", "SRV",
         answer=(f"multi.{T} 5 IN SRV 0 33 80 multi.{T}", f"multi.{T} 5 IN SRV 0 33 8080 multi.{T}",
                 f"multi.{T} 5 IN SRV 0 33 53 multi.{T}"),
         additional=(f"multi.{T} 5 IN A 10.0.0.3",)),
    Case("R3.6-SRV-bare-name-one-port", f"svc1.{T}", "SRV",
         answer=(f"svc1.{T} 5 IN SRV 0 100 80 svc1.{T}",), additional=(f"svc1.{T} 5 IN A 10.0.0.1",)),
    Case("R3.7-SRV-case-insensitive-port", f"_HTTP._TCP.svc1.{T}", "SRV",
         answer=(f"_http._tcp.svc1.{T} 5 IN SRV 0 100 80 svc1.{T}",),
         additional=(f"svc1.{T} 5 IN A 10.0.0.1",)),
    Case("R3.7-SRV-udp-port", f"_dns._udp.multi.{T}", "SRV",
         answer=(f"_dns._udp.multi.{T} 5 IN SRV 0 100 53 multi.{T}",),
         additional=(f"multi.{T} 5 IN A 10.0.0.3",)),
    nx("R3.7-SRV-unknown-port", f"_https._tcp.svc1.{T}", "SRV"),
    nx("R3.7-SRV-wrong-protocol", f"_http._udp.svc1.{T}", "SRV"),
    Case("R3.8-PTR-clusterip", rev("10.0.0.1"), "PTR", answer=(f"{rev('10.0.0.1')} 5 IN PTR svc1.{T}",)),
    Case("R3.8-PTR-clusterip-v6", rev("1234:abcd::1"), "PTR",
         answer=(f"{rev('1234:abcd::1')} 5 IN PTR svc6.{T}",)),
    Case("R3.8-PTR-dual-stack-v6", rev("fd00::20"), "PTR", answer=(f"{rev('fd00::20')} 5 IN PTR dual.{T}",)),
    nodata("R3.8-R9.3-reverse-other-type", rev("10.0.0.1"), "A", authority=REV_SOA),
    nodata("R3.8-R9.3-reverse6-other-type", rev("fd00::20"), "TXT", authority=REV6_SOA),
    Case("R3.9a-endpoint-name-under-clusterip", f"172-0-0-1.svc1.{T}", "A",
         answer=(f"172-0-0-1.svc1.{T} 5 IN A 172.0.0.1",)),
    Case("R3.9b-A-on-port-name", f"_http._tcp.svc1.{T}", "A",
         answer=(f"_http._tcp.svc1.{T} 5 IN A 10.0.0.1",)),
    Case("R3.9c-underscores-optional", f"http.tcp.svc1.{T}", "SRV",
         answer=(f"http.tcp.svc1.{T} 5 IN SRV 0 100 80 svc1.{T}",),
         additional=(f"svc1.{T} 5 IN A 10.0.0.1",)),
    Case("R3.9d-PTR-endpoint-of-clusterip", rev("172.0.0.1"), "PTR",
         answer=(f"{rev('172.0.0.1')} 5 IN PTR 172-0-0-1.svc1.{T}",)),
    # R4 headless
    Case("R4.1-headless-A-ready-only", f"hdls1.{T}", "A",
         answer=(f"hdls1.{T} 5 IN A 172.0.0.2", f"hdls1.{T} 5 IN A 172.0.0.3",
                 f"hdls1.{T} 5 IN A 172.0.0.4")),
    Case("R4.1-headless-AAAA", f"hdls1.{T}", "AAAA", answer=(f"hdls1.{T} 5 IN AAAA 5678:abcd::1",)),
    nx("R4.2-headless-no-slices", f"hdls-empty.{T}"),
    nx("R4.2-headless-only-not-ready", f"hdls-unready.{T}"),
    nodata("R4.2-headless-other-family", f"hdls-multi.{T}", "AAAA"),
    nx("R4.2-not-ready-hostname", f"notready.hdls1.{T}"),
    Case("R4.3-headless-hostname-shared", f"dup-name.hdls1.{T}", "A",
         answer=(f"dup-name.hdls1.{T} 5 IN A 172.0.0.3", f"dup-name.hdls1.{T} 5 IN A 172.0.0.4")),
    Case("R4.4-dashed-ip-v4", f"172-0-0-2.hdls1.{T}", "A", answer=(f"172-0-0-2.hdls1.{T} 5 IN A 172.0.0.2",)),
    Case("R4.4-dashed-ip-v6", f"5678-abcd--1.hdls1.{T}", "AAAA",
         answer=(f"5678-abcd--1.hdls1.{T} 5 IN AAAA 5678:abcd::1",)),
    Case("R4.5-R4.6-R4.7-headless-SRV-slice-port", f"_http._tcp.hdls1.{T}", "SRV",
         answer=(f"_http._tcp.hdls1.{T} 5 IN SRV 0 25 8080 172-0-0-2.hdls1.{T}",
                 f"_http._tcp.hdls1.{T} 5 IN SRV 0 25 8080 dup-name.hdls1.{T}",
                 f"_http._tcp.hdls1.{T} 5 IN SRV 0 25 8080 5678-abcd--1.hdls1.{T}"),
         additional=(f"172-0-0-2.hdls1.{T} 5 IN A 172.0.0.2", f"dup-name.hdls1.{T} 5 IN A 172.0.0.3",
                     f"dup-name.hdls1.{T} 5 IN A 172.0.0.4",
                     f"5678-abcd--1.hdls1.{T} 5 IN AAAA 5678:abcd::1")),
    Case("R4.7-headless-no-ports-A", f"hdls-noport.{T}", "A", answer=(f"hdls-noport.{T} 5 IN A 172.0.3.1",)),
    nodata("R4.7-headless-no-ports-SRV", f"hdls-noport.{T}", "SRV"),
    Case("R4.8-PTR-headless-dashed", rev("172.0.0.2"), "PTR",
         answer=(f"{rev('172.0.0.2')} 5 IN PTR 172-0-0-2.hdls1.{T}",)),
    Case("R4.8-PTR-headless-hostname", rev("172.0.0.3"), "PTR",
         answer=(f"{rev('172.0.0.3')} 5 IN PTR dup-name.hdls1.{T}",)),
    Case("R4.8-PTR-same-ip-two-slices-once", rev("172.0.4.1"), "PTR",
         answer=(f"{rev('172.0.4.1')} 5 IN PTR a.hdls-multi.{T}",)),
    nx("R4.10-unknown-hostname", f"nope.hdls1.{T}"),
    nx("R4.10-label-below-endpoint", f"x.dup-name.hdls1.{T}"),
    # R5 EndpointSlice fields
    Case("R5.1-several-slices-union", f"hdls-multi.{T}", "A",
         answer=(f"hdls-multi.{T} 5 IN A 172.0.4.1", f"hdls-multi.{T} 5 IN A 172.0.4.2")),
    Case("R5.3-A2-publishNotReadyAddresses", f"starting.hdls-pub.{T}", "A",
         answer=(f"starting.hdls-pub.{T} 5 IN A 172.0.2.1",)),
    nx("R5.4-FQDN-slices-ignored", f"hdls-fqdn.{T}"),
    # R6 ExternalName
    Case("R6.1-ExternalName-CNAME", f"ext.{T}", "CNAME", answer=(f"ext.{T} 5 IN CNAME ext.interwebs.test.",)),
    Case("R6.2-ExternalName-A-out-of-zone", f"ext.{T}", "A", answer=(f"ext.{T} 5 IN CNAME ext.interwebs.test.",)),
    Case("R6.2-ExternalName-in-zone-chased", f"ext-in.{T}", "A",
         answer=(f"ext-in.{T} 5 IN CNAME svc1.{T}", f"svc1.{T} 5 IN A 10.0.0.1")),
    Case("R6.2-ExternalName-chased-to-missing", f"ext-gone.{T}", "A", "NXDOMAIN",
         answer=(f"ext-gone.{T} 5 IN CNAME nothere.{T}",), authority=(SOA,)),
    Case("R6.3-A5-SRV-on-ExternalName-is-CNAME", f"ext.{T}", "SRV",
         answer=(f"ext.{T} 5 IN CNAME ext.interwebs.test.",)),
    nx("R6.3-port-below-ExternalName", f"_http._tcp.ext.{T}", "SRV"),
    nx("R6.3-label-below-ExternalName", f"x.ext.{T}"),
    nx("R6.4-A4-IP-like-ExternalName", f"ext-ip.{T}"),
    nx("R6.4-A4-IP-like-ExternalName-CNAME", f"ext-ip.{T}", "CNAME"),
    # R7 pods (default --pods insecure)
    Case("R7.1-pod-A", "172-0-5-1.testns.pod.cluster.local.", "A",
         answer=("172-0-5-1.testns.pod.cluster.local. 5 IN A 172.0.5.1",)),
    Case("R7.1-pod-AAAA", "fd00-244--30.testns.pod.cluster.local.", "AAAA",
         answer=("fd00-244--30.testns.pod.cluster.local. 5 IN AAAA fd00:244::30",)),
    Case("R7.2-insecure-any-ip", "10-9-9-9.testns.pod.cluster.local.", "A",
         answer=("10-9-9-9.testns.pod.cluster.local. 5 IN A 10.9.9.9",)),
    nx("R7.2-insecure-missing-namespace", "10-9-9-9.nons.pod.cluster.local."),
    nx("R7.2-disabled", "172-0-5-1.testns.pod.cluster.local.", options={"pods": "disabled"}),
    nodata("R7.2-disabled-pod-root", "pod.cluster.local.", options={"pods": "disabled"}),
    nx("R7.2-disabled-namespace", "testns.pod.cluster.local.", options={"pods": "disabled"}),
    Case("R7.2-verified-known-pod", "172-0-5-1.testns.pod.cluster.local.", "A",
         answer=("172-0-5-1.testns.pod.cluster.local. 5 IN A 172.0.5.1",),
         options={"pods": "verified"}),
    nx("R7.2-verified-unknown-ip", "10-9-9-9.testns.pod.cluster.local.", options={"pods": "verified"}),
    nx("R7.2-verified-other-namespace", "172-0-5-1.default.pod.cluster.local.",
       options={"pods": "verified"}),
    nx("R7.3-invalid-ip-short", "1-2-3.testns.pod.cluster.local."),
    nx("R7.3-invalid-ip-octet", "256-0-0-1.testns.pod.cluster.local."),
    nodata("R7.3-namespace-pod-NODATA", "testns.pod.cluster.local."),
    nx("R7.3-missing-namespace-pod", "nons.pod.cluster.local."),
    Case("R7.4-extra-label-ignored", "x.172-0-5-1.testns.pod.cluster.local.", "A",
         answer=("x.172-0-5-1.testns.pod.cluster.local. 5 IN A 172.0.5.1",)),
    # R8 table, row by row
    nodata("R8-apex-A", Z, "A"),
    nodata("R8-apex-AAAA", Z, "AAAA"),
    nodata("R8-apex-SRV", Z, "SRV"),
    nodata("R8-apex-HINFO", Z, "HINFO"),
    nodata("R8-svc-root", f"svc.{Z}", "A"),
    nodata("R8-pod-root", f"pod.{Z}", "A"),
    nodata("R8-existing-namespace", T, "A"),
    nodata("R8-existing-empty-namespace", f"emptyns.svc.{Z}", "A"),
    nx("R8-missing-namespace", f"nons.svc.{Z}"),
    nx("R8-service-in-missing-namespace", f"svc1.nons.svc.{Z}"),
    nx("R8-missing-service", f"nope.{T}"),
    nodata("R8-existing-name-AAAA-on-v4", f"svc1.{T}", "AAAA"),
    nodata("R8-existing-name-MX", f"svc1.{T}", "MX"),
    nodata("R8-existing-name-CAA", f"svc1.{T}", "CAA"),
    nodata("R8-existing-name-NS", f"svc1.{T}", "NS"),
    nodata("R8-existing-name-SOA", f"svc1.{T}", "SOA"),
    nx("R8-invalid-shape-foo", f"foo.{Z}"),
    nx("R8-invalid-shape-long", f"a.b.c.svc1.{T}"),
    nx("R8-invalid-shape-no-svc-label", f"svc1.testns.{Z}"),
    nx("R8-search-path-artefact", f"svc1.{T}testns.svc.cluster.local."),
    nx("R8-headless-no-ready", f"hdls-unready.{T}"),
    nodata("R8-A6-dns-version-A", f"dns-version.{Z}", "A"),
    nx("R8-empty-non-terminal-below-service", f"_tcp.svc1.{T}", "SRV"),
    nodata("R8-SOA-off-apex-missing-name", f"nope.{T}", "SOA"),
    nodata("R8-NS-off-apex-existing", f"svc1.{T}", "NS"),
    nx("R8-NS-off-apex-missing", f"nope.{T}", "NS"),
    # R9 SOA, R10 NS and apex
    Case("R9.1-apex-SOA", Z, "SOA", answer=(SOA,)),
    Case("R9.1-apex-SOA-case", "CLUSTER.local.", "SOA", answer=(SOA,)),
    Case("R10.1-apex-NS-with-glue", Z, "NS",
         answer=(f"{Z} 5 IN NS kube-dns.kube-system.svc.{Z}",),
         additional=(f"kube-dns.kube-system.svc.{Z} 5 IN A 10.96.0.10",)),
    Case("R10.1-ns-dns-name", f"ns.dns.{Z}", "A", answer=(f"ns.dns.{Z} 5 IN A 10.96.0.10",)),
    nodata("R10.2-apex-A", Z, "A"),
    # R11 other types
    Case("R11.1-RFC8482-ANY-one-rrset", f"svc1.{T}", "ANY", answer=(f"svc1.{T} 5 IN A 10.0.0.1",)),
    Case("R11.1-RFC8482-ANY-apex", Z, "ANY", answer=(SOA,)),
    nx("R11.1-ANY-missing", f"nope.{T}", "ANY"),
    Case("R11.3-out-of-zone-REFUSED", "example.com.", "A", "REFUSED", aa=False),
    Case("R11.3-unknown-reverse-REFUSED", rev("192.0.2.1"), "PTR", "REFUSED", aa=False),
    # R12 TTL
    Case("R12.2-ttl-option", f"svc1.{T}", "A", answer=(f"svc1.{T} 30 IN A 10.0.0.1",), options={"ttl_s": 30}),
    Case("R12.2-soa-ttl-capped", f"nope.{T}", "A", "NXDOMAIN",
         authority=(soa(ttl=300, minimum=600),), options={"ttl_s": 600}),
    # R13 options
    nx("R13.1-namespaces-hides-service", "svc.other.svc.cluster.local.",
       options={"namespaces": frozenset({"testns"})}),
    nx("R13.1-namespaces-hides-namespace", "other.svc.cluster.local.",
       options={"namespaces": frozenset({"testns"})}),
    Case("R13.1-namespaces-keeps-listed", f"svc1.{T}", "A", answer=(f"svc1.{T} 5 IN A 10.0.0.1",),
         options={"namespaces": frozenset({"testns"})}),
    Case("R13.1-namespaces-suppresses-PTR", rev("10.0.0.98"), "PTR", "REFUSED", aa=False,
         options={"namespaces": frozenset({"testns"})}),
    Case("R13.3-endpoint-pod-names", f"web-0.hdls-pods.{T}", "A",
         answer=(f"web-0.hdls-pods.{T} 5 IN A 172.0.5.1",), options={"endpoint_pod_names": True}),
    Case("R13.3-endpoint-pod-names-SRV", f"hdls-pods.{T}", "SRV",
         answer=(f"hdls-pods.{T} 5 IN SRV 0 100 8080 web-0.hdls-pods.{T}",),
         additional=(f"web-0.hdls-pods.{T} 5 IN A 172.0.5.1",), options={"endpoint_pod_names": True}),
    Case("R13.3-default-dashed-ip", f"172-0-5-1.hdls-pods.{T}", "A",
         answer=(f"172-0-5-1.hdls-pods.{T} 5 IN A 172.0.5.1",)),
    Case("R13-second-zone", "svc1.testns.svc.example.org.", "A",
         answer=("svc1.testns.svc.example.org. 5 IN A 10.0.0.1",),
         options={"zones": (text_to_name("cluster.local"), text_to_name("example.org"))}),
    # CoreDNS options beyond the spec (off by default: R3.3-A-without-endpoints is the default)
    nx("R3.3-ignore-empty-service-A", f"multi.{T}", options={"ignore_empty_service": True}),
    nx("R3.3-ignore-empty-service-AAAA", f"multi.{T}", "AAAA", options={"ignore_empty_service": True}),
    nx("R3.3-ignore-empty-service-SRV", f"_http._tcp.multi.{T}", "SRV",
       options={"ignore_empty_service": True}),
    Case("R3.3-ignore-empty-service-keeps-ready", f"svc1.{T}", "A", answer=(f"svc1.{T} 5 IN A 10.0.0.1",),
         options={"ignore_empty_service": True}),
    Case("R3.3-ignore-empty-service-keeps-PTR", rev("10.0.0.3"), "PTR",
         answer=(f"{rev('10.0.0.3')} 5 IN PTR multi.{T}",), options={"ignore_empty_service": True}),
    Case("R4.1-ignore-empty-service-headless-unchanged", f"hdls-noport.{T}", "A",
         answer=(f"hdls-noport.{T} 5 IN A 172.0.3.1",), options={"ignore_empty_service": True}),
    nx("R4.1-noendpoints-headless", f"hdls1.{T}", options={"noendpoints": True}),
    nx("R4.4-noendpoints-endpoint-name", f"172-0-0-1.svc1.{T}", options={"noendpoints": True}),
    nx("R4.5-noendpoints-headless-SRV", f"_http._tcp.hdls1.{T}", "SRV", options={"noendpoints": True}),
    Case("R3.1-noendpoints-clusterip-kept", f"svc1.{T}", "A", answer=(f"svc1.{T} 5 IN A 10.0.0.1",),
         options={"noendpoints": True}),
    Case("R3.4-noendpoints-clusterip-SRV-kept", f"_http._tcp.svc1.{T}", "SRV",
         answer=(f"_http._tcp.svc1.{T} 5 IN SRV 0 100 80 svc1.{T}",),
         additional=(f"svc1.{T} 5 IN A 10.0.0.1",), options={"noendpoints": True}),
    Case("R4.8-noendpoints-no-endpoint-PTR", rev("172.0.0.2"), "PTR", "REFUSED", aa=False,
         options={"noendpoints": True}),
    Case("R13-second-zone-PTR-uses-primary", rev("10.0.0.1"), "PTR",
         answer=(f"{rev('10.0.0.1')} 5 IN PTR svc1.{T}",),
         options={"zones": (text_to_name("cluster.local"), text_to_name("example.org"))}),
]  # fmt: skip

TRANSPORTS = ["udp", "udp-python-loop", "udp-edns", "tcp"]
"""``udp`` is served by the C accelerator when it is built; ``udp-python-loop`` never is."""


OptionKey = tuple[tuple[str, Any], ...]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[tuple[OptionKey, bool], RunningServer]]:
    """One server per distinct option set and UDP loop, started lazily, stopped with the module."""
    contexts: list[Any] = []

    class Lazy(dict[tuple[OptionKey, bool], RunningServer]):
        def __missing__(self, key: tuple[OptionKey, bool]) -> RunningServer:
            options, python_loop = key
            context = running_server(
                fixture_objects(), ZoneConfig(**dict(options)), python_udp_loop=python_loop
            )
            contexts.append(context)
            server = context.__enter__()
            self[key] = server
            return server

    yield Lazy()
    for context in contexts:
        context.__exit__(None, None, None)


def query_for(case: Case, transport: str) -> dns.message.Message:
    return dns.message.make_query(
        case.qname, case.qtype, use_edns=0 if transport == "udp-edns" else None
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rule(
    case: Case, transport: str, servers: dict[tuple[OptionKey, bool], RunningServer]
) -> None:
    server = servers[tuple(sorted(case.options.items())), transport == "udp-python-loop"]
    reply = server.query(query_for(case, transport), "tcp" if transport == "tcp" else "udp")
    check(reply, case)
