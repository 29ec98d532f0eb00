"""Type stub of the optional C accelerator built from kdns/serve/_fastpath.c."""

from collections.abc import Callable, Mapping
from typing import Any

from kdns.serve.reply import Peer, Reply

LAYOUT: tuple[int, ...]

class Answers:
    """What the C loop serves hits from: records, memo, OPTs, size ceiling."""

    records: Mapping[bytes, object] | None
    memo: Mapping[bytes, object] | None
    opt: bytes
    opt_do: bytes
    max_udp_size: int
    cached: dict[bytes, CacheView] | None
    hit_log: list[CacheView] | None

    def __init__(self, opt: bytes, opt_do: bytes, max_udp_size: int) -> None: ...
    def publish(
        self, records: Mapping[bytes, object] | None, memo: Mapping[bytes, object] | None, /
    ) -> None: ...
    def publish_cache(
        self, views: dict[bytes, Any] | None, hit_log: list[Any] | None, /
    ) -> None: ...

class CacheView:
    """One fresh resolver-cache entry as the C loop serves it."""

    entry: object
    stored_at: float
    ttl: int
    hits: int

    def __init__(
        self,
        entry: object,
        heads: tuple[bytes, ...],
        tail: bytes,
        offsets: tuple[int, ...],
        stored_at: float,
        ttl: int,
    ) -> None: ...
    def take(self) -> tuple[int, float, float]: ...

class Loop:
    """One C serving loop's contract: answers, handlers, flags and counts."""

    answered: int
    stopping: int
    answers: Answers

    def __init__(
        self,
        answers: Answers,
        fallback: Callable[..., Reply],
        deferred_sender: Callable[[Peer, bytes, int], Callable[[bytes], None]],
        on_error: Callable[[], None],
        with_peer: bool = False,
    ) -> None: ...
    def read(self) -> list[int]: ...
    def set_divert(self, flag: bool, /) -> None: ...
    def stop(self) -> None: ...

def fast_key(packet: bytes, /) -> tuple[bytes, int, int] | None: ...
def udp_limit(packet: bytes, qend: int, variant: int, max_udp_size: int, /) -> int: ...
def assemble(
    packet: bytes,
    qend: int,
    variant: int,
    heads: tuple[bytes, ...],
    body: bytes,
    opts: tuple[bytes, bytes],
    /,
) -> bytes: ...
def answer(
    answers: Answers, fallback: Callable[..., Reply], packet: bytes, tcp: bool = False
) -> Reply: ...
def serve(sock_fd: int, loop: Loop, /) -> tuple[bytes, tuple[str, int]] | None: ...
