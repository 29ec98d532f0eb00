"""Where a query name sits in the cluster zone's shape, using kdns's own grammar.

Pure: labels in, a ``Place`` out. ``place(name, qtype, zones)`` reads the name with
``kdns.names.parse_request`` (the one parser of cluster-zone names; kdns answers with it) and
sorts it into one of four kinds:

* ``IMPOSSIBLE``: no cluster state can ever give the name a record, so it is NXDOMAIN and the
  node may say so without asking kdns. These are the rules kdns applies before it looks at any
  object (``kdns.synth.resolve``; CoreDNS ``parse.go``):

  1. the label next to the zone is neither ``svc`` nor ``pod`` (``api.github.com.cluster.local``);
  2. too many labels left of ``<svc>.<ns>.svc``;
  3. a named-port query (``_port._proto.<svc>.<ns>.svc``) whose protocol label is not ``tcp``,
     ``udp`` or ``sctp``: the only Service and EndpointSlice port protocols the API accepts,
     so no port can match (``www.example.com.<ns>.svc`` reads as port ``www``, protocol
     ``example`` of Service ``com``).

* ``NAMESPACE``: at or below ``<ns>.svc.<zone>``. kdns answers ``<ns>.svc.<zone>`` NXDOMAIN
  exactly when the namespace is missing (or not served), and then every name below it is
  NXDOMAIN too: an RFC 8020 cut, which ``Place.cut`` names.
* ``OTHER``: in a cluster zone but only kdns can say (the apex, ``svc``/``pod``,
  ``dns-version``, ``ns.dns``, pod names, which ``--pods`` decides).
* ``OUTSIDE``: not under a cluster zone.

Never IMPOSSIBLE or NAMESPACE for qtype SOA: kdns, as CoreDNS, answers SOA below the apex
NODATA without reading the name (R8), and a node must not answer differently from kdns.
tests/unit/test_searchpath_shape.py holds both facts against kdns's real answers for random
cluster states.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from kdns import dns as wire  # the wire package, under the name this module reads it by
from kdns.names import INVALID, SVC, Name, parse_request, split_zone

PORT_PROTOCOLS: Final = frozenset({"tcp", "udp", "sctp"})
"""Lower-case ``protocol`` values the API server accepts for Service and EndpointSlice ports."""

_SPECIAL: Final = frozenset({("dns-version",), ("ns", "dns")})
"""Names kdns matches before its grammar."""


class Kind(enum.Enum):
    OUTSIDE = "outside"
    IMPOSSIBLE = "impossible"
    NAMESPACE = "namespace"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Place:
    kind: Kind
    zone: Name = ()
    """The cluster zone the name is in (empty when OUTSIDE)."""
    namespace: str = ""
    """The namespace label, for NAMESPACE."""

    @property
    def cut(self) -> Name:
        """``<ns>.svc.<zone>``: the name whose NXDOMAIN denies this one (NAMESPACE only)."""
        return (self.namespace, SVC, *self.zone)


OUTSIDE: Final = Place(Kind.OUTSIDE)


def place(name: Name, qtype: int, zones: tuple[Name, ...]) -> Place:
    """Where ``name`` (lower-case labels) sits; see the module docstring."""
    found = split_zone(name, zones)
    if found is None:
        return OUTSIDE
    zone = zones[found[0]]
    relative = found[1]
    if qtype == wire.SOA or not relative or relative in _SPECIAL:
        return Place(Kind.OTHER, zone)
    request = parse_request(relative)
    if request == INVALID:
        return Place(Kind.IMPOSSIBLE, zone)
    if request.kind != SVC or not request.namespace:
        return Place(Kind.OTHER, zone)
    if request.protocol and request.protocol not in PORT_PROTOCOLS:
        return Place(Kind.IMPOSSIBLE, zone)
    return Place(Kind.NAMESPACE, zone, request.namespace)


def unshaped_subtrees(names: Iterable[Name], zones: tuple[Name, ...]) -> tuple[Name, ...]:
    """The subtrees the shape must not deny because kdns serves names in them outside its
    grammar (custom records such as ``legacy.cluster.local``): for each name in a cluster zone,
    its shortest ancestor the shape calls IMPOSSIBLE. Above that ancestor the shape allows the
    name (kdns answers an ancestor of a custom name NODATA, so no cut is learned there)."""
    out: dict[Name, None] = {}
    for name in names:
        found = split_zone(name, zones)
        if found is None:
            continue
        zone, relative = zones[found[0]], found[1]
        for depth in range(1, len(relative) + 1):
            ancestor = (*relative[-depth:], *zone)
            if place(ancestor, wire.A, zones).kind is Kind.IMPOSSIBLE:
                out[ancestor] = None
                break
    return tuple(out)


def to_labels(name: bytes) -> Name:
    """Lower-case labels of an uncompressed wire name, as ``kdns.wire.parse_name`` reads them."""
    labels: list[str] = []
    offset = 0
    while offset < len(name) and name[offset]:
        length = name[offset]
        labels.append(name[offset + 1 : offset + 1 + length].lower().decode("latin-1"))
        offset += 1 + length
    return tuple(labels)


def to_wire(labels: Name) -> bytes:
    """The wire form of lower-case labels (the inverse of ``to_labels``)."""
    out = bytearray()
    for label in labels:
        raw = label.encode("latin-1")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)
