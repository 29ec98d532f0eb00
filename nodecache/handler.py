"""The per-query path of nodecache: client bytes in, reply bytes, a Deferred or None out.

``QueryHandler.udp`` and ``.tcp`` are the peer-aware handlers that ``kdns.serve.udp.UDPServer``
and ``kdns.serve.tcp.TCPServer`` call. For each query:

1. **Cache-hit shortcut.** The common query shapes (one question and nothing else, or one
   question and one EDNS OPT, version 0: what stub resolvers and dig send) are keyed straight
   from the bytes by ``kdns.serve.hotpath.fast_key``, as kdns's ``Responder.answer`` is. If the
   cache holds a fresh entry for that key, the reply is the resolver's own hit (``Cache.lookup``
   + ``Hit.reply``), with no ``screen`` and no ``Resolver.answer`` call: the resolver's
   fresh-hit branch, minus parsing.
   The reply is a function of the query's bytes other than its ID, the entry and the TTL second,
   so it is memoized on exactly those: most hits are one ``lookup`` (which keeps the hit counts,
   ask times and LRU order prefetch relies on) and one concatenation of the ID and the memo.
   **In C.** With the accelerator built (kdns.serve.accel), the UDP loop is kdns's C loop
   (``fast_path``): after the first Python shortcut hit of an entry it installs a view of it
   (``Cache.install_view``), and C serves the later hits of that query shape itself, with the
   TTLs set to the seconds left (``Hit.reply``'s bytes, tests/unit/test_cache_views.py), and
   counts them in the view; the cache absorbs those counts into the entry
   (``Resolver.absorb_hits``, before each prefetch pass and each /metrics render). Views are
   only installed for names whose shortcut never depends on the search-path policy's state
   (``always_shortcut``: outside the cluster zones), and drain() withdraws them all.
   Why this is safe: a cache key is only ever made from a query that passed ``screen`` (class IN,
   not AXFR/IXFR, a well-formed name), and the shortcut's key is the first zero byte's prefix of
   the question, so an equal key means the same well-formed name (the argument in
   kdns.serve.protocol's docstring). Everything else (a miss, a stale entry, any other shape)
   takes step 2. A search-path policy (``nodecache.searchpath``) must see some queries before
   the cache (kdns.resolver.core step 1): ``may_shortcut`` says which hits may still be served
   here (everything outside the cluster zones, and cluster-zone names that exist). Before
   it, ``SearchPath.remembered`` serves the policy's own warm answers (local NXDOMAINs and
   autopath CNAMEs given to the same query bytes from the same client within the second).
2. **Screen.** ``kdns.serve.protocol.screen``: the bad-input rules kdns uses (drop responses
   and runts; FORMERR, NOTIMP, BADVERS; REFUSED for AXFR/IXFR and non-IN classes).
3. **Resolve.** ``Resolver.answer(query, done, client, tcp=...)``: bytes now, or a ``Later`` the
   transport sends from when the upstream answers (the UDP loop never waits on the network).

The liveness probe's question (``dns-version.nodecache.invalid. TXT``, kdns.health.probe_udp)
is answered here, locally, so ``/health`` proves the serving loop turns, whatever the upstreams
do. ``.invalid`` never resolves (RFC 6761 §6.4), so no real name is shadowed.

Draining (SIGTERM): ``drain()`` makes both handlers drop new queries while queries already
waiting on an upstream still get their replies; ``wait_idle`` waits for those.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol, runtime_checkable

from kdns import dns as wire  # the wire package, under the name this module reads it by
from kdns.dns.edns import opt_record
from kdns.dns.query import screen
from kdns.health import probe_query
from kdns.resolver import message
from kdns.resolver.cache import Entry, Hit, Key
from kdns.resolver.core import Resolver
from kdns.resolver.message import Kind
from kdns.serve import accel
from kdns.serve.hotpath import DO, EDNS, fast_key, udp_limit
from kdns.serve.reply import Later, Peer, Reply

logger = logging.getLogger(__name__)

PROBE_ZONE: Final = ("nodecache", "invalid")
"""The zone of the liveness probe's question (``dns-version.nodecache.invalid.``)."""
_PROBE_NAME: Final = probe_query(PROBE_ZONE, 0)[wire.HEADER_SIZE : -4]
"""The probe's name on the wire, lower case (the question minus TXT, IN)."""

