"""Type stub of the optional C accelerator built from kdns/serve/_fastpath.c."""

from kdns.serve.protocol import Responder

LAYOUT: tuple[int, ...]

class Counters:
    """The per-query counts of one C serving loop (kdns/serve/tally.py cells)."""

    def read(self) -> list[int]: ...
    def set_divert(self, flag: bool) -> None: ...

def answer(responder: Responder, packet: bytes, tcp: bool = False) -> bytes | None: ...
def serve(
    sock_fd: int, responder: Responder, server: object, counters: Counters | None = None
) -> tuple[bytes, tuple[str, int]] | None: ...
