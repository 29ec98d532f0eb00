"""The search-path policy nodecache puts in front of its cache and upstreams.

``SearchPath`` is the ``kdns.resolver.core.SearchPathPolicy`` of nodecache. It sees every
query under a cluster zone that the cache cannot settle alone (``may_shortcut``: the handler's
cache-hit shortcut keeps every other name, and cluster names that exist), and decides, in
this order:

1. **Autopath** (``--autopath``), for A and AAAA from a client ``clients.ClientFilter``
   allows, when the name is a first search expansion ``X.<ns>.svc.<zone>``
   (``autopath.plan``). One decision per name, shared by the A and the AAAA query and by
   every pod asking it, cached for the answer's TTL: that is what makes the coredns#2842 split
   (the A autopathed, the AAAA not) impossible. Deciding walks the rest of the search path
   in the client's order, each candidate settled by local knowledge (step 2's rules) or by
   one probe through the cache (``Resolver.ask``), judged by ``autopath.judge``:

   * ``FOUND`` C: the reply is ``CNAME X.<ns>.svc.<zone> -> C`` plus C's records of the asked
     type (NODATA with C's SOA when C has only the other family);
   * ``NOT_FOUND`` (every candidate NXDOMAIN), ``DECLINED`` (a candidate the client must
     judge itself: ``autopath`` explains): the plain NXDOMAIN of the first query;
   * ``EXISTS``: the first expansion is a real name; the resolver answers it as usual.

2. **Local NXDOMAIN** (``--local-nxdomain``), for any client:

   * ``shape.Kind.IMPOSSIBLE``: NXDOMAIN with the zone's SOA (learned from kdns at start and
     kept fresh), without asking kdns;
   * a fresh NXDOMAIN fact for the name (``facts``: one probe settles every type); this one
     rule also holds outside the cluster zones, for names a walk has probed;
   * ``shape.Kind.NAMESPACE``: the namespace's RFC 8020 cut. Unknown, it costs one query for
     ``<ns>.svc.<zone>`` (kdns answers NXDOMAIN exactly when the namespace is missing), which
     then holds for its negative TTL.

3. Anything else goes on to the cache and the upstreams unchanged.

Replies that can be given at once are memoized per client address and query bytes (minus the
ID) for the rest of the second (``memo``), as the handler memoizes cache hits, so a warm search
miss is one dict lookup. Their bytes, and the negative TTL (the cache's own rule), are
``render``'s. Walks and probes run on a small thread pool of their own: a probe blocks on
the resolver's fetch, which runs on the resolver's pool, so the two never wait on each other.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final, Protocol

from cachetools import LRUCache

from kdns import dns as wire  # the wire package, under the name this module reads it by
from kdns.names import Name
from kdns.resolver import message
from kdns.resolver.cache import Cache, Key
from kdns.resolver.core import DEFERRED, ClientAddress, Deferred, Settle
from kdns.resolver.message import ClientQuery, Kind, MessageError, Record
from nodecache.searchpath import autopath, render, shape
from nodecache.searchpath.clients import ClientFilter
from nodecache.searchpath.facts import Facts
from nodecache.searchpath.memo import Memo, Remembered

logger = logging.getLogger(__name__)

MAX_PENDING: Final = 4096
"""Names with a walk or cut probe in flight; past this, queries take the plain path."""
MAX_NEGATIVE_DECISION_S: Final = 30.0
WALK_BUDGET_S: Final = 1.0
"""The longest a walk may take; past it the walk is DECLINED and the client walks itself.
musl gives a whole lookup 5 s, retransmitting after 2.5 s."""
MAX_FOLLOWERS: Final = 50_000
FOLLOWER_HOLD_S: Final = 10.0
"""At least this long, a NOT_FOUND walk's later candidates are not taken for first expansions
(the client asks them within milliseconds of the first answer)."""
MAX_REMEMBERED: Final = 8192
"""Memoized immediate replies (cleared when full)."""


class Asker(Protocol):
    """What the policy needs from the resolver (``kdns.resolver.core.Resolver``)."""

    cache: Cache

    def ask(self, qname: bytes, qtype: int, timeout_s: float = ...) -> bytes: ...


class Outcome(enum.Enum):
    FOUND = "found"
    NOT_FOUND = "not_found"
    DECLINED = "declined"
    EXISTS = "exists"


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    expires: float
    target: bytes = b""
    """FOUND: the candidate's wire name."""
    saved: int = 0
    """FOUND: queries per type the client no longer sends (the candidates up to the target)."""


