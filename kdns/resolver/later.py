"""``Later``: the bridge from the resolver's ``done(reply)`` callback to a transport's Deferred.

The resolver answers a query that needs an upstream by calling ``done(reply)`` from a pool or
timer thread; a transport (kdns.serve.reply's contract) calls a Deferred with its ``send``
function. Whichever comes first waits for the other, so a reply that is ready before the
transport asks for it is not lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Send = Callable[[bytes], None]


class Later:
    """A Deferred (``later(send)``) fed by ``later.done(reply)``, from any thread."""

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
