"""Node-scoped autopath, the pure part: which names a pod's search path would try, and when a
candidate ends the walk.

A ClusterFirst pod in namespace ``ns`` has the kubelet's search list (``pkg/kubelet/network/dns``)::

    ns.svc.<zone>  svc.<zone>  <zone>  <the node's search domains...>

and ndots:5, so a name ``X`` with fewer than 5 dots is tried as ``X.ns.svc.<zone>`` first, then
``X.svc.<zone>``, ``X.<zone>``, ``X.<host domain>``... and last ``X.`` as given (glibc and musl
alike, ../shared/docs/nodecache.md §3). ``plan`` turns the first expansion back into the rest
of that walk; the namespace comes from the query's own suffix.

``judge`` is the rule for one candidate, from its A reply and (when that is not NXDOMAIN) its
AAAA reply. It is chosen so the application gets what it would have got without us, whether
its libc is glibc or musl:

* NXDOMAIN (one reply settles every type, RFC 2308 §5) -> try the next candidate. Both libcs
  do; it is the only outcome on which musl goes on.
* addresses in either reply, the other clean (NOERROR) -> ``FOUND``: both libcs stop here and
  return these addresses.
* anything else -> ``STOP``: the node gives up and answers the first query's plain NXDOMAIN,
  so the client walks the list itself and meets the outcome with its own rules. That covers a
  NODATA pair (glibc goes on, musl stops with EAI_NODATA), SERVFAIL or any other error (musl
  stops with EAI_AGAIN, glibc goes on or stops by its own rules), and an inconsistent pair.
  The node never answers NODATA or SERVFAIL to a search candidate where NXDOMAIN is correct.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from kdns.names import SVC, Name, split_zone
from kdns.resolver.message import Kind

MAX_SEARCH_DOMAINS: Final = 6
"""Domains of a pod's search list the walk may assume every client searches: the kubelet's
legacy limit (6 domains, 256 characters; ExpandedDNSConfig, GA in 1.28, allows 32 and 2048)."""
MAX_SEARCH_LINE: Final = 255
"""musl reads resolv.conf lines into a 256-byte buffer, so it searches only the domains that
fit in the first 255 characters of ``search ...`` (and a cut one partly)."""
MAX_NAME_OCTETS: Final = 255


@dataclass(frozen=True, slots=True)
class Walk:
    """The rest of one pod's search walk after its first expansion."""

    first: Name
    """``X.<ns>.svc.<zone>``: the name the client asked."""
    base: Name
    """``X``."""
    namespace: str
    candidates: tuple[Name, ...]
    """In the client's order: ``X.svc.<zone>``, ``X.<zone>``, ``X.<host>``..., ``X``."""
    complete: bool = True
    """False when the search list was longer than ``search_list`` may assume: the candidates
    stop there (without ``X``) and the client walks the rest itself."""


def search_list(
    namespace: str, zone: Name, host_search: Sequence[Name]
) -> tuple[tuple[Name, ...], bool]:
    """A ClusterFirst pod's search list, as the kubelet writes it (duplicates dropped), cut
    to what every client is sure to search (``MAX_SEARCH_DOMAINS``, ``MAX_SEARCH_LINE``); and
    whether nothing was cut."""
    domains: list[Name] = [(namespace, SVC, *zone), (SVC, *zone), zone]
    for domain in host_search:
        if domain and domain not in domains:
            domains.append(domain)
    kept: list[Name] = []
    line = len("search")
    for domain in domains:
        line += 1 + len(".".join(domain))
        if len(kept) == MAX_SEARCH_DOMAINS or line > MAX_SEARCH_LINE:
            return tuple(kept), False
        kept.append(domain)
    return tuple(kept), True


def plan(name: Name, zones: tuple[Name, ...], host_search: Sequence[Name]) -> Walk | None:
    """The walk ``name`` starts if it is a first search expansion ``X.<ns>.svc.<zone>``
    (``X`` at least one label), else None."""
    found = split_zone(name, zones)
    if found is None:
        return None
    zone = zones[found[0]]
    relative = found[1]
    if len(relative) < 3 or relative[-1] != SVC:
        return None
    namespace = relative[-2]
    base = relative[:-2]
    domains, complete = search_list(namespace, zone, host_search)
    candidates = [(*base, *domain) for domain in domains[1:]]
    if complete:
        candidates.append(base)
    return Walk(
        first=name,
        base=base,
        namespace=namespace,
        candidates=tuple(c for c in candidates if _octets(c) <= MAX_NAME_OCTETS),
        complete=complete,
    )


def _octets(name: Name) -> int:
    return sum(len(label.encode("latin-1")) + 1 for label in name) + 1


class Step(enum.Enum):
    NEXT = "next"
    FOUND = "found"
    STOP = "stop"


def judge_first(a: Kind) -> Step | None:
    """The step after a candidate's A reply alone; None when its AAAA reply must decide."""
    if a is Kind.NXDOMAIN:
        return Step.NEXT
    if a is Kind.ERROR:
        return Step.STOP
    return None


def judge(a: Kind, aaaa: Kind) -> Step:
    """The step for a candidate whose A reply was not NXDOMAIN (see the module docstring)."""
    if a is Kind.NXDOMAIN and aaaa is Kind.NXDOMAIN:
        return Step.NEXT
    clean = (Kind.POSITIVE, Kind.NODATA)
    if a in clean and aaaa in clean and Kind.POSITIVE in (a, aaaa):
        return Step.FOUND
    return Step.STOP
