"""The step order of one client query, from its bytes to its reply: the one place it is written.

``Front.answer(packet, client, tcp)`` gives reply bytes, None (drop the query), or a ``Later``
that a transport sends from once the upstream answers (the UDP loop never waits on the
network). nodecache's handler calls it for every query (nodecache/handler.py is the transport
glue around it); the C loop serves a part of step 1 itself. The steps, in order:

0. **The search path's memo.** A search-path policy's warm answers (``SearchPath.remembered``:
   local NXDOMAINs and autopath CNAMEs given to the same query bytes from the same client
   within the second), before any parsing.
1. **Cache-hit shortcut.** The common query shapes (one question and nothing else, or one
   question and one EDNS OPT, version 0: what stub resolvers and dig send) are keyed straight
   from the bytes by ``kdns.dns.hotpath.fast_key``, as kdns's ``Responder.answer`` is. If the
   cache holds a fresh entry for that key, the reply is the resolver's own hit (``Cache.lookup``
   + ``Hit.reply``), with no ``screen`` and no ``Resolver.answer`` call: the resolver's
   fresh-hit branch, minus parsing. The reply is a function of the query's bytes other than its
   ID, the entry and the TTL second, so it is memoized on exactly those: most hits are one
   ``lookup`` (which keeps the hit counts, ask times and LRU order prefetch relies on) and one
   concatenation of the ID and the memo.
   Why this is safe: a cache key is only ever made from a query that passed ``screen`` (class
   IN, not AXFR/IXFR, a well-formed name), and the shortcut's key is the first zero byte's
   prefix of the question, so an equal key means the same well-formed name (the argument in
   kdns.serve.protocol's docstring). A search-path policy must see some queries before the
   cache (``kdns.resolver.core`` step 1): ``may_shortcut`` says which hits may still be served
   here (everything outside the cluster zones, and cluster-zone names that exist).
   **In C.** With ``views`` on (nodecache's UDP loop is kdns's C loop, kdns.serve.accel), a
   UDP shortcut hit installs a view of its entry (``Cache.install_view``) and C serves the
   later hits of that shape itself, TTLs set to the seconds left (tests/unit/test_cache_views.py
   holds the bytes equal to ``Hit.reply``); the cache absorbs C's counts into the entries
   (``Resolver.absorb_hits``). C does not ask the policy, so the policy tells the cache when
   ``may_shortcut`` turns false for a name (``watch_claims``: an autopath decision now covers
   it) and the cache drops that name's views (``Cache.drop_views``).
2. **Screen.** ``kdns.dns.query.screen``: the bad-input rules kdns uses (drop responses and
   runts; FORMERR, NOTIMP, BADVERS; REFUSED for AXFR/IXFR and non-IN classes).
3. **Local answers.** ``local(query)``: the caller's own names (nodecache's liveness probe).
4. **Resolve.** ``Resolver.answer(query, done, client, tcp=...)``: the policy's decision, the
   cache, the upstream (kdns.resolver.core); bytes now, or later through ``done``. Queries
   waiting on an upstream are counted (``inflight``) so a draining server can wait for them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from kdns.dns.hotpath import DO, EDNS, fast_key, udp_limit
from kdns.dns.query import ClientQuery, screen
from kdns.dns.reader import Edns, Question, parse_question
from kdns.resolver import message
from kdns.resolver.cache import Entry, Hit, Key
from kdns.resolver.core import ClientAddress, Resolver
from kdns.resolver.later import Later
from kdns.resolver.message import Kind

MAX_REMEMBERED = 4096
"""Reply memos kept per transport; each holds its entry alive until the memo is cleared, so
this bounds that memory (a few MB at most) outside the cache's own byte bound."""

Reply = bytes | Later | None
LocalAnswer = Callable[[ClientQuery], bytes | None]


@runtime_checkable
class Claims(Protocol):
    """A search-path policy that says which cache hits it must see (``SearchPath``)."""

    def may_shortcut(self, name: bytes, kind: Kind) -> bool: ...

    def watch_claims(self, claimed: Callable[[bytes], None]) -> None: ...

    def remembered(self, packet: bytes, client_ip: str) -> bytes | None: ...


