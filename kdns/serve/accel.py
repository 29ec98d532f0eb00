"""Whether the optional C accelerator of the UDP loop (``kdns.serve._fastpath``) is in use.

The extension is built from ``kdns/serve/_fastpath.c`` by ``pip install`` when a C compiler and
the Python headers are present (setup.py marks it optional: a failed build is a warning). It
mirrors ``Responder.answer`` byte for byte for records-table hits and calls ``Responder.answer``
for everything else; the pure-Python loop in ``kdns.serve.udp`` remains the tested fallback.

``KDNS_NO_ACCEL=1`` in the environment turns it off (read once, at import). ``available`` says
whether it is on and ``reason`` says why (for a log line or a benchmark report).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from kdns.serve.protocol import Responder

if TYPE_CHECKING:
    from kdns.serve._fastpath import Counters

DISABLE_ENV = "KDNS_NO_ACCEL"


def _load() -> tuple[bool, str]:
    setting = os.environ.get(DISABLE_ENV, "").strip()
    if setting not in ("", "0"):
        return False, f"disabled by {DISABLE_ENV}={setting}"
    try:
        from kdns.serve import _fastpath
    except ImportError as error:
        return False, f"not built ({error})"
    return True, f"C extension {_fastpath.__file__}"


available, reason = _load()


def serve(
    sock_fd: int, responder: Responder, server: object, counters: Counters
) -> tuple[bytes, tuple[str, int]] | None:
    """Serve ``sock_fd`` from the C loop until ``server._stopping``, counting what it answers
    in ``counters`` (from ``new_counters``), or until its divert flag is set: then None, or a
    datagram (packet, peer) received meanwhile, for the Python loop. Only when ``available``."""
    if not available:
        raise RuntimeError(f"the UDP accelerator is not available: {reason}")
    from kdns.serve import _fastpath

    return _fastpath.serve(sock_fd, responder, server, counters)


def new_counters() -> Counters:
    """The C loop's own counts (``_fastpath.Counters``: kdns.serve.tally's cells)."""
    from kdns.serve import _fastpath

    return _fastpath.Counters()


def read_counters(counters: Counters) -> list[int]:
    """The cells of a ``new_counters`` object, as kdns.serve.tally lays them out."""
    return counters.read()


def responder_of(answer: object) -> Responder | None:
    """The Responder that ``answer`` is the unmodified ``Responder.answer`` of, or None.

    The C loop reproduces ``Responder.answer`` itself, so it may only stand in for that exact
    method: a wrapper, a lambda or a subclass that overrides ``answer`` keeps the Python loop.
    """
    if not available:
        return None
    responder = getattr(answer, "__self__", None)
    if (
        isinstance(responder, Responder)
        and getattr(answer, "__func__", None) is Responder.answer
        and type(responder).answer is Responder.answer
    ):
        return responder
    return None
