"""The cluster-zone name grammar, and the mappings between names and IP addresses.

Everything here is pure. Names are tuples of lower-case labels, root last-excluded
(``("cart", "shop", "svc", "cluster", "local")``). ``parse_request`` is the only place that
splits a query name into its Kubernetes parts; nodecache shares it (issue 5).

Accepted shapes below ``<zone>`` (R1.4, CoreDNS ``parse.go``)::

    (empty)                               the apex
    svc | pod                             the type roots (empty non-terminals)
    <ns>.svc | <ns>.pod                   a namespace
    <svc>.<ns>.svc                        a Service
    <endpoint>.<svc>.<ns>.svc             an endpoint (hostname or dashed IP)
    [_]<port>.[_]<proto>.<svc>.<ns>.svc   a named port (underscores optional, R3.9c)
    <dashed-ip>.<ns>.pod                  a pod; one or two labels to its left are ignored (R7.4)

Anything else, including a last label other than ``svc``/``pod`` and three or more labels left of
``<svc>``, is ``INVALID`` and answered NXDOMAIN. ``dns-version`` and ``ns.dns`` are matched before
the grammar, as CoreDNS does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from kdns.dns.names import Labels, text_to_labels

Name = Labels
"""A name as lower-case labels; the wire package's ``Labels`` (``kdns.dns.names.from_labels``
and ``to_labels`` convert to and from wire bytes)."""

SVC: Final = "svc"
POD: Final = "pod"


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed cluster-zone name. Empty strings mean "not present in the name"."""

    kind: str = ""
    """``""`` for the apex and type roots, else ``svc`` or ``pod``."""
    namespace: str = ""
    service: str = ""
    endpoint: str = ""
    port: str = ""
    protocol: str = ""

    @property
    def is_port_query(self) -> bool:
        return bool(self.protocol)


INVALID: Final = Request(kind="invalid")


def _strip_underscore(label: str) -> str:
    return label[1:] if label.startswith("_") else label


def parse_request(relative: Name) -> Request:
    """Parse the labels left of the zone (R1.4). Returns ``INVALID`` for impossible shapes."""
    if not relative or relative in ((SVC,), (POD,)):
        return Request()
    kind = relative[-1]
    if kind not in (SVC, POD):
        return INVALID
    left = relative[:-1]
    namespace = left[-1]
    if len(left) == 1:
        return Request(kind, namespace)
    service = left[-2]
    if len(left) == 2:
        return Request(kind, namespace, service)
    if len(left) == 3:
        return Request(kind, namespace, service, endpoint=left[0])
    if len(left) == 4:
        return Request(
            kind,
            namespace,
            service,
            port=_strip_underscore(left[0]),
            protocol=_strip_underscore(left[1]),
        )
    return INVALID


def split_zone(name: Name, zones: tuple[Name, ...]) -> tuple[int, Name] | None:
    """Find the longest served zone containing ``name``: (zone index, labels left of it)."""
    best: tuple[int, Name] | None = None
    best_len = -1
    for index, zone in enumerate(zones):
        size = len(zone)
        if size > best_len and len(name) >= size and name[len(name) - size :] == zone:
            best = (index, name[: len(name) - size])
            best_len = size
    return best


text_to_name: Final = text_to_labels
"""``"Cart.Shop.svc.cluster.local."`` -> ``("cart", "shop", "svc", "cluster", "local")``."""


def name_to_text(name: Name) -> str:
    return ".".join(name) + "."


def dashed_ip(address: str) -> str:
    """The system-assigned endpoint identifier (R4.4): ``10-244-1-22``, ``2001-db8--0``."""
    text = address.replace(".", "-").replace(":", "-")
    if text.endswith("-"):
        text += "0"
    return text


def pod_label_to_ip(label: str) -> str | None:
    """Undo ``dashed_ip`` for a pod name label (R7.1); None if it is not an IP address."""
    if label.count("-") == 3 and "--" not in label:
        candidate = label.replace("-", ".")
    else:
        candidate = label.replace("-", ":")
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def reverse_name(address: str) -> Name:
    """``10.96.0.10`` -> ``("10", "0", "96", "10", "in-addr", "arpa")``; IPv6 gives 32 nibbles."""
    return tuple(ipaddress.ip_address(address).reverse_pointer.split("."))


def reverse_to_ip(name: Name) -> str | None:
    """The address a full-length reverse name stands for, or None (partial or malformed)."""
    if len(name) == 6 and name[4:] == ("in-addr", "arpa"):
        octets = name[3::-1]
        if all(o.isdigit() and len(o) <= 3 and (o == "0" or not o.startswith("0")) for o in octets):
            try:
                return str(ipaddress.IPv4Address(".".join(octets)))
            except ValueError:
                return None
        return None
    if len(name) == 34 and name[32:] == ("ip6", "arpa"):
        nibbles = name[31::-1]
        if all(len(n) == 1 and n in "0123456789abcdef" for n in nibbles):
            packed = "".join(nibbles)
            groups = ":".join(packed[i : i + 4] for i in range(0, 32, 4))
            return str(ipaddress.IPv6Address(groups))
        return None
    return None


def is_ipv4(address: str) -> bool:
    return ":" not in address


def looks_like_ip(text: str) -> bool:
    """True when an ExternalName is an IP address and must not be served as a CNAME (R6.4)."""
    try:
        ipaddress.ip_address(text.rstrip("."))
    except ValueError:
        return False
    return True
