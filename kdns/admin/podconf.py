"""The resolv.conf the kubelet writes for a pod (``pkg/kubelet/network/dns``), for ``explain
--namespace NS`` and ``explain --pod NS/NAME``.

* ``ClusterFirst`` (not on the host network): ``nameserver <cluster DNS>``, ``search
  <ns>.svc.<zone> svc.<zone> <zone>`` then the node's search domains, ``options ndots:5``;
* ``ClusterFirstWithHostNet`` is ClusterFirst too; ``ClusterFirst`` on the host network falls
  back to ``Default``;
* ``Default``: the node's resolv.conf (its nameservers unknown here: none are written, its
  search domains), the libc's default ndots (1);
* ``None``: only what ``dnsConfig`` says.

``dnsConfig.searches`` are appended to the list, duplicates dropped (the kubelet's merge).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from kdns.model import Pod

CLUSTER_NDOTS: Final = 5
DEFAULT_CLUSTER_DNS: Final = "10.96.0.10"


class PodConfError(ValueError):
    """A pod whose resolv.conf cannot be derived (the message says why)."""


def resolv_conf(
    namespace: str,
    zone: str,
    host_search: Sequence[str] = (),
    *,
    cluster_dns: str = DEFAULT_CLUSTER_DNS,
    dns_policy: str = "ClusterFirst",
    host_network: bool = False,
    searches: Sequence[str] = (),
) -> str:
    """The text (module docstring)."""
    if dns_policy == "ClusterFirst" and host_network:
        dns_policy = "Default"
    if dns_policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        base = [f"{namespace}.svc.{zone}", f"svc.{zone}", zone, *host_search]
        nameservers = [cluster_dns]
        options = [f"ndots:{CLUSTER_NDOTS}"]
    elif dns_policy == "Default":
        base, nameservers, options = list(host_search), [], []
    elif dns_policy == "None":
        base, nameservers, options = [], [], []
    else:
        raise PodConfError(f"dnsPolicy {dns_policy!r} is not one the kubelet knows")
    search = list(dict.fromkeys(domain.rstrip(".") for domain in (*base, *searches) if domain))
    lines = [f"nameserver {server}" for server in nameservers]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def for_pod(pod: Pod, zone: str, host_search: Sequence[str], cluster_dns: str) -> str:
    return resolv_conf(
        pod.namespace,
        zone,
        host_search,
        cluster_dns=cluster_dns,
        dns_policy=pod.dns_policy,
        host_network=pod.host_network,
        searches=pod.dns_searches,
    )