_MAX_REMEMBERED: Final = 4096
"""Reply memos kept per transport; each holds its entry alive until the memo is cleared, so
this bounds that memory (a few MB at most) outside the cache's own byte bound."""


@runtime_checkable
class _Claims(Protocol):
    """A search-path policy that says which cache hits it must see (``SearchPath``)."""

    def may_shortcut(self, name: bytes, kind: Kind) -> bool: ...

    def always_shortcut(self, name: bytes) -> bool: ...

    def remembered(self, packet: bytes, client_ip: str) -> bytes | None: ...


class _Memo(NamedTuple):
    """The reply to one query shape (its bytes minus the ID) from one entry at one TTL."""

    key: Key
    entry: Entry
    ttl: int
    reply: bytes
    """Without its 2-byte ID."""


class _HitQuery:
    """A screened query's shape (``kdns.resolver.message.ClientQuery``) for a shortcut hit:
    what ``Hit.reply``, ``size_limit`` and ``truncated_reply`` read. A plain slotted class,
    because building the frozen ``kdns.serve.protocol.Query`` costs about a microsecond, a
    tenth of the whole hit."""

    __slots__ = ("edns", "flags", "max_udp_size", "packet", "question")

    def __init__(
        self,
        packet: bytes,
        question: wire.Question,
        edns: wire.Edns | None,
        flags: int,
        max_udp_size: int,
    ) -> None:
        self.packet = packet
        self.question = question
        self.edns = edns
        self.flags = flags
        self.max_udp_size = max_udp_size


@dataclass(slots=True)
class HandlerStats:
    """Counters of what never reaches the resolver, and of the shortcut (monotonic)."""

    fast_hits: int = 0
    """Cache hits answered by the shortcut."""
    remembered: int = 0
    """Search-path answers served from the policy's memo before any parsing."""
    dropped: int = 0
    """Queries dropped by ``screen`` (responses, runts)."""
    rejected: int = 0
    """Queries answered with an error by ``screen`` (FORMERR, NOTIMP, BADVERS, REFUSED)."""
    drained: int = 0
    """Queries dropped because we are shutting down."""
    probes: int = 0
    """Liveness probes answered."""
    internal_errors: int = 0
    """Queries dropped by an internal error (coredns_panics_total)."""


