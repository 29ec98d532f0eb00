"""``ZoneConfig``: the settings that decide what kdns answers, the only part of the config the
authoritative side (state, synthesis, table) reads. Its own module so that the answer path does
not load the config parser's dependencies (the resolver's forwarding, the TCP limits, the
kube-dns ConfigMap follower); ``kdns.config`` builds it and re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from kdns import custom, rewrite
from kdns.names import Name

REVERSE_ZONES: Final[tuple[Name, ...]] = (("in-addr", "arpa"), ("ip6", "arpa"))


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """Everything that changes what kdns answers."""

    zones: tuple[Name, ...] = (("cluster", "local"),)
    """Served cluster zones; the first is primary (PTR targets point into it)."""
    ttl_s: int = 5
    """TTL of every synthesized record (R12.2); also the SOA MINIMUM."""
    pods: str = "insecure"
    """Pod records: disabled | insecure | verified (R7.2). kubeadm's default is insecure."""
    endpoint_pod_names: bool = False
    """Name endpoints without a hostname after their pod (R13.3)."""
    namespaces: frozenset[str] | None = None
    """Only these namespaces are served; None serves all (R13.1)."""
    dns_service: tuple[str, str] = ("kube-system", "kube-dns")
    """The Service whose name and ClusterIPs are the zone's NS and glue (R10.1)."""
    fallback_glue: tuple[str, ...] = ()
    """Glue for ``ns.dns.<zone>`` when ``dns_service`` does not exist (specific listen IPs)."""
    custom: custom.CustomRecords = field(default_factory=custom.CustomRecords)
    """Static records (``records:``, ``hosts:``, ``hosts_file:``); they win over cluster names."""
    ignore_empty_service: bool = False
    """CoreDNS ``ignore empty_service``: a ClusterIP Service with no ready endpoint is NXDOMAIN
    (so a search path moves on); the spec's answer, its ClusterIP, is the default."""
    noendpoints: bool = False
    """CoreDNS ``noendpoints``: no endpoint records (headless Services, endpoint names and their
    PTRs); EndpointSlices are not watched at all."""
    rewrite: rewrite.Rules = field(default_factory=rewrite.Rules)
    """CoreDNS-syntax rewrite rules, applied to questions the compiled table does not hold."""
    loadbalance: str = "round_robin"
    """round_robin: answers with several A/AAAA/SRV records come in rotating orders (CoreDNS's
    ``loadbalance``, in kubeadm's Corefile); off: always the same order."""

    @property
    def rotate(self) -> bool:
        return self.loadbalance == "round_robin"

    @property
    def primary_zone(self) -> Name:
        return self.zones[0]

    @property
    def all_zones(self) -> tuple[Name, ...]:
        """Cluster zones, then the reverse zones (PTR is answered for known IPs only)."""
        return self.zones + REVERSE_ZONES