LOCAL_MECHANISMS: Final[tuple[str, ...]] = ("shape", "cut", "name")
OUTCOMES: Final[tuple[str, ...]] = tuple(outcome.value for outcome in Outcome)
PROBES: Final[tuple[str, ...]] = ("candidate", "cut", "zone_soa")


@dataclass(slots=True)
class SearchPathStats:
    """Counters (monotonic) for ``nodecache.metrics``."""

    local: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LOCAL_MECHANISMS, 0))
    """Client queries answered NXDOMAIN on the node, by mechanism (shape, cut, name)."""
    autopath_answers: int = 0
    """Client queries answered with an autopath CNAME."""
    decisions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    """Autopath walks, by outcome."""
    client_queries_saved: int = 0
    """Search candidates clients did not have to send (autopath answers)."""
    walk_local: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LOCAL_MECHANISMS, 0))
    """Walk candidates settled without a query, by mechanism."""
    probes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBES, 0))
    """The policy's own queries through the cache, by purpose."""
    upstream_avoided: int = 0
    """Queries that would have gone to kdns or an upstream: local answers the cache did not
    hold, and walk candidates settled locally."""
    overflow: int = 0
    """Queries that took the plain path because ``MAX_PENDING`` names were in flight."""


class SearchPath:
    """See the module docstring. Thread-safe."""

    def __init__(
        self,
        zones: Iterable[str],
        clients: ClientFilter,
        *,
        host_search: Iterable[str] = (),
        autopath_on: bool = True,
        local_nxdomain: bool = True,
        excluded: Iterable[str] = (),
        clock: Callable[[], float],
        executor: Executor | None = None,
        workers: int = 64,
    ) -> None:
        self.zones: tuple[Name, ...] = tuple(_labels(zone) for zone in zones)
        self._zone_wires = {zone: shape.to_wire(zone) for zone in self.zones}
        self._suffixes = tuple(self._zone_wires.values())
        self._excluded = tuple(
            shape.to_wire(_labels(zone))
            for zone in excluded
            if shape.to_wire(_labels(zone)).endswith(self._suffixes)
        )
        """Zones inside a cluster zone that another route serves (stub domains): kdns's
        grammar says nothing about them."""
        self.host_search: tuple[Name, ...] = tuple(_labels(d) for d in host_search if d.strip("."))
        self.clients = clients
        self.autopath_on = autopath_on
        self.local_nxdomain = local_nxdomain
        self.clock = clock
        self.facts = Facts(clock, zones=self._suffixes)
        self.stats = SearchPathStats()
        self._resolver: Asker | None = None
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(workers, thread_name_prefix="searchpath")
        self._decisions: LRUCache[bytes, Decision] = LRUCache(20_000)
        self._followers: dict[bytes, float] = {}
        """Later candidates of walks that ended NOT_FOUND or DECLINED -> until when: the client
        now walks them itself, and each may look like a first expansion (``a.b.svc.<zone>``
        reads as ``a`` in namespace ``b``), so autopath must not start a walk from them."""
        self._rewritten: dict[bytes, float] = {}
        """First expansions with a FOUND, NOT_FOUND or DECLINED decision -> its expiry: read
        lock-free by ``may_shortcut`` on the UDP thread."""
        self._claim_watchers: list[Callable[[bytes], None]] = []
        self._pending: dict[bytes, list[tuple[ClientQuery, Settle, str]]] = {}
        self._cut_probes = 0
        """Client queries waiting on a cut probe (bounded with ``_pending`` by MAX_PENDING)."""
        self._followers_pruned = 0.0
        self._soa_pending: set[Name] = set()
        self._lock = threading.Lock()
        self._memo = Memo(MAX_REMEMBERED)

    # --- wiring ------------------------------------------------------------------------------

    def bind(self, resolver: Asker) -> None:
        """The resolver whose cache and upstreams the probes go through."""
        self._resolver = resolver

    def start(self) -> None:
        """Learn each cluster zone's SOA, for local NXDOMAIN replies (in the background)."""
        for zone in self.zones:
            self._refresh_soa(zone)

    def close(self) -> None:
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def watch_claims(self, claimed: Callable[[bytes], None]) -> None:
        """Call ``claimed(name)`` whenever ``may_shortcut`` turns false for a name it said true
        for (an autopath decision now covers it): the C loop's views of that name must go,
        since C does not ask the policy (``Cache.drop_views``)."""
        self._claim_watchers.append(claimed)

    def may_shortcut(self, name: bytes, kind: Kind) -> bool:
        """May a fresh cache entry of ``kind`` for ``name`` (lower-case wire) be served
        without ``decide`` (the handler's cache-hit shortcut)? Always outside the cluster
        zones. Inside, only for a name that exists (POSITIVE or NODATA) and that no autopath
        decision covers: an existing name is never rewritten by autopath (its decision is
        EXISTS) nor denied locally, so the cache's answer is the policy's. An NXDOMAIN entry
        must come to ``decide``: for an eligible pod it may be an autopath answer. (The suffix
        test of the wire bytes may also match a label that merely contains a zone's bytes;
        that only costs the query the shortcut.)"""
        if not name.endswith(self._suffixes) or (self._excluded and name.endswith(self._excluded)):
            return True
        if kind is not Kind.POSITIVE and kind is not Kind.NODATA:
            return False
        until = self._rewritten.get(name)
        return until is None or until <= self.clock()

    # --- the decision ------------------------------------------------------------------------

    def decide(
        self, query: ClientQuery, client: ClientAddress | None, settle: Settle
    ) -> bytes | Deferred | None:
        question = query.question
        if question.qclass != wire.CLASS_IN:
            return None
        if self._excluded and question.wire_lower.endswith(self._excluded):
            return None
        packet = query.packet
        now = self.clock()
        memo_key = ("" if client is None else client[0], packet[2:])
        remembered = self._recall(memo_key, now)
        if remembered is not None:
            return packet[:2] + remembered.reply
        if not question.wire_lower.endswith(self._suffixes):
            # Outside the cluster zones only the same-name rule applies: a walk's probe found
            # the name NXDOMAIN, so the client's own query of another type (when it walks the
            # path itself after NOT_FOUND or DECLINED) is answered here, not asked again.
            fact = self.facts.nxdomain(question.wire_lower, now)
            if fact is None or fact.soa is None:
                return None
            reply = render.nxdomain(query, fact.soa, fact.remaining(now))
            given = _Immediate(reply, fact.expires, "name")
            self._remember(memo_key, query, given, now)
            return reply
        decided = self._decide(query, client, settle, now)
        if isinstance(decided, _Immediate):
            self._remember(memo_key, query, decided, now)
            return decided.reply
        return decided

    def _remember(
        self, key: tuple[str, bytes], query: ClientQuery, given: _Immediate, now: float
    ) -> None:
        """Count a reply given on the node and memoize it for the rest of the second."""
        avoided = self._count(query, given.mechanism, given.saved)
        self._memo.remember(
            key, given.reply, given.valid_until, given.mechanism, given.saved, avoided, now
        )

    def remembered(self, packet: bytes, client_ip: str) -> bytes | None:
        """The reply ``decide`` gave this very query (its bytes but the ID, from this client)
        within the last second, if it still holds and fits any client's limit (512 bytes):
        the handler's shortcut for warm local answers and autopath answers, before any
        parsing. The memo only ever holds replies to queries that passed ``screen``."""
        memo = self._recall((client_ip, packet[2:]), self.clock(), wire.MIN_UDP_SIZE - 2)
        return None if memo is None else packet[:2] + memo.reply

    def _recall(
        self, key: tuple[str, bytes], now: float, max_size: int | None = None
    ) -> Remembered | None:
        """The memoized reply for ``key`` if it still holds (and is at most ``max_size``
        bytes without its ID), counted as given."""
        memo = self._memo.recall(key, now, max_size)
        if memo is None:
            return None
        if memo.mechanism == "autopath":
            self.stats.autopath_answers += 1
            self.stats.client_queries_saved += memo.saved
        else:
            self.stats.local[memo.mechanism] += 1
            if memo.avoided:
                self.stats.upstream_avoided += 1
        return memo

    def _decide(
        self, query: ClientQuery, client: ClientAddress | None, settle: Settle, now: float
    ) -> _Immediate | Deferred | None:
        question = query.question
        if (
            self.autopath_on
            and question.qtype in (wire.A, wire.AAAA)
            and client is not None
            and self.clients.enabled
            and self.clients.namespace(client[0]) is not None
        ):
            walk = autopath.plan(question.name, self.zones, self.host_search)
            if walk is not None:
                # Whatever happens to this query, the client may go on to walk the later
                # candidates itself: none of them may be taken for a first expansion.
                followed = self._followers.get(question.wire_lower, 0.0) > now
                marked = self._mark_followers(walk, now)
                if not followed and marked and self.clients.allows(client[0], walk.namespace):
                    return self._autopath(query, walk, settle, now, client[0])
        if not self.local_nxdomain:
            return None
        return self._local(query, settle, now)

    # --- local NXDOMAIN ----------------------------------------------------------------------

    def _local(
        self, query: ClientQuery, settle: Settle | None, now: float
    ) -> _Immediate | Deferred | None:
        """Step 2. With ``settle`` None it never defers (an unknown cut is left to kdns)."""
        question = query.question
        if question.qtype == wire.SOA:
            return None  # kdns answers SOA below the apex NODATA whatever the name (R8)
        place = shape.place(question.name, question.qtype, self.zones)
        if place.kind is shape.Kind.IMPOSSIBLE:
            soa = self.facts.zone_soa(self._zone_wires[place.zone], now)
            if soa is None:
                self._refresh_soa(place.zone)
                return None
            ttl = self._negative_ttl(soa, place.zone)
            return _Immediate(render.nxdomain(query, soa, ttl), now + ttl, "shape")
        if place.kind is shape.Kind.OUTSIDE:
            return None
        fact = self.facts.nxdomain(question.wire_lower, now)
        if fact is not None and fact.soa is not None:
            reply = render.nxdomain(query, fact.soa, fact.remaining(now))
            return _Immediate(reply, fact.expires, "name")
        if place.kind is not shape.Kind.NAMESPACE:
            return None
        cut = shape.to_wire(place.cut)
        fact = self.facts.get(cut, now)
        if fact is not None:
            if fact.exists or fact.soa is None:
                return None
            reply = render.nxdomain(query, fact.soa, fact.remaining(now))
            return _Immediate(reply, fact.expires, "cut")
        if settle is None or self._cached(query, now):
            return None  # the cache answers it without asking anyone; no cut needed
        with self._lock:
            if len(self._pending) + self._cut_probes >= MAX_PENDING:
                self.stats.overflow += 1
                return None
            self._cut_probes += 1
        if not self._submit(self._settle_cut, query, cut, settle):
            with self._lock:
                self._cut_probes -= 1
            return None
        return DEFERRED

    def _settle_cut(self, query: ClientQuery, cut: bytes, settle: Settle) -> None:
        reply = None
        with self._lock:
            self._cut_probes -= 1
        try:
            self._cut_until(cut)
            now = self.clock()
            fact = self.facts.nxdomain(cut, now)
            if fact is not None and fact.soa is not None:
                self._count(query, "cut", 0)
                reply = render.nxdomain(query, fact.soa, fact.remaining(now))
        finally:
            settle(reply)

    def _cached(self, query: ClientQuery, now: float) -> bool:
        resolver = self._resolver
        if resolver is None:
            return False
        entry = resolver.cache.peek(Key.of(query))
        return entry is not None and entry.remaining(now) > 0

    def _count(self, query: ClientQuery, mechanism: str, saved: int) -> bool:
        """Count one reply given on the node; returns whether it avoided an upstream query
        (a local answer the cache did not hold)."""
        if mechanism == "autopath":
            self.stats.autopath_answers += 1
            self.stats.client_queries_saved += saved
            return False
        self.stats.local[mechanism] += 1
        if self._cached(query, self.clock()):
            return False
        self.stats.upstream_avoided += 1
        return True

    def _negative_ttl(self, soa: Record, zone: Name) -> int:
        resolver = self._resolver
        limits = None
        if resolver is not None:
            limits = resolver.cache.ttl_policy.for_name(self._zone_wires[zone])
        return render.negative_ttl(soa, limits)

    def _refresh_soa(self, zone: Name) -> None:
        with self._lock:
            if zone in self._soa_pending or self._resolver is None:
                return
            self._soa_pending.add(zone)

        def fetch() -> None:
            try:
                reply = self._ask(self._zone_wires[zone], wire.SOA, "zone_soa")
                if reply is not None:
                    self.facts.learn_zone_soa(reply)
            finally:
                with self._lock:
                    self._soa_pending.discard(zone)

        try:
            self._executor.submit(fetch)
        except RuntimeError:  # shut down
            with self._lock:
                self._soa_pending.discard(zone)

    # --- autopath ----------------------------------------------------------------------------

    def _autopath(
        self, query: ClientQuery, walk: autopath.Walk, settle: Settle, now: float, client: str
    ) -> _Immediate | Deferred | None:
        first = query.question.wire_lower
        with self._lock:
            decision = self._decisions.get(first)
            if decision is not None and decision.expires <= now:
                del self._decisions[first]
                decision = None
            if decision is None:
                waiting = self._pending.get(first)
                if waiting is not None:
                    waiting.append((query, settle, client))
                    return DEFERRED
                if len(self._pending) >= MAX_PENDING:
                    self.stats.overflow += 1
                    return None
                self._pending[first] = [(query, settle, client)]
        if decision is None:
            if not self._submit(self._settle_walk, walk):
                with self._lock:
                    waiting = self._pending.pop(first, [])
                for _query, waiting_settle, _client in waiting[1:]:
                    waiting_settle(None)
                return None
            return DEFERRED
        rendered = self._render(query, decision, now, blocking=False)
        if isinstance(rendered, _Later):
            if not self._submit(self._settle_one, query, decision, settle, client):
                return None
            return DEFERRED
        return rendered

    def _settle_walk(self, walk: autopath.Walk) -> None:
        first = shape.to_wire(walk.first)
        try:
            decision = self._walk(walk)
        except Exception:
            logger.exception("autopath walk for %s failed; answering it plainly", walk.first)
            decision = Decision(Outcome.DECLINED, self.clock() + 1)
        self.stats.decisions[decision.outcome.value] += 1
        with self._lock:
            self._decisions[first] = decision
            if decision.outcome is not Outcome.EXISTS:
                now = self.clock()
                if len(self._rewritten) >= 40_000:
                    self._rewritten = {k: v for k, v in self._rewritten.items() if v > now}
                self._rewritten[first] = decision.expires
            waiting = self._pending.pop(first, [])
        if decision.outcome is not Outcome.EXISTS:
            for claimed in self._claim_watchers:
                claimed(first)
        for query, settle, client in waiting:
            try:
                self._settle_one(query, decision, settle, client)
            except Exception:
                logger.exception("settling an autopath query failed")

    def _mark_followers(self, walk: autopath.Walk, now: float) -> bool:
        """Mark the walk's later cluster-zone candidates as followers for ``FOLLOWER_HOLD_S``.
        False when the table is full of live marks: then autopath must not act (fail safe)."""
        names = [shape.to_wire(c) for c in walk.candidates]
        names = [name for name in names if name.endswith(self._suffixes)]
        until = now + FOLLOWER_HOLD_S
        with self._lock:
            followers = self._followers
            if len(followers) + len(names) > MAX_FOLLOWERS:
                if now - self._followers_pruned < 1.0:
                    return False
                self._followers_pruned = now
                followers = {k: v for k, v in followers.items() if v > now}
                self._followers = followers
                if len(followers) + len(names) > MAX_FOLLOWERS:
                    return False
            for name in names:
                followers[name] = until
        return True

    def _settle_one(
        self, query: ClientQuery, decision: Decision, settle: Settle, client: str
    ) -> None:
        now = self.clock()
        try:
            rendered = self._render(query, decision, now, blocking=True)
        except Exception:
            logger.exception("rendering an autopath answer failed; answering it plainly")
            rendered = None
        if isinstance(rendered, _Immediate):
            self._remember((client, query.packet[2:]), query, rendered, now)
            settle(rendered.reply)
        else:
            settle(None)

    def _render(
        self, query: ClientQuery, decision: Decision, now: float, *, blocking: bool
    ) -> _Immediate | _Later | None:
        """The reply a decision gives ``query``: an immediate reply and how long it holds,
        None for the resolver's plain path, or ``_LATER`` when a fetch is needed first (only
        when not ``blocking``)."""
        first = query.question.wire_lower
        if decision.outcome is Outcome.EXISTS:
            return None
        if decision.outcome is not Outcome.FOUND:
            fact = self.facts.nxdomain(first, now)
            if fact is not None and fact.soa is not None:
                reply = render.nxdomain(query, fact.soa, fact.remaining(now))
                return _Immediate(reply, min(fact.expires, decision.expires), "name")
            # Settled by the zone's shape or a cut in the walk: the same local answer.
            local = self._local(query, None, now) if self.local_nxdomain else None
            return local if isinstance(local, _Immediate) else None
        resolver = self._resolver
        assert resolver is not None
        qtype = query.question.qtype
        key = Key(decision.target, qtype, wire.CLASS_IN, False, False)
        entry = resolver.cache.peek(key)
        if entry is None or entry.remaining(now) <= 0:
            if not blocking:
                return _LATER
            self._ask(decision.target, qtype, "candidate")
            entry = resolver.cache.peek(key)
        target = None
        if entry is not None and entry.remaining(self.clock()) > 0:
            try:
                target = message.inspect(entry.message)
            except MessageError:
                target = None
        remaining = int(decision.expires - now)
        answer: tuple[Record, ...] = ()
        authority: tuple[Record, ...] = ()
        if entry is not None and target is not None and target.kind in (Kind.POSITIVE, Kind.NODATA):
            ttl = max(0, min(entry.remaining(now), remaining))
            answer = target.answer
            authority = target.authority if target.kind is Kind.NODATA else ()
        else:
            # The target's entry for this type is gone or changed: the CNAME alone (NOERROR),
            # never an NXDOMAIN that would split the pair (musl moves on at any NXDOMAIN).
            ttl = max(0, min(remaining, 5))
        reply = render.autopath_answer(query, decision.target, ttl, answer, authority)
        return _Immediate(reply, min(decision.expires, now + ttl), "autopath", decision.saved)

    def _walk(self, walk: autopath.Walk) -> Decision:
        """Decide one first expansion (blocking; on the policy's pool). A decision holds while
        every fact it rests on holds: the NXDOMAINs of the first expansion and of each skipped
        candidate (their negative TTLs; the zone's shape never expires), and for FOUND the
        target's A and AAAA entries."""
        first = shape.to_wire(walk.first)
        deadline = self.clock() + WALK_BUDGET_S
        # The first expansion's namespace is the pod's own: it exists, so no cut probe.
        kind, horizon = self._probe(walk.first, first, deadline=deadline, probe_cut=False)
        now = self.clock()
        if kind is not Kind.NXDOMAIN:
            fact = self.facts.get(first, now)
            ttl = fact.remaining(now) if fact is not None else 1
            outcome = Outcome.DECLINED if kind is Kind.ERROR else Outcome.EXISTS
            return Decision(outcome, now + max(1, ttl))
        for index, candidate in enumerate(walk.candidates):
            name = shape.to_wire(candidate)
            a, denied_until = self._probe(candidate, name, deadline=deadline)
            step = autopath.judge_first(a)
            if step is autopath.Step.NEXT:
                horizon = min(horizon, denied_until)
                continue
            if step is None:
                aaaa, _ = self._probe(candidate, name, wire.AAAA, deadline=deadline)
                step = autopath.judge(a, aaaa)
            if step is not autopath.Step.FOUND:
                return Decision(Outcome.DECLINED, self._bounded(horizon))
            found_until = self._target_expiry(name, first)
            if found_until is None:
                return Decision(Outcome.DECLINED, self._bounded(horizon))
            return Decision(Outcome.FOUND, min(found_until, horizon), name, index + 1)
        if not walk.complete:
            # The client's list goes on past what the node may assume it searches (the
            # kubelet's and musl's limits): it walks the rest itself.
            return Decision(Outcome.DECLINED, self._bounded(horizon))
        return Decision(Outcome.NOT_FOUND, self._bounded(horizon))

    def _target_expiry(self, target: bytes, first: bytes) -> float | None:
        """When the first of the target's A and AAAA cache entries expires; None if one is
        not cached, or if an autopath answer would not fit a 512-byte UDP reply (with an OPT):
        a CNAME that pushes an answer over would make the client retry over TCP, which musl
        before 1.2.4 cannot, while the plain answer (the target's own reply) fits."""
        resolver = self._resolver
        assert resolver is not None
        expiries = []
        for qtype in (wire.A, wire.AAAA):
            entry = resolver.cache.peek(Key(target, qtype, wire.CLASS_IN, False, False))
            if entry is None:
                return None
            # question grows from the target to the first expansion; one CNAME RR is added
            size = len(entry.message) - len(target) + len(first) + 12 + len(target) + 11
            if size > wire.MIN_UDP_SIZE:
                return None
            expiries.append(entry.expires)
        return min(expiries)

    def _bounded(self, horizon: float) -> float:
        """A negative decision resting only on the zone's shape holds forever in principle;
        it is re-walked after ``MAX_NEGATIVE_DECISION_S`` (host-domain facts may change)."""
        return min(horizon, self.clock() + MAX_NEGATIVE_DECISION_S)

    def _probe(
        self,
        name: Name,
        name_wire: bytes,
        qtype: int = wire.A,
        *,
        deadline: float,
        probe_cut: bool = True,
    ) -> tuple[Kind, float]:
        """What one candidate's reply of ``qtype`` is, and for an NXDOMAIN until when the node
        knows it (``now + 1`` when it could not keep the fact, e.g. a reply without an SOA):
        from local knowledge when it settles NXDOMAIN (the zone's shape never expires), else
        by one query through the cache (ERROR once the walk's budget is spent, so a slow
        upstream ends the walk and the client walks itself)."""
        known = self._known_nxdomain(name, name_wire, probe_cut)
        if known is not None:
            mechanism, until = known
            self.stats.walk_local[mechanism] += 1
            self.stats.upstream_avoided += 1
            return Kind.NXDOMAIN, until
        left = deadline - self.clock()
        if left <= 0:
            return Kind.ERROR, 0.0
        reply = self._ask(name_wire, qtype, "candidate", timeout_s=left)
        if reply is None:
            return Kind.ERROR, 0.0
        now = self.clock()
        fact = self.facts.nxdomain(name_wire, now)
        return reply.kind, fact.expires if fact is not None else now + 1

    def _known_nxdomain(
        self, name: Name, name_wire: bytes, probe_cut: bool
    ) -> tuple[str, float] | None:
        """How the node knows ``name`` is NXDOMAIN without asking it, and until when."""
        fact = self.facts.nxdomain(name_wire)
        if fact is not None:
            return "name", fact.expires
        if not self.local_nxdomain or (self._excluded and name_wire.endswith(self._excluded)):
            return None
        place = shape.place(name, wire.A, self.zones)
        if place.kind is shape.Kind.IMPOSSIBLE:
            return "shape", math.inf
        if place.kind is shape.Kind.NAMESPACE:
            cut = shape.to_wire(place.cut)
            if cut != name_wire:
                until = self._cut_until(cut, probe_cut)
                if until is not None:
                    return "cut", until
        return None

    def _cut_until(self, cut: bytes, ask: bool = True) -> float | None:
        """Until when the namespace cut ``cut`` holds (None: it does not, or is not known),
        asking kdns once if it is not known (and ``ask``)."""
        fact = self.facts.get(cut)
        if fact is None:
            if not ask:
                return None
            reply = self._ask(cut, wire.A, "cut")
            if reply is None:
                return None
            fact = self.facts.get(cut)
            if fact is None:
                return self.clock() + 1 if reply.kind is Kind.NXDOMAIN else None
        return None if fact.exists else fact.expires

    def _ask(
        self, name: bytes, qtype: int, purpose: str, timeout_s: float = 10.0
    ) -> message.ReplyFacts | None:
        resolver = self._resolver
        if resolver is None:
            return None
        self.stats.probes[purpose] += 1
        try:
            facts = message.inspect(resolver.ask(name, qtype, timeout_s))
        except MessageError:
            return None
        # Outside the cluster zones an NXDOMAIN is taken for every type only when it answered
        # an A query: the broken pattern of RFC 4074 §3 (NXDOMAIN to AAAA for a name with A
        # records) must not deny the A. kdns is not broken that way.
        if qtype == wire.A or (qtype != wire.SOA and name.endswith(self._suffixes)):
            self.facts.learn(name, facts)
        return facts

    def _submit(self, fn: Callable[..., None], *args: object) -> bool:
        """Run ``fn(*args)`` on the pool; False if the pool is shut down."""

        def run() -> None:
            try:
                fn(*args)
            except Exception:
                logger.exception("search-path task failed")

        try:
            self._executor.submit(run)
        except RuntimeError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class _Immediate:
    """A reply given at once, how long it holds, and what to count for it."""

    reply: bytes
    valid_until: float
    mechanism: str
    """shape, cut, name or autopath."""
    saved: int = 0


class _Later:
    __slots__ = ()


_LATER: Final = _Later()


def _labels(text: str) -> Name:
    text = text.strip().rstrip(".").lower()
    return tuple(text.split(".")) if text else ()
