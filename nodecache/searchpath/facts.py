"""What the node has learned about names, each fact with its own expiry.

Three kinds of fact, all learned from real replies (``learn``), never guessed:

* **NXDOMAIN for a name**, with the SOA that came with it. A name error is about the name, not
  the type (RFC 2308 §5: a cached NXDOMAIN answers the same name whatever type is asked), so
  one probe settles every type.
* **A namespace cut**: an NXDOMAIN for ``<ns>.svc.<zone>`` denies every name below it
  (RFC 8020). Kept only for that one level inside the cluster zone (``shape.Place.cut``),
  where kdns answers NXDOMAIN exactly when the namespace is missing; never below a Service
  (``_tcp.<svc>`` is NXDOMAIN while ``_http._tcp.<svc>`` exists). A cut is an NXDOMAIN fact
  for the cut name; ``shape`` decides which names it covers.
* **The name exists** (NOERROR, data or not), so a cut probe is not repeated while it holds.

And each cluster zone's SOA, for local NXDOMAIN replies (``zone_soa``).

Facts expire after the negative TTL of the reply they came from (min(SOA TTL, MINIMUM),
RFC 2308 §5, as the cache already capped it). Bounded (LRU); thread-safe. Time is injected.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cachetools import LRUCache

from kdns import dns as wire  # the wire package, under the name this module reads it by
from kdns.resolver.message import Kind, Record, ReplyFacts


@dataclass(frozen=True, slots=True)
class Fact:
    exists: bool
    soa: Record | None
    """The SOA of an NXDOMAIN (its authority record as received)."""
    expires: float

    def remaining(self, now: float) -> int:
        return int(self.expires - now)


class Facts:
    """See the module docstring."""

    def __init__(
        self, clock: Callable[[], float], max_names: int = 20_000, zones: Iterable[bytes] = ()
    ) -> None:
        self.clock = clock
        self.zones = frozenset(zones)
        """The zones whose SOA is kept (the cluster zones: local NXDOMAIN replies use them)."""
        self._names: LRUCache[bytes, Fact] = LRUCache(max_names)
        self._soas: dict[bytes, Fact] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._names)

    def get(self, name: bytes, now: float | None = None) -> Fact | None:
        """The fresh fact about ``name`` (lower-case wire form), if any."""
        now = self.clock() if now is None else now
        with self._lock:
            fact = self._names.get(name)
            if fact is None:
                return None
            if fact.remaining(now) <= 0:
                del self._names[name]
                return None
            return fact

    def nxdomain(self, name: bytes, now: float | None = None) -> Fact | None:
        fact = self.get(name, now)
        return fact if fact is not None and not fact.exists else None

    def learn(self, name: bytes, facts: ReplyFacts, now: float | None = None) -> Fact | None:
        """Remember what a reply to our question for ``name`` says about it. Errors (SERVFAIL,
        REFUSED) teach nothing; a negative answer without an SOA has no TTL, so nothing is
        kept (RFC 2308 §5)."""
        now = self.clock() if now is None else now
        if facts.kind is Kind.ERROR or facts.qname_lower != name or len(facts.chain) != 1:
            # Through a CNAME the facts are about the chain's end, not about ``name``.
            return None
        if facts.kind is Kind.POSITIVE:
            ttl = facts.min_ttl
            soa = None
        else:
            ttl = facts.negative_ttl
            soa = facts.soa
        if ttl is None or ttl <= 0:
            return None
        fact = Fact(facts.kind is not Kind.NXDOMAIN, soa, now + ttl)
        with self._lock:
            self._names[name] = fact
        if soa is not None:
            self._learn_soa(soa, now)
        return fact

    # --- zone SOAs ---------------------------------------------------------------------------

    def zone_soa(self, zone: bytes, now: float | None = None) -> Record | None:
        """The zone's SOA record if one was seen within its TTL."""
        now = self.clock() if now is None else now
        fact = self._soas.get(zone)
        if fact is None or fact.remaining(now) <= 0 or fact.soa is None:
            return None
        return fact.soa

    def learn_zone_soa(self, facts: ReplyFacts, now: float | None = None) -> Record | None:
        """Remember the SOA a reply to ``<zone> SOA`` carries in its answer."""
        now = self.clock() if now is None else now
        for record in facts.answer:
            if record.rtype == wire.SOA and record.owner_lower == facts.qname_lower:
                self._learn_soa(record, now)
                return record
        return None

    def _learn_soa(self, soa: Record, now: float) -> None:
        # Any SOA of a reply is the SOA of its owner's zone, good for the record's own TTL.
        if soa.ttl > 0 and soa.owner_lower in self.zones:
            self._soas[soa.owner_lower] = Fact(True, soa, now + soa.ttl)
