"""The optional C accelerator of the UDP loop (``kdns.serve._fastpath``): whether it is on, and
the contract objects it is given instead of reading anyone's attributes.

The extension is built from ``kdns/serve/_fastpath.c`` by ``pip install`` when a C compiler and
the Python headers are present (setup.py marks it optional: a failed build is a warning). It
mirrors kdns.dns.hotpath and ``Responder.answer`` byte for byte for hits in a table's
``records`` and memo, and calls the Python handler for everything else; the pure-Python loop in
``kdns.serve.udp`` remains the tested fallback.

The contract, explicit at construction (nothing is found by attribute name or method identity):

* ``FastPath`` (one per Responder, ``Responder.fast_path``): the C ``Answers`` (the published
  table's ``records`` and ``memo.entries`` dicts, the two OPT variants, the size ceiling), the
  Python handler for what C does not answer, and how C counts an internal error.
* ``Loop`` (one per serving loop, ``FastPath.loop``): that, plus the stop flag, the divert flag
  (the query log), the per-query cells of kdns.serve.tally and ``answered`` (replies C built).
* nodecache's handler (``cache_fast_path``): ``Answers`` with no table but the resolver cache's
  views (``Cache.enable_views``, made by ``cache_view``) and its hit log; C serves a fresh
  view's hit with the TTLs set to the seconds left, as ``Hit.reply`` does, and calls the
  handler with the peer (``fallback(packet, peer)``) for everything else.

``KDNS_NO_ACCEL=1`` in the environment turns it off (read once, at import). ``available`` says
whether it is on and ``reason`` says why (for a log line or a benchmark report).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kdns.serve.reply import Peer, Reply

if TYPE_CHECKING:
    from kdns.resolver.cache import Cache, Entry
    from kdns.serve._fastpath import Answers, CacheView, Loop
    from kdns.table import AnswerTable

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


@dataclass(frozen=True, slots=True, eq=False)
class FastPath:
    """What a Responder gives the C loop: hits to serve, and who answers the rest."""

    answers: Answers
    fallback: Callable[..., Reply]
    """``Responder.answer(packet)``, or with ``with_peer`` nodecache's ``handler.udp(packet,
    peer)``: everything C does not answer itself."""
    on_error: Callable[[], None]
    """Counts one internal error (``Responder.count_error``)."""
    with_peer: bool = False

    def publish(self, table: AnswerTable | None) -> None:
        """Serve hits from ``table`` from now on (None: from nothing, the fallback answers)."""
        if table is None:
            self.answers.publish(None, None)
        else:
            self.answers.publish(table.records, table.memo.entries)

    def loop(self, deferred_sender: Callable[[Peer, bytes, int], Callable[[bytes], None]]) -> Loop:
        """The contract of one serving loop over these answers (kdns.serve.udp.UDPServer)."""
        from kdns.serve import _fastpath

        return _fastpath.Loop(
            self.answers, self.fallback, deferred_sender, self.on_error, self.with_peer
        )


def fast_path(
    opts: tuple[bytes, bytes],
    max_udp_size: int,
    fallback: Callable[[bytes], Reply],
    on_error: Callable[[], None],
) -> FastPath | None:
    """A Responder's contract with the C loop, or None when the accelerator is off."""
    if not available:
        return None
    from kdns.serve import _fastpath

    return FastPath(_fastpath.Answers(opts[0], opts[1], max_udp_size), fallback, on_error)


def cache_view(entry: Entry) -> CacheView:
    """The C loop's view of a cache entry: its header variants, the records after the
    question with their TTL offsets, and its clock (``Cache.enable_views``'s ``make``)."""
    from kdns.serve import _fastpath

    qend = entry.question_end
    return _fastpath.CacheView(
        entry,
        entry.heads,
        entry.message[qend:],
        tuple(offset - qend for offset in entry.ttl_offsets),
        entry.stored_at,
        entry.ttl,
    )


def cache_fast_path(
    cache: Cache,
    opts: tuple[bytes, bytes],
    max_udp_size: int,
    fallback: Callable[[bytes, Peer], Reply],
    on_error: Callable[[], None],
) -> FastPath | None:
    """nodecache's contract with the C loop: fresh hits from ``cache``'s views, everything
    else to ``fallback(packet, peer)``; None when the accelerator is off or the cache's clock
    is not C's."""
    if not available:
        return None
    views = cache.enable_views(cache_view)
    if views is None:
        return None
    from kdns.serve import _fastpath

    answers = _fastpath.Answers(opts[0], opts[1], max_udp_size)
    answers.publish_cache(views, cache.hit_log)
    return FastPath(answers, fallback, on_error, with_peer=True)


def serve(sock_fd: int, loop: Loop) -> tuple[bytes, tuple[str, int]] | None:
    """Serve ``sock_fd`` from the C loop until ``loop.stop()``, or until its divert flag is
    set: then None, or a datagram (packet, peer) received meanwhile, for the Python loop."""
    if not available:
        raise RuntimeError(f"the UDP accelerator is not available: {reason}")
    from kdns.serve import _fastpath

    return _fastpath.serve(sock_fd, loop)
