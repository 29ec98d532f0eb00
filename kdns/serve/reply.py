"""The contract between a protocol handler and the transports that carry its replies.

A handler takes query bytes and returns reply bytes, None (drop), or a ``Deferred``: a callable
the transport calls with a ``send`` function, for answers that need an upstream round trip
(forwarding, cache misses). The handler must call ``send`` exactly once, from any thread, or
never (the transport then times the query out). This keeps the blocking UDP loop from ever
waiting on the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Send = Callable[[bytes], None]


class Deferred(Protocol):
    def __call__(self, send: Send) -> None: ...


Reply = bytes | Deferred | None
Handler = Callable[[bytes], Reply]
