"""The resolver cache: stored replies keyed by question, bounded by entries and by bytes.

It owns the entries and their clocks; the rules live in ``policy.py`` and the bytes in
``message.py``. Time is a parameter: ``Cache(clock=...)``, and every method takes ``now``
(default ``clock()``), so tests never sleep (CoreDNS ``c.now``).

* **Key** (CoreDNS ``hash``): (lower-case wire qname, qtype, qclass, DO, CD). DO and CD change
  what an upstream returns (RRSIGs; unvalidated data), so they are part of the question.
* **Entries** hold the ``Built`` bytes (ID 0, no OPT), the TTL offsets and one TTL. A hit is
  ``message.patch``: the remaining TTL, whole seconds counting down from the stored TTL
  (served TTL = TTL - floor(elapsed), CoreDNS ``ttl()``), written into every RR, so all RRs of
  an answer carry the same TTL. No dnslib, no parse per hit.
* **Positive, negative and SERVFAIL** entries share one LRU: ``cachetools.LRUCache`` sized in
  bytes (``getsizeof``) with a second bound on the entry count. LRU rather than CoreDNS's random
  eviction: expired entries nobody asks for (kops#5652) are the least recent and go first.
* **Serve-stale** (RFC 8767): an expired positive or negative entry is kept for
  ``max_stale_s`` and ``lookup`` returns it marked ``stale`` with ``ttl_s`` (30 s, §4); the
  resolver decides when to use it. Expired SERVFAIL entries are never stale-served. A SERVFAIL
  never replaces a fresh entry (a failed prefetch) and, with ``prefer_positive``, not one still
  within its stale window either: it only stamps ``failed_at`` (the §5 failure recheck timer).
* **Prefetch**: each store schedules one look at the entry near its expiry
  (``policy.prefetch_due``) on a heap; ``due_prefetches(now)`` pops what is due and returns the
  entries ``policy.should_prefetch`` picks, each at most once per lifetime.
* **Views** (``enable_views``): nodecache's UDP loop serves fresh hits in C
  (kdns/serve/_fastpath.c), from a plain dict of views the cache keeps in step with its
  entries: ``install_view`` adds one for an entry that is current; storing over a key,
  evicting it or clearing the cache removes its view at once, so C never serves an entry the
  cache no longer holds, and an expired one is the fallback's (C checks the seconds left). C
  counts each hit in its view and puts the view in ``hit_log`` on its first hit since the
  last ``absorb_hits``; that call moves the hits, ask times and LRU touches into the entries
  (what ``lookup`` does per hit), so prefetch and eviction see C's hits as their own. The C
  clock is ``time.monotonic``'s: views are only for a cache on that clock.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from cachetools import Cache as _BaseCache
from cachetools import LRUCache

from kdns import dns as wire  # the wire package, under the name this module reads it by
from kdns.resolver import message, policy
from kdns.resolver.config import CacheConfig, PrefetchConfig, StaleConfig, StaleMode
from kdns.resolver.message import Built, ClientQuery, Kind

ENTRY_OVERHEAD = 400
"""Bytes charged per entry on top of its message (the Entry, key and LRU bookkeeping)."""


class Key(NamedTuple):
    """The cache key (CoreDNS: DO, CD, qtype, qclass, lower-cased qname)."""

    name: bytes
    qtype: int
    qclass: int
    do: bool
    cd: bool

    @classmethod
    def of(cls, query: ClientQuery) -> Key:
        question = query.question
        edns = query.edns
        return tuple.__new__(
            cls,
            (
                question.wire_lower,
                question.qtype,
                question.qclass,
                edns is not None and edns.do_bit,
                bool(query.flags & message.CD),
            ),
        )


@dataclass(slots=True, eq=False)
class Entry:
    """One cached reply and its lifetime bookkeeping (mutated only under the cache lock)."""

    key: Key
    message: bytes
    question_end: int
    ttl_offsets: tuple[int, ...]
    kind: Kind
    rcode: int
    stored_at: float
    ttl: int
    hits: int = 0
    """Client queries in the current lifetime (the miss that stored it counts as one)."""
    last_ask: float = -math.inf
    """When a client last asked for this key (carried across refreshes)."""
    previous_ask: float = -math.inf
    """When a client asked the time before that."""
    touched: float = -math.inf
    """When the LRU order last saw a hit (refreshed at most once a second, see ``lookup``)."""
    heads: tuple[bytes, ...] = ()
    """``message.header_variants(message)``."""
    memo: tuple[int, bytes] = (-1, b"")
    """(TTL, the records after the question with every TTL set to it): the bytes only change
    once a second, so most hits are one join of five pieces."""

    def __post_init__(self) -> None:
        self.heads = message.header_variants(self.message)

    failed_at: float | None = None
    """When the last refresh of this entry failed (RFC 8767 §5 failure recheck timer)."""

    @property
    def expires(self) -> float:
        return self.stored_at + self.ttl

    @property
    def size(self) -> int:
        return len(self.message) + ENTRY_OVERHEAD

    @property
    def question(self) -> bytes:
        """The stored question section (name in the case of whoever asked first)."""
        return self.message[wire.HEADER_SIZE : self.question_end]

    def remaining(self, now: float) -> int:
        """Whole seconds left; <= 0 once expired."""
        return self.ttl - int(now - self.stored_at)


class Hit(NamedTuple):
    """A lookup result: the entry, the TTL to serve, and whether it is stale."""

    entry: Entry
    ttl: int
    stale: bool

    @property
    def is_servfail(self) -> bool:
        return self.entry.kind is Kind.ERROR

    def reply(self, query: ClientQuery, ede: int | None = None) -> bytes:
        """The bytes for ``query`` (whose key is this entry's): patched, or a SERVFAIL.

        The same bytes as ``message.patch(entry.message, ...)``, assembled from the entry's
        precomputed header variants and its per-second TTL memo (tests hold them equal)."""
        entry, ttl, _stale = self
        if entry.kind is Kind.ERROR:
            return message.error_reply(query, entry.rcode, ede)
        memo_ttl, tail = entry.memo
        if memo_ttl != ttl:
            patched = message.patch(entry.message, b"\0\0", 0, b"", ttl, entry.ttl_offsets)
            tail = patched[entry.question_end :]
            entry.memo = (ttl, tail)  # one tuple store: readers see old or new, never half
        packet = query.packet
        return b"".join(
            (
                packet[:2],
                entry.heads[message.variant_index(query)],
                packet[wire.HEADER_SIZE : query.question.end],
                tail,
                message.reply_opt(query, ede),
            )
        )


class View(Protocol):
    """What the C loop serves a fresh entry from (``kdns.serve._fastpath.CacheView``)."""

    @property
    def entry(self) -> object: ...

    def take(self) -> tuple[int, float, float]:
        """(hits, last ask, previous ask) since the last take, and start again."""
        ...


def view_key(key: Key) -> bytes:
    """A key as the C loop writes it: the question key (lower-case name, type, class) and one
    byte DO << 1 | CD."""
    return b"".join(
        (
            key.name,
            key.qtype.to_bytes(2, "big"),
            key.qclass.to_bytes(2, "big"),
            bytes(((key.do << 1) | key.cd,)),
        )
    )


class Refresh(NamedTuple):
    """A prefetch to run: the key and the question to ask (the stored question bytes)."""

    key: Key
    question: bytes


@dataclass(slots=True)
class CacheStats:
    """Counters (monotonic) for metrics."""

    hits: int = 0
    stale_hits: int = 0
    misses: int = 0
    stores: int = 0
    drops: int = 0
    """Replies refused because their question did not match the key (poisoning guard)."""
    uncacheable: int = 0
    kept_last_good: int = 0
    """SERVFAILs that did not replace a last-known-good entry."""
    prefetches: int = 0
    evictions: int = 0
    denial_hits: int = 0
    """Fresh hits of NXDOMAIN, NODATA and SERVFAIL entries (CoreDNS's ``type="denial"``)."""
    denial_evictions: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    view_hits: int = 0
    """Fresh hits the C loop served from views (also in ``hits``, once absorbed)."""


def _sizeof(entry: Entry) -> int:
    return entry.size


class _Store(LRUCache[Key, Entry]):
    """An LRU bounded by bytes (cachetools ``getsizeof``) and by entry count, with a plain
    dict mirror (``fast``) that hits read without the lock or the LRU bookkeeping."""

    def __init__(self, max_entries: int, max_bytes: int, stats: CacheStats) -> None:
        super().__init__(maxsize=max_bytes, getsizeof=_sizeof)
        self.max_entries = max_entries
        self.stats = stats
        self.fast: dict[Key, Entry] = {}
        self.views: dict[bytes, View] | None = None
        """The C loop's views by ``view_key`` (None until ``Cache.enable_views``)."""
        self.viewed: dict[bytes, set[Key]] = {}
        """The keys with a view, by name (``Cache.drop_views``)."""

    def add_view(self, key: Key, view: View) -> None:
        assert self.views is not None
        self.views[view_key(key)] = view
        self.viewed.setdefault(key.name, set()).add(key)

    def _drop_view(self, key: Key) -> None:
        if self.views is not None and self.views.pop(view_key(key), None) is not None:
            keys = self.viewed.get(key.name)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.viewed[key.name]

    def drop_views_of(self, name: bytes) -> None:
        for key in list(self.viewed.get(name, ())):
            self._drop_view(key)

    def popitem(self) -> tuple[Key, Entry]:
        key, entry = super().popitem()
        self.fast.pop(key, None)
        self._drop_view(key)
        self.stats.evictions += 1
        if entry.kind is not Kind.POSITIVE:
            self.stats.denial_evictions += 1
        return key, entry

    def __setitem__(self, key: Key, value: Entry) -> None:
        if key not in self:
            while len(self) >= self.max_entries:
                self.popitem()
        else:
            self._drop_view(key)  # the old entry's: C must not serve it past the replacement
        super().__setitem__(key, value)
        self.fast[key] = value

    def __delitem__(self, key: Key) -> None:
        super().__delitem__(key)
        self.fast.pop(key, None)
        self._drop_view(key)

    def peek(self, key: Key) -> Entry | None:
        """Read without touching the LRU order (prefetch bookkeeping is not a use)."""
        try:
            return _BaseCache.__getitem__(self, key)
        except KeyError:
            return None


class Cache:
    """Thread-safe; one lock around every operation (each is a few dict operations)."""

    def __init__(
        self,
        config: CacheConfig | None = None,
        *,
        prefetch: PrefetchConfig | None = None,
        stale: StaleConfig | None = None,
        ttl_policy: policy.TTLPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or CacheConfig()
        self.prefetch = prefetch or PrefetchConfig()
        self.stale = stale or StaleConfig()
        self.ttl_policy = ttl_policy or policy.TTLPolicy(
            self.config.zone_ttls, self.config.default_ttl
        )
        self.clock = clock
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._entries = _Store(self.config.max_entries, self.config.max_bytes, self.stats)
        self._due: list[tuple[float, int, Key, Entry]] = []
        self._sequence = itertools.count()
        self._make_view: Callable[[Entry], View] | None = None
        self.hit_log: list[View] = []
        """Views the C loop served since the last ``absorb_hits`` (each once)."""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return int(self._entries.currsize)

    def reconfigure(
        self,
        *,
        prefetch: PrefetchConfig | None = None,
        stale: StaleConfig | None = None,
        ttl_policy: policy.TTLPolicy | None = None,
    ) -> None:
        """Swap policies in place (a config reload keeps every entry)."""
        with self._lock:
            if prefetch is not None:
                self.prefetch = prefetch
            if stale is not None:
                self.stale = stale
            if ttl_policy is not None:
                self.ttl_policy = ttl_policy

    def lookup(self, key: Key, now: float | None = None) -> Hit | None:
        """A fresh hit, a stale hit (expired, within ``max_stale_s``, not SERVFAIL), or None.

        A fresh hit takes no lock: one dict read (atomic under the GIL) and counter updates
        that may, rarely, lose an increment to a race, which only blurs statistics and the
        prefetch rule's inputs. The LRU order is refreshed at most once a second per entry
        (approximate LRU at 1 s resolution), which is what keeps cachetools off the hot path.
        """
        if now is None:
            now = self.clock()
        entry = self._entries.fast.get(key)
        if entry is not None:
            remaining = entry.ttl - int(now - entry.stored_at)
            if remaining > 0:
                entry.previous_ask, entry.last_ask = entry.last_ask, now
                entry.hits += 1
                self.stats.hits += 1
                if entry.kind is not Kind.POSITIVE:
                    self.stats.denial_hits += 1
                if now - entry.touched >= 1.0:
                    entry.touched = now
                    with self._lock:
                        self._entries.get(entry.key)  # move to the LRU's recent end
                return Hit(entry, remaining, False)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                return None
            remaining = entry.ttl - int(now - entry.stored_at)
            entry.previous_ask, entry.last_ask = entry.last_ask, now
            if remaining > 0:
                entry.hits += 1
                self.stats.hits += 1
                if entry.kind is not Kind.POSITIVE:
                    self.stats.denial_hits += 1
                return Hit(entry, remaining, False)
            stale = self.stale
            if entry.kind is Kind.ERROR or now - entry.expires > stale.max_stale_s:
                del self._entries[key]
                self.stats.misses += 1
                return None
            self.stats.misses += 1
            if stale.mode is StaleMode.OFF:
                return None  # kept (for its query times) until max_stale_s; not served
            self.stats.stale_hits += 1
            return Hit(entry, stale.ttl_s, True)

    # --- views for the C loop --------------------------------------------------------------------

    def enable_views(self, make: Callable[[Entry], View]) -> dict[bytes, View] | None:
        """Keep views (made by ``make``) for the C loop from now on: the dict it reads, or None
        when this cache's clock is not ``time.monotonic`` (C's clock; tests inject their own)."""
        if self.clock is not time.monotonic:
            return None
        with self._lock:
            if self._entries.views is None:
                self._entries.views = {}
            self._make_view = make
            return self._entries.views

    def install_view(self, key: Key, entry: Entry) -> bool:
        """Let the C loop serve ``entry``'s fresh hits, if it is still the one cached for
        ``key`` and not a SERVFAIL (whose reply is built per query). True if it now does."""
        with self._lock:
            views = self._entries.views
            make = self._make_view
            if views is None or make is None or entry.kind is Kind.ERROR:
                return False
            if self._entries.fast.get(key) is not entry:
                return False
            self._entries.add_view(key, make(entry))
            return True

    def drop_views(self, name: bytes) -> None:
        """The C loop stops serving ``name`` (lower-case wire), every type and variant: a
        search-path policy now claims its hits (``SearchPath.watch_claims``)."""
        with self._lock:
            self._entries.drop_views_of(name)

    def absorb_hits(self) -> int:
        """Move the C loop's hits into the entries (counts, ask times, LRU order, at most one
        touch a second as in ``lookup``); returns how many there were."""
        log = self.hit_log
        if not log:
            return 0
        taken = log[:]
        del log[: len(taken)]  # C may append meanwhile (it holds the GIL): those stay
        total = 0
        with self._lock:
            for view in taken:
                hits, last, previous = view.take()
                if not hits:
                    continue
                entry = view.entry
                assert isinstance(entry, Entry)
                total += hits
                entry.hits += hits
                if hits >= 2:
                    entry.previous_ask, entry.last_ask = previous, last
                else:
                    entry.previous_ask, entry.last_ask = entry.last_ask, last
                if entry.kind is not Kind.POSITIVE:
                    self.stats.denial_hits += hits
                if last - entry.touched >= 1.0 and self._entries.peek(entry.key) is entry:
                    entry.touched = last
                    self._entries.get(entry.key)  # move to the LRU's recent end
            self.stats.hits += total
            self.stats.view_hits += total
        return total

    def entries_by_kind(self) -> tuple[int, int]:
        """(positive entries, the others: NXDOMAIN, NODATA, SERVFAIL), for a gauge."""
        entries = list(self._entries.fast.values())  # one C-level copy: safe without the lock
        positive = sum(1 for entry in entries if entry.kind is Kind.POSITIVE)
        return positive, len(entries) - positive

    def peek(self, key: Key) -> Entry | None:
        """The entry, fresh or not, without counting or reordering anything."""
        with self._lock:
            return self._entries.peek(key)

    def store(
        self, key: Key, built: Built, now: float | None = None, *, demand: bool = True
    ) -> Entry | None:
        """Cache ``built`` for ``key``. ``demand``: a client asked (a miss or a refresh a
        client waited for) rather than a prefetch. Returns the entry now cached for the key,
        or None if ``built`` was not cacheable (counted)."""
        if now is None:
            now = self.clock()
        if not self._question_matches(key, built):
            with self._lock:
                self.stats.drops += 1
            return None
        ttl = policy.cache_ttl(built, self.ttl_policy.for_name(key.name), self.config.servfail_s)
        with self._lock:
            if ttl is None:
                self.stats.uncacheable += 1
                return None
            old = self._entries.peek(key)
            if old is not None and built.kind is Kind.ERROR and old.kind is not Kind.ERROR:
                # A failed refresh never replaces a fresh answer (a prefetch fails before the
                # entry expires), nor, with prefer_positive, one still within its stale window.
                stale = self.stale
                keep = old.remaining(now) > 0 or (
                    stale.prefer_positive
                    and stale.mode is not StaleMode.OFF
                    and now - old.expires <= stale.max_stale_s
                )
                if keep:
                    old.failed_at = now
                    self.stats.kept_last_good += 1
                    return old
            entry = Entry(
                key,
                built.message,
                built.question_end,
                built.ttl_offsets,
                built.kind,
                built.rcode,
                now,
                ttl,
                hits=1 if demand else 0,
            )
            if old is not None:
                # The query that led here was recorded by the lookup that found ``old``.
                entry.last_ask, entry.previous_ask = old.last_ask, old.previous_ask
            elif demand:
                entry.last_ask = now
            if entry.size > self._entries.maxsize:
                self.stats.uncacheable += 1
                return None
            self._entries[key] = entry
            self.stats.stores += 1
            self.stats.by_kind[built.kind.value] = self.stats.by_kind.get(built.kind.value, 0) + 1
            if built.kind is not Kind.ERROR:
                due = policy.prefetch_due(now, ttl, self.prefetch)
                if due is not None:
                    heapq.heappush(self._due, (due, next(self._sequence), key, entry))
                    self._compact_due()
            return entry

    def mark_failed(self, key: Key, now: float | None = None) -> None:
        """A refresh of ``key`` failed: start the failure recheck timer (RFC 8767 §5)."""
        if now is None:
            now = self.clock()
        with self._lock:
            entry = self._entries.peek(key)
            if entry is not None:
                entry.failed_at = now

    def recheck_pending(self, entry: Entry, now: float) -> bool:
        """True while a recent failed refresh says: do not ask the upstream again yet."""
        failed_at = entry.failed_at
        return failed_at is not None and now - failed_at < self.stale.recheck_s

    def due_prefetches(self, now: float | None = None) -> list[Refresh]:
        """Entries whose prefetch look is due and that ``policy.should_prefetch`` picks."""
        if now is None:
            now = self.clock()
        picked: list[Refresh] = []
        with self._lock:
            due = self._due
            while due and due[0][0] <= now:
                _when, _seq, key, entry = heapq.heappop(due)
                if self._entries.peek(key) is not entry or entry.remaining(now) <= 0:
                    continue  # replaced, evicted or already expired: nothing to keep warm
                if policy.should_prefetch(
                    entry.hits, entry.last_ask, entry.previous_ask, now, entry.ttl, self.prefetch
                ):
                    self.stats.prefetches += 1
                    picked.append(Refresh(key, entry.question))
        return picked

    def next_due(self) -> float | None:
        """When ``due_prefetches`` next has something to look at."""
        with self._lock:
            return self._due[0][0] if self._due else None

    def _compact_due(self) -> None:
        # Heap items of replaced or evicted entries are skipped lazily; under churn with long
        # TTLs they could pile up, so rebuild from the live entries past twice the entry count.
        if len(self._due) <= 2 * len(self._entries) + 64:
            return
        live = []
        for when, seq, key, entry in self._due:
            if self._entries.peek(key) is entry:
                live.append((when, seq, key, entry))
        heapq.heapify(live)
        self._due = live

    @staticmethod
    def _question_matches(key: Key, built: Built) -> bool:
        question = built.message[wire.HEADER_SIZE : built.question_end]
        name = question[:-4]
        return (
            name.lower() == key.name
            and int.from_bytes(question[-4:-2], "big") == key.qtype
            and int.from_bytes(question[-2:], "big") == key.qclass
        )

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._entries.fast.clear()
            if self._entries.views is not None:
                self._entries.views.clear()
                self._entries.viewed.clear()
            self._due.clear()
