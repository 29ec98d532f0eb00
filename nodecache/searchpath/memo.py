"""The search-path policy's one memo: replies it gave on the node, by client address and query
bytes minus the ID, for the rest of the second (as the handler memoizes cache hits), so a warm
search miss or autopath answer is one dict lookup.

It holds only what was given and until when; what to count for a recalled reply is carried
with it (``mechanism``, ``saved``, ``avoided``) and counted by the policy. Time is passed in.
Cleared when full (``max_entries``): a flood of distinct queries costs one clear, not an LRU.
"""

from __future__ import annotations

from dataclasses import dataclass

MemoKey = tuple[str, bytes]
"""(client IP, the query's bytes after its ID)."""


@dataclass(frozen=True, slots=True)
class Remembered:
    valid_until: float
    reply: bytes
    """Without its ID."""
    mechanism: str
    """shape, cut, name or autopath."""
    saved: int
    avoided: bool
    """The reply avoided an upstream query (the cache did not hold it)."""


class Memo:
    """See the module docstring. Reads and writes are single dict operations (GIL-atomic)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._replies: dict[MemoKey, Remembered] = {}

    def __len__(self) -> int:
        return len(self._replies)

    def remember(
        self,
        key: MemoKey,
        reply: bytes,
        valid_until: float,
        mechanism: str,
        saved: int,
        avoided: bool,
        now: float,
    ) -> None:
        """Keep ``reply`` (with its ID) for ``key`` until ``valid_until`` or the end of the
        second of ``now``, whichever is first."""
        if len(self._replies) >= self.max_entries:
            self._replies.clear()
        until = min(valid_until, float(int(now) + 1))
        self._replies[key] = Remembered(until, reply[2:], mechanism, saved, avoided)

    def recall(self, key: MemoKey, now: float, max_size: int | None = None) -> Remembered | None:
        """What was given for ``key`` if it still holds (and is at most ``max_size`` bytes
        without its ID)."""
        memo = self._replies.get(key)
        if memo is None or memo.valid_until <= now:
            return None
        if max_size is not None and len(memo.reply) > max_size:
            return None
        return memo
