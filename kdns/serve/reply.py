"""The contract between a protocol handler and the transports that carry its replies.

A handler takes query bytes and returns reply bytes, None (drop), a ``Stream`` (TCP only: several
messages, a zone transfer), or a ``Deferred``: a callable the transport calls with a ``send``
function, for answers that need an upstream round trip (forwarding, cache misses). The handler
must call ``send`` exactly once, from any thread, or never (the transport then times the query
out). This keeps the blocking UDP loop from ever waiting on the network.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Protocol

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


class Later:
    """Bridges a producer that calls ``done(reply)`` from any thread to a ``Deferred``.

    Whichever comes first, the reply or the transport's ``send``, waits for the other, so a
    reply that is ready before the transport asks for it is not lost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reply: bytes | None = None
        self._send: Send | None = None

    def done(self, reply: bytes) -> None:
        with self._lock:
            send = self._send
            if send is None:
                self._reply = reply
                return
        send(reply)

    def __call__(self, send: Send) -> None:
        with self._lock:
            reply = self._reply
            if reply is None:
                self._send = send
                return
        send(reply)
