"""Which clients autopath may answer for: pods known to use the kubelet's ClusterFirst search path.

Autopath rewrites a pod's search walk, so it must only ever act for a client whose search list
is the one ``autopath.search_list`` reconstructs. Two ways to know that:

* ``--autopath-clients CIDR``: the operator vouches for every source address in the range (for
  clusters where every pod is ClusterFirst, and for tests). The namespace is then taken from the
  query's suffix.
* The node's own Pods (``PodDirectory``, fed by a Pod watch limited to ``spec.nodeName``): a
  source address is eligible when the Pod holding it has ``dnsPolicy: ClusterFirst``, is not on
  the host network (the node's address is shared by every hostNetwork pod and the node itself),
  has no ``dnsConfig.searches`` (which add domains to its list) and has not finished (its IP
  may already be someone else's). Autopath then also requires the query's namespace label to be
  the Pod's own namespace, so a pod asking about another namespace's names explicitly is not
  mistaken for a search expansion. An address several live Pods claim (a reuse the watch has
  not caught up with) is eligible only if they all agree.

``ClientFilter.namespace(ip)`` is the per-query question: ``ANY`` (trusted range), the pod's
namespace, or None (not eligible). Answers are memoized per address until the directory
changes. Thread-safe.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from kdns.model import ObjectKey, Pod

ANY: Final = "*"
"""``ClientFilter.namespace`` for a trusted range: any namespace the query names."""

CLUSTER_FIRST: Final = "ClusterFirst"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def eligible(pod: Pod) -> bool:
    """True if ``pod`` resolves through the kubelet's ClusterFirst search list."""
    return (
        pod.dns_policy == CLUSTER_FIRST
        and not pod.host_network
        and not pod.dns_searches
        and not pod.finished
    )


class PodDirectory:
    """Source address -> namespace of the eligible Pod holding it, for this node's Pods."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.generation = 0
        """Bumped on every change (``ClientFilter`` drops its memo)."""
        self.synced = False
        self._by_ip: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def replace(self, pods: Mapping[ObjectKey, Pod]) -> None:
        """Rebuild from every Pod the watch holds (a node has at most a few hundred)."""
        claims: dict[str, set[str | None]] = {}
        for pod in pods.values():
            if pod.finished or (self.node_name and pod.node_name not in ("", self.node_name)):
                continue
            for ip in pod.ips:
                claims.setdefault(ip, set()).add(pod.namespace if eligible(pod) else None)
        by_ip = {ip: next(iter(namespaces)) for ip, namespaces in claims.items()}
        for ip, namespaces in claims.items():
            if len(namespaces) > 1:
                by_ip[ip] = None
        with self._lock:
            self._by_ip = by_ip
            self.generation += 1

    def namespace(self, ip: str) -> str | None:
        return self._by_ip.get(ip)

    def __len__(self) -> int:
        return len(self._by_ip)


class ClientFilter:
    """See the module docstring."""

    def __init__(
        self,
        trusted: Sequence[IPNetwork] = (),
        pods: PodDirectory | None = None,
        namespaces: Iterable[str] | None = None,
    ) -> None:
        self.trusted = tuple(trusted)
        self.pods = pods
        self.namespaces = frozenset(namespaces) if namespaces is not None else None
        """``--autopath-namespaces``: only these (None: all)."""
        self._memo: dict[str, str | None] = {}
        self._generation = -1

    @property
    def enabled(self) -> bool:
        return bool(self.trusted) or self.pods is not None

    def namespace(self, ip: str) -> str | None:
        """``ANY``, the Pod's namespace, or None (see the module docstring)."""
        pods = self.pods
        if pods is not None and pods.generation != self._generation:
            self._memo = {}
            self._generation = pods.generation
        memo = self._memo
        if ip in memo:
            return memo[ip]
        found = self._lookup(ip)
        if len(memo) >= 65536:
            memo.clear()
        memo[ip] = found
        return found

    def allows(self, ip: str, namespace: str) -> bool:
        """May autopath act for a query from ``ip`` whose suffix names ``namespace``?"""
        if self.namespaces is not None and namespace not in self.namespaces:
            return False
        found = self.namespace(ip)
        return found == ANY or (found is not None and found == namespace)

    def _lookup(self, ip: str) -> str | None:
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.trusted):
            return ANY
        if self.pods is not None:
            return self.pods.namespace(str(address))
        return None


def parse_cidr(text: str) -> IPNetwork:
    """``10.244.0.0/16`` (a bare address means just that address); raises ValueError."""
    return ipaddress.ip_network(text.strip(), strict=False)
