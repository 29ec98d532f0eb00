"""nodecache's per-query glue: the transports' handlers around the resolver's front door.

``QueryHandler.udp`` and ``.tcp`` are the peer-aware handlers that ``kdns.serve.udp.UDPServer``
and ``kdns.serve.tcp.TCPServer`` call. The step order of a query (the search path's memo, the
cache-hit shortcut, screen, the resolver) is ``kdns.resolver.front.Front``'s; this module adds
what belongs to a node cache's transports:

* **Draining** (SIGTERM): ``drain()`` makes both handlers drop new queries while queries already
  waiting on an upstream still get their replies; ``wait_idle`` waits for those.
* **The liveness probe**: its question (``dns-version.nodecache.invalid. TXT``,
  kdns.health.probe_udp) is answered here (``Front``'s local step), so ``/health`` proves the
  serving loop turns, whatever the upstreams do. ``.invalid`` never resolves (RFC 6761 §6.4),
  so no real name is shadowed.
* **The C loop's contract** (``fast_path``, kdns.serve.accel): with the accelerator built and
  the cache on ``time.monotonic``, UDP is served by kdns's C loop, which answers fresh cache hits
  from the cache's views itself and calls ``udp`` for the rest.
* **Internal errors**: a query whose handling raises is dropped, logged and counted
  (``coredns_panics_total``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from kdns import dns as wire  # the wire package, under the name this module reads it by
from kdns.dns.edns import hot_path_opts
from kdns.dns.query import ClientQuery
from kdns.health import probe_query
from kdns.resolver import message
from kdns.resolver.core import Resolver
from kdns.resolver.front import Front, FrontStats
from kdns.serve import accel
from kdns.serve.reply import Peer, Reply

logger = logging.getLogger(__name__)

PROBE_ZONE: Final = ("nodecache", "invalid")
"""The zone of the liveness probe's question (``dns-version.nodecache.invalid.``)."""
_PROBE_NAME: Final = probe_query(PROBE_ZONE, 0)[wire.HEADER_SIZE : -4]
"""The probe's name on the wire, lower case (the question minus TXT, IN)."""


@dataclass(slots=True)
class HandlerStats(FrontStats):
    """The front's counters (``FrontStats``: ``local`` counts liveness probes) and the glue's."""

    drained: int = 0
    """Queries dropped because we are shutting down."""
    internal_errors: int = 0
    """Queries dropped by an internal error (coredns_panics_total)."""

    @property
    def probes(self) -> int:
        """Liveness probes answered."""
        return self.local


class QueryHandler:
    """Thread-safe: the UDP threads and the TCP loop call it at once."""

    def __init__(self, resolver: Resolver, max_udp_size: int = 1232) -> None:
        self.resolver = resolver
        self.max_udp_size = max_udp_size
        self.stats = HandlerStats()
        self.front = Front(resolver, max_udp_size, stats=self.stats, local=_probe_reply)
        self.draining = False
        self.fast_path = accel.cache_fast_path(
            resolver.cache, hot_path_opts(max_udp_size), max_udp_size, self.udp, self._count_error
        )
        """The C loop's contract (UDP), or None: the accelerator is off, or the cache's clock
        is not C's (a test's injected clock)."""
        self.front.views = self.fast_path is not None

    @property
    def shortcut_hits(self) -> int:
        """Cache hits answered without the full path, by the front or by the C loop."""
        return self.stats.fast_hits + self.resolver.cache.stats.view_hits

    def _count_error(self) -> None:
        self.stats.internal_errors += 1

    # --- transports' entry points ---------------------------------------------------------------

    def udp(self, packet: bytes, peer: Peer) -> Reply:
        """The UDP loop's handler (and the C loop's fallback)."""
        return self._answer(packet, peer, False)

    def tcp(self, packet: bytes, peer: Peer) -> Reply:
        """The TCP server's handler: the same path, without a size limit."""
        return self._answer(packet, peer, True)

    def _answer(self, packet: bytes, peer: Peer, tcp: bool) -> Reply:
        if self.draining:
            self.stats.drained += 1
            return None
        try:
            return self.front.answer(packet, (peer[0], peer[1]), tcp)
        except Exception:
            self.stats.internal_errors += 1
            logger.exception("internal error answering a query; dropped")
            return None

    # --- draining ------------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Queries waiting for an upstream reply."""
        return self.front.inflight

    def drain(self) -> None:
        """Stop taking new queries; queries in flight still get their replies."""
        self.draining = True
        if self.fast_path is not None:
            self.fast_path.answers.publish_cache(None, None)  # C hits would bypass the drop

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no query is in flight (True) or ``timeout_s`` passes (False)."""
        return self.front.wait_idle(timeout_s)


def _probe_reply(query: ClientQuery) -> bytes | None:
    """The liveness probe's answer (NXDOMAIN, from this process), else None."""
    question = query.question
    if question.wire_lower == _PROBE_NAME and question.qtype == wire.TXT:
        return message.error_reply(query, wire.NXDOMAIN)
    return None