class _Memo(NamedTuple):
    """The reply to one query shape (its bytes minus the ID) from one entry at one TTL."""

    key: Key
    entry: Entry
    ttl: int
    reply: bytes
    """Without its 2-byte ID."""


class _HitQuery:
    """A screened query's shape (``ClientQuery``) for a shortcut hit: what ``Hit.reply``,
    ``size_limit`` and ``truncated_reply`` read. A plain slotted class, because building the
    frozen ``kdns.dns.query.Query`` costs about a microsecond, a tenth of the whole hit."""

    __slots__ = ("edns", "flags", "max_udp_size", "packet", "question")

    def __init__(
        self, packet: bytes, question: Question, edns: Edns | None, flags: int, max_udp_size: int
    ) -> None:
        self.packet = packet
        self.question = question
        self.edns = edns
        self.flags = flags
        self.max_udp_size = max_udp_size


@dataclass(slots=True)
class FrontStats:
    """What never reaches ``Resolver.answer``, and the shortcut (monotonic counters)."""

    fast_hits: int = 0
    """Cache hits answered by the shortcut (in Python; C's are the cache's ``view_hits``)."""
    remembered: int = 0
    """Search-path answers served from the policy's memo before any parsing."""
    dropped: int = 0
    """Queries dropped by ``screen`` (responses, runts)."""
    rejected: int = 0
    """Queries answered with an error by ``screen`` (FORMERR, NOTIMP, BADVERS, REFUSED)."""
    local: int = 0
    """Queries ``local`` answered."""


