"""The contract between a protocol handler and the transports that carry its replies.

A handler takes query bytes and returns reply bytes, None (drop), a ``Stream`` (TCP only: several
messages, a zone transfer), or a ``Deferred``: a callable the transport calls with a ``send``
function, for answers that need an upstream round trip (forwarding, cache misses). The handler
must call ``send`` exactly once, from any thread, or never (the transport then times the query
out). This keeps the blocking UDP loop from ever waiting on the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from kdns.resolver.later import Later as Later  # the resolver's bridge, the transports' Deferred

Send = Callable[[bytes], None]


class Deferred(Protocol):
    def __call__(self, send: Send) -> None: ...


Reply = bytes | Deferred | None
Handler = Callable[[bytes], Reply]
Peer = tuple[str, int]
PeerHandler = Callable[[bytes, Peer], Reply]
"""A handler that also wants the client's address (nodecache's search-path policy does)."""
Stream = Iterator[bytes]
"""Several messages answering one query, in order (a zone transfer): TCP only. The transport
takes them one at a time, yields to other clients between them, and calls ``close()`` on the
stream (when it has one) however the sending ends."""
TCPReply = Reply | Stream
TCPHandler = Callable[[bytes], TCPReply]
TCPPeerHandler = Callable[[bytes, Peer], TCPReply]
