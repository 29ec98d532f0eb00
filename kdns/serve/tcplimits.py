"""TCP connection limits and their bookkeeping: who is admitted, who is evicted, who is closed.

``TCPLimits`` holds the knobs (kdns and nodecache both build one from their config);
``ConnectionTable`` keeps the open connections in least-recently-active order with their client
address and the bytes each holds, and decides. It is pure bookkeeping, generic over the
connection objects, with no sockets, event loop or clock, so the transport (``kdns.serve.tcp``)
does the I/O and these rules can be read, and tested, on their own:

* A client address past ``max_per_client`` is refused (its new connection is closed), as
  unbound's ``tcp-connection-limit`` does.
* At ``max_connections`` the longest-idle connection is evicted to make room for the new one
  (RFC 7766 §6.2.3; unbound's ``incoming-num-tcp`` shortens idle timeouts under the same
  pressure), so a client that holds many idle connections cannot lock out everyone else.
* When the bytes held by all connections together (unread query bytes, replies waiting their
  turn and replies queued to the kernel) exceed ``max_buffer_bytes``, the largest holders are
  closed until the total is under 7/8 of the bound.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

MAX_FRAME: Final = 2 + 65535
"""One length-prefixed DNS message at its largest."""
READ_AHEAD_BYTES: Final = 4096
"""Query bytes read ahead per connection beyond the message being completed: a pipelined burst
of ~100 queries; more waits in the kernel until the connection catches up."""
MAX_PIPELINED: Final = 16
"""Queries of one connection being answered at once (replies still go out in query order)."""


@dataclass(frozen=True, slots=True)
class TCPLimits:
    """Per-server TCP limits. A ValueError's message starts with the field's name."""

    max_connections: int = 1024
    """Open connections, all clients together; at the cap the longest-idle one is evicted."""
    max_per_client: int = 64
    """Open connections from one client address; more are refused."""
    idle_timeout_s: float = 10.0
    """A connection with no complete query received and no reply sent for this long is closed."""
    write_timeout_s: float = 5.0
    """A connection whose queued replies make no progress towards the client for this long is
    closed (the client is not reading)."""
    max_queued_bytes: int = 16 * 1024
    """Reply bytes queued for one connection beyond what the kernel took; past it the
    connection answers nothing more until the client reads."""
    max_buffer_bytes: int = 8 * 1024 * 1024
    """Bytes held by all connections together; past it the largest holders are closed."""
    socket_buffer_bytes: int = 32 * 1024
    """SO_SNDBUF and SO_RCVBUF of every connection (Linux doubles it for its bookkeeping).
    Fixed, so the kernel's autotuning cannot grow a non-reading client's send buffer to
    ``tcp_wmem``'s 4 MiB, nor our receive queue of its unread queries."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_connections <= 1_000_000:
            raise ValueError(f"max_connections must be 1-1000000, got {self.max_connections}")
        if not 1 <= self.max_per_client <= self.max_connections:
            raise ValueError(
                f"max_per_client must be 1-max_connections ({self.max_connections}), "
                f"got {self.max_per_client}"
            )
        for name in ("idle_timeout_s", "write_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 1024 <= self.max_queued_bytes <= 16 * 1024 * 1024:
            raise ValueError(f"max_queued_bytes must be 1024-16777216, got {self.max_queued_bytes}")
        if not 4096 <= self.socket_buffer_bytes <= 4 * 1024 * 1024:
            raise ValueError(
                f"socket_buffer_bytes must be 4096-4194304, got {self.socket_buffer_bytes}"
            )
        floor = self.per_connection_bytes
        if self.max_buffer_bytes < floor:
            raise ValueError(
                f"max_buffer_bytes must be at least one connection's bound ({floor}: "
                f"max_queued_bytes + one reply + read-ahead), got {self.max_buffer_bytes}"
            )

    @property
    def per_connection_bytes(self) -> int:
        """What one connection that stops reading holds at most: its queued replies up to the
        mark plus the reply that crossed it, and the query bytes read ahead. (Replies answered
        out of turn behind a slow deferred one add to this; the global bound covers them.)"""
        return self.max_queued_bytes + MAX_FRAME + READ_AHEAD_BYTES


C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Admission(Generic[C]):
    """What to do with a new connection: refuse it, or admit it after closing ``evict``."""

    admitted: bool
    evict: C | None = None


class ConnectionTable(Generic[C]):
    """The open connections, least recently active first, with the bytes each last reported."""

    def __init__(self, limits: TCPLimits) -> None:
        self.limits = limits
        self._order: OrderedDict[C, str] = OrderedDict()
        self._per_client: dict[str, int] = {}
        self._held: dict[C, int] = {}
        self.held_bytes = 0
        """The sum of the last reported figures: an upper bound until ``report`` refreshes them
        (a transport flushes without telling us)."""

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[C]:
        return iter(list(self._order))

    def client_count(self, client: str) -> int:
        return self._per_client.get(client, 0)

    def admit(self, conn: C, client: str) -> Admission[C]:
        """Record ``conn`` from ``client`` unless that client is at its limit; at the global cap
        the longest-idle other connection is named for eviction (and forgotten here)."""
        if self._per_client.get(client, 0) >= self.limits.max_per_client:
            return Admission(admitted=False)
        evict = None
        if len(self._order) >= self.limits.max_connections:
            evict = next(iter(self._order))
            self.remove(evict)
        self._order[conn] = client
        self._per_client[client] = self._per_client.get(client, 0) + 1
        self._held[conn] = 0
        return Admission(admitted=True, evict=evict)

    def touch(self, conn: C) -> None:
        """``conn`` received a query or sent a reply: it is the most recently active."""
        if conn in self._order:
            self._order.move_to_end(conn)

    def report(self, conn: C, held: int) -> bool:
        """Record the bytes ``conn`` holds now; whether all together exceed the bound."""
        previous = self._held.get(conn)
        if previous is not None:
            self._held[conn] = held
            self.held_bytes += held - previous
        return self.held_bytes > self.limits.max_buffer_bytes

    def over_budget(self) -> bool:
        return self.held_bytes > self.limits.max_buffer_bytes

    def relieved(self) -> bool:
        """Under 7/8 of the bound: where closing the largest holders stops, so that a server at
        the bound does not re-measure every connection on each read."""
        return self.held_bytes <= self.limits.max_buffer_bytes * 7 // 8

    def largest(self) -> C | None:
        """The connection holding the most bytes (closed first when over the bound)."""
        if not self._held:
            return None
        return max(self._held, key=self._held.__getitem__)

    def remove(self, conn: C) -> None:
        client = self._order.pop(conn, None)
        if client is None:
            return
        left = self._per_client[client] - 1
        if left:
            self._per_client[client] = left
        else:
            del self._per_client[client]
        self.held_bytes -= self._held.pop(conn)