class QueryHandler:
    """Thread-safe: the UDP threads and the TCP loop call it at once."""

    def __init__(self, resolver: Resolver, max_udp_size: int = 1232) -> None:
        self.resolver = resolver
        self.max_udp_size = max_udp_size
        self.stats = HandlerStats()
        # Fixed for the resolver's life (a reload swaps routes and policies, not these).
        self._cache = resolver.cache
        self._resolver_stats = resolver.stats
        policy = resolver.policy
        self._policy: _Claims | None = policy if isinstance(policy, _Claims) else None
        self.draining = False
        self._inflight = 0
        self._idle = threading.Condition()
        # Per transport (UDP, TCP: truncation differs): a query's bytes minus its ID -> the
        # reply minus its ID for the entry and TTL second it was built for.
        self._memos: tuple[dict[bytes, _Memo], dict[bytes, _Memo]] = ({}, {})
        opts = (
            opt_record(max_udp_size, False),
            opt_record(max_udp_size, True),
        )
        self.fast_path = accel.cache_fast_path(
            self._cache, opts, max_udp_size, self.udp, self._count_error
        )
        """The C loop's contract (UDP), or None: the accelerator is off, or the cache's clock
        is not C's (a test's injected clock)."""

    @property
    def shortcut_hits(self) -> int:
        """Cache hits answered without the full path, by this handler or by the C loop."""
        return self.stats.fast_hits + self._cache.stats.view_hits

    def _count_error(self) -> None:
        self.stats.internal_errors += 1

    # --- transports' entry points ---------------------------------------------------------------

    def udp(self, packet: bytes, peer: Peer) -> Reply:
        """The UDP loop's handler (the hot path: the shortcut is tried inline)."""
        if self.draining:
            self.stats.drained += 1
            return None
        try:
            reply = self._remembered(packet, peer) or self._cached(packet, False)
            if reply is not None:
                return reply
            return self._resolve(packet, peer, False)
        except Exception:
            self.stats.internal_errors += 1
            logger.exception("internal error answering a query; dropped")
            return None

    def tcp(self, packet: bytes, peer: Peer) -> Reply:
        """The TCP server's handler: the same path, without a size limit."""
        if self.draining:
            self.stats.drained += 1
            return None
        try:
            reply = self._remembered(packet, peer) or self._cached(packet, True)
            if reply is not None:
                return reply
            return self._resolve(packet, peer, True)
        except Exception:
            self.stats.internal_errors += 1
            logger.exception("internal error answering a query; dropped")
            return None

    # --- 0 and 1: the search path's memo, the cache-hit shortcut --------------------------------

    def _remembered(self, packet: bytes, peer: Peer) -> bytes | None:
        """A warm search-path answer (local NXDOMAIN, autopath CNAME) the policy gave this exact
        query from this client within the second (``SearchPath.remembered``)."""
        policy = self._policy
        if policy is None:
            return None
        reply = policy.remembered(packet, peer[0])
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
        if len(memos) >= _MAX_REMEMBERED:
            memos.clear()  # crude but bounded; refills with what is asked now
        memos[body] = _Memo(key, hit.entry, hit.ttl, reply[2:])
        if (
            not tcp
            and self.fast_path is not None
            and (policy is None or policy.always_shortcut(key.name))
        ):
            self._cache.install_view(key, hit.entry)
        return reply

    def _key(self, packet: bytes) -> Key | None:
        """The cache key of a query of a hot-path shape (``kdns.serve.hotpath.fast_key``),
        read from its bytes; None for any other shape. (Validity beyond the shape comes from
        the key matching an entry.)"""
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
        (``kdns.serve.hotpath.udp_limit``, what ``Resolver.answer`` fits it to). Its question
        parses: its key matched an entry."""
        question = wire.parse_question(packet)
        qend = question.end
        edns = None
        variant = 0
        if len(packet) > qend:  # the one OPT the shape allows
            do_bit = bool(packet[qend + 7] & 0x80)
            variant = EDNS
            edns = wire.Edns((packet[qend + 3] << 8) | packet[qend + 4], 0, do_bit)
        query = _HitQuery(packet, question, edns, (packet[2] << 8) | packet[3], self.max_udp_size)
        reply = hit.reply(query)
        if tcp or len(reply) <= udp_limit(packet, qend, variant, self.max_udp_size):
            return reply
        return message.truncated_reply(reply, qend, message.reply_opt(query))

    # --- 2 and 3: screen, then the resolver ----------------------------------------------------

    def _resolve(self, packet: bytes, peer: Peer, tcp: bool) -> Reply:
        screened = screen(packet, self.max_udp_size)
        if screened is None:
            self.stats.dropped += 1
            return None
        if isinstance(screened, bytes):
            self.stats.rejected += 1
            return screened
        query = screened
        question = query.question
        if question.wire_lower == _PROBE_NAME and question.qtype == wire.TXT:
            self.stats.probes += 1
            return message.error_reply(query, wire.NXDOMAIN)
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
            immediate = self.resolver.answer(query, done, (peer[0], peer[1]), tcp=tcp)
        except Exception:
            settle()
            raise
        if immediate is not None:
            settle()
            return immediate
        return later

    # --- draining ------------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Queries waiting for an upstream reply."""
        return self._inflight

    def drain(self) -> None:
        """Stop taking new queries; queries in flight still get their replies."""
        self.draining = True
        if self.fast_path is not None:
            self.fast_path.answers.publish_cache(None, None)  # C hits would bypass the drop

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
