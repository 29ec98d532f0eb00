"""The resolver's decisions as pure functions: which branch ``core.Resolver`` takes for a query.

``core`` does the effects (counting, fetching, patching bytes, timers); each choice it makes is
one call here, on plain values, so the rules are tested from tables
(``tests/unit/resolver/test_decide.py``) with no cache, lane, clock or upstream:

* ``first_step``: what the cache holds and whether a route covers the name → a fresh hit,
  REFUSED, stale now (with or without a refresh), VERIFY, or a fetch (RFC 8767 §4-5).
* ``shed_internal``: the node's own query (a search-path walk) never waits for a worker.
* ``on_full``: a route with ``max_pending`` waiting answers now, stale if it can.
* ``settle``: what a finished fetch becomes for the client waiting on it.
* ``caches_failure``: which failures are facts about the name (cached as SERVFAIL).
"""

from __future__ import annotations

import enum

from kdns.resolver.config import StaleMode
from kdns.resolver.message import Kind
from kdns.resolver.reasons import Reason


class Cached(enum.Enum):
    """What ``Cache.lookup`` found for the key."""

    NONE = "none"
    FRESH = "fresh"
    STALE = "stale"
    """Expired, within ``max_stale_s``, and serve-stale is on."""


class Step(enum.Enum):
    """The first thing ``Resolver`` does with a query past the search-path policy."""

    HIT = "hit"
    """The fresh entry's bytes, now."""
    REFUSE = "refuse"
    """No route covers the name (kdns with ``--upstream none``)."""
    STALE = "stale"
    """The stale entry now, no refresh: a refresh failed less than ``recheck_s`` ago (§5)."""
    STALE_REFRESH = "stale_refresh"
    """``immediate``: the stale entry now, and a refresh in the background."""
    VERIFY = "verify"
    """``verify``: ask the upstream; the stale entry if it fails or misses the timeout."""
    FETCH = "fetch"
    """A miss: ask the upstream."""


def first_step(cached: Cached, routed: bool, mode: StaleMode, recheck_pending: bool) -> Step:
    """``recheck_pending``: ``Cache.recheck_pending`` of the stale entry (ignored otherwise)."""
    if cached is Cached.FRESH:
        return Step.HIT
    if not routed:
        return Step.REFUSE
    if cached is Cached.STALE:
        if recheck_pending:
            return Step.STALE
        if mode is StaleMode.IMMEDIATE:
            return Step.STALE_REFRESH
        return Step.VERIFY
    return Step.FETCH


def shed_internal(internal: bool, joining: bool, busy: int, workers: int) -> bool:
    """Whether the node's own query is answered SERVFAIL now: it needs a new fetch and every
    worker of the route is busy. Waiting would hold the policy's pool (every route's) for as
    long as this route's queue takes; declining lets the client walk itself, through queries
    this route queues as clients'."""
    return internal and not joining and busy >= workers


class Settlement(enum.Enum):
    """The reply a client gets once its fetch is over (or its route is full)."""

    ENTRY = "entry"
    """The entry now cached, its remaining TTL."""
    BUILT = "built"
    """The fresh reply as built, with its own TTLs: good, but not cacheable."""
    LAST_GOOD = "last_good"
    """The fetch failed; the entry kept for the key is last-known-good data (RFC 8767)."""
    STALE_HIT = "stale_hit"
    """The fetch failed; the stale entry the query found."""
    SERVFAIL = "servfail"
    """SERVFAIL with EDE 22 "No Reachable Authority" (never NXDOMAIN)."""


def on_full(stale_hit: bool) -> Settlement:
    """A route already holding ``max_pending`` queries answers the next one now (issue 11)."""
    return Settlement.STALE_HIT if stale_hit else Settlement.SERVFAIL


def settle(
    failed: bool, entry: Kind | None, built: bool, mode: StaleMode, stale_hit: bool
) -> Settlement:
    """``failed``: the fetch ended in a ``Failure``; ``entry``: the kind of the entry the cache
    holds for the key afterwards (None: none); ``built``: the upstream's reply was built."""
    if not failed:
        if entry is not None:
            return Settlement.ENTRY
        return Settlement.BUILT if built else Settlement.SERVFAIL
    if mode is not StaleMode.OFF:
        if entry is not None and entry is not Kind.ERROR:
            return Settlement.LAST_GOOD
        if stale_hit:
            return Settlement.STALE_HIT
    return Settlement.SERVFAIL


_LOCAL: frozenset[Reason] = frozenset({Reason.OVERLOADED, Reason.CLOSED})


def caches_failure(reason: Reason) -> bool:
    """Whether a failure is stored as a SERVFAIL entry for the name (``servfail_s``). Our own
    capacity or shutdown is a local condition, not an answer about the name: nothing cached."""
    return reason not in _LOCAL
