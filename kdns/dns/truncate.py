"""The two truncations, side by side, because they answer different questions.

* ``truncate``: an **authoritative** answer too big for the client's payload is cut at an RRset
  boundary. TC is set only when answer or authority data is dropped; dropping additional data
  alone does not set it (RFC 2181 §9: additional data is optional, and a client that saw TC
  would retry over TCP for nothing). The question is always kept.
* ``truncated_reply``: a **recursive** answer (a cache hit or an upstream's reply) that does not
  fit is cut to its header and question with TC set: we hold it as one stored message, not as
  RRsets, and a partial RRset must never be served (RFC 2181 §9), so the client retries over
  TCP (RFC 7766 §5).
"""

from __future__ import annotations

import struct

from kdns.dns.writer import Encoded


def truncate(encoded: Encoded, room: int) -> tuple[bytes, tuple[int, int, int], bool]:
    """Cut ``encoded`` to at most ``room`` bytes at an RRset boundary: (body, counts, TC)."""
    if len(encoded.body) <= room:
        return encoded.body, encoded.counts, False
    counts = [0, 0, 0]
    end = 0
    truncated = False
    for section, count, boundary in encoded.boundaries:
        if boundary > room:
            truncated = section < 2
            break
        counts[section] += count
        end = boundary
    return encoded.body[:end], (counts[0], counts[1], counts[2]), truncated


def truncated_reply(reply: bytes, question_end: int, opt: bytes) -> bytes:
    """``reply`` cut to its header and question with TC set, plus ``opt`` when non-empty."""
    counts = struct.pack(">HHHH", 1, 0, 0, 1 if opt else 0)
    return reply[:2] + bytes((reply[2] | 0x02, reply[3])) + counts + reply[12:question_end] + opt