class Front:
    """Thread-safe: the UDP threads and the TCP loop call ``answer`` at once."""

    def __init__(
        self,
        resolver: Resolver,
        max_udp_size: int = 1232,
        *,
        stats: FrontStats | None = None,
        local: LocalAnswer | None = None,
    ) -> None:
        self.resolver = resolver
        self.max_udp_size = max_udp_size
        self.stats = stats if stats is not None else FrontStats()
        self.local = local
        self.views = False
        """Install views of shortcut hits for the C loop (set when one serves the cache)."""
        # Fixed for the resolver's life (a reload swaps routes, not these).
        self._cache = resolver.cache
        self._resolver_stats = resolver.stats
        policy = resolver.policy
        self._policy: Claims | None = policy if isinstance(policy, Claims) else None
        if self._policy is not None:
            self._policy.watch_claims(self._cache.drop_views)
        # Per transport (UDP, TCP: truncation differs): a query's bytes minus its ID -> the
        # reply minus its ID for the entry and TTL second it was built for.
        self._memos: tuple[dict[bytes, _Memo], dict[bytes, _Memo]] = ({}, {})
        self._inflight = 0
        self._idle = threading.Condition()

    def answer(self, packet: bytes, client: ClientAddress, tcp: bool) -> Reply:
        """Steps 0-4 for one query from ``client``."""
        reply = self._remembered(packet, client) or self._cached(packet, tcp)
        if reply is not None:
            return reply
        return self._resolve(packet, client, tcp)

    # --- 0 and 1: the search path's memo, the cache-hit shortcut --------------------------------

    def _remembered(self, packet: bytes, client: ClientAddress) -> bytes | None:
        policy = self._policy
        if policy is None:
            return None
        reply = policy.remembered(packet, client[0])
        if reply is not None:
            stats = self._resolver_stats
            stats.queries += 1
            stats.policy_answers += 1
            self.stats.remembered += 1
        return reply

    def _cached(self, packet: bytes, tcp: bool) -> bytes | None:
        """A fresh hit's reply, or None to take the full path. No side effect on a None."""
        body = packet[2:]  # everything but the ID decides the reply
        memos = self._memos[tcp]
        memo = memos.get(body)
        key = memo.key if memo is not None else self._key(packet)
        if key is None:
            return None
        cache = self._cache
        now = cache.clock()
        # Peek first: lookup() counts a miss and stamps the ask times, which the full path's
        # own lookup must do exactly once.
        entry = cache.peek(key)
        if entry is None or entry.ttl - int(now - entry.stored_at) <= 0:
            return None
        policy = self._policy
        if policy is not None and not policy.may_shortcut(key.name, entry.kind):
            return None  # the search-path policy must see it before the cache
        hit = cache.lookup(key, now)
        if hit is None or hit.stale:  # evicted or replaced between the two reads: full path
            return None
        stats = self._resolver_stats
        stats.queries += 1
        stats.hits += 1
        self.stats.fast_hits += 1
        if memo is not None and hit.entry is memo.entry and hit.ttl == memo.ttl:
            return packet[:2] + memo.reply
        reply = self._hit_reply(packet, hit, tcp)
        if len(memos) >= MAX_REMEMBERED:
            memos.clear()  # crude but bounded; refills with what is asked now
        memos[body] = _Memo(key, hit.entry, hit.ttl, reply[2:])
        if self.views and not tcp:  # may_shortcut said yes above, and says when that changes
            cache.install_view(key, hit.entry)
        return reply

    def _key(self, packet: bytes) -> Key | None:
        """The cache key of a query of a hot-path shape (``kdns.dns.hotpath.fast_key``), read
        from its bytes; None for any other shape. (Validity beyond the shape comes from the
        key matching an entry.)"""
        fast = fast_key(packet)
        if fast is None:
            return None
        key, _, variant = fast
        name = key[:-4]
        qtype = (key[-4] << 8) | key[-3]
        qclass = (key[-2] << 8) | key[-1]
        return tuple.__new__(Key, (name, qtype, qclass, bool(variant & DO), bool(variant & 2)))

    def _hit_reply(self, packet: bytes, hit: Hit, tcp: bool) -> bytes:
        """``Hit.reply`` for a shortcut query, fitted to the client's size limit
        (``kdns.dns.hotpath.udp_limit``, what ``Resolver.answer`` fits it to). Its question
        parses: its key matched an entry."""
        question = parse_question(packet)
        qend = question.end
        edns = None
        variant = 0
        if len(packet) > qend:  # the one OPT the shape allows
            do_bit = bool(packet[qend + 7] & 0x80)
            variant = EDNS
            edns = Edns((packet[qend + 3] << 8) | packet[qend + 4], 0, do_bit)
        query = _HitQuery(packet, question, edns, (packet[2] << 8) | packet[3], self.max_udp_size)
        reply = hit.reply(query)
        if tcp or len(reply) <= udp_limit(packet, qend, variant, self.max_udp_size):
            return reply
        return message.truncated_reply(reply, qend, message.reply_opt(query))

    # --- 2, 3 and 4: screen, local answers, the resolver ---------------------------------------

    def _resolve(self, packet: bytes, client: ClientAddress, tcp: bool) -> Reply:
        screened = screen(packet, self.max_udp_size)
        if screened is None:
            self.stats.dropped += 1
            return None
        if isinstance(screened, bytes):
            self.stats.rejected += 1
            return screened
        query = screened
        if self.local is not None:
            local = self.local(query)
            if local is not None:
                self.stats.local += 1
                return local
        later = Later()
        with self._idle:
            self._inflight += 1
        settled = False

        def settle() -> None:
            nonlocal settled
            with self._idle:
                if not settled:  # once, whichever of the paths below gets here first
                    settled = True
                    self._inflight -= 1
                    self._idle.notify_all()

        def done(reply: bytes | None) -> None:
            if reply is not None:  # None: dropped after waiting too long; send nothing
                later.done(reply)
            settle()

        try:
            immediate = self.resolver.answer(query, done, client, tcp=tcp)
        except Exception:
            settle()
            raise
        if immediate is not None:
            settle()
            return immediate
        return later

    # --- queries in flight -----------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Queries waiting for an upstream reply."""
        return self._inflight

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no query is in flight (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._inflight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True
