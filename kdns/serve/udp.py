"""UDP transport: a plain blocking ``recvfrom``/``sendto`` loop on its own thread.

Measured on our machines, this loop is about 6x faster than an asyncio DatagramProtocol and 2x
faster than uvloop (docs/benchmarks.md, ../shared/docs/performance.md). It knows nothing about
DNS: every datagram goes to ``answer`` and whatever comes back is sent. Each answered datagram is
counted in the server's ``Tally`` (kdns.serve.tally) by this thread; a deferred reply is counted
by the thread that sends it, under the tally's lock.

With a query log (kdns.querylog) every answered query is offered to it while it is on. The C
loop does not log: while the log is on it hands the socket to the Python loop (its divert flag,
set through ``QueryLog.watch``), which hands it back when the log goes off.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from kdns.serve import accel, sockets
from kdns.serve.reply import Handler, Peer, PeerHandler
from kdns.serve.sockets import bound_socket
from kdns.serve.tally import Tally, add, count, family_of

if TYPE_CHECKING:
    from kdns.querylog import QueryLog
    from kdns.serve._fastpath import Loop
    from kdns.serve.accel import FastPath

logger = logging.getLogger(__name__)

RECEIVE_SIZE = 65535


def bind_udp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    sock = bound_socket(host, port, socket.SOCK_DGRAM, reuse_port=reuse_port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    return sock


class UDPServer:
    """Serves one bound UDP socket from a dedicated thread until ``stop``."""

    def __init__(
        self,
        sock: socket.socket,
        answer: Handler | None = None,
        peer_answer: PeerHandler | None = None,
        query_log: QueryLog | None = None,
        fast_path: FastPath | None = None,
    ) -> None:
        """Give ``answer(packet)``, or ``peer_answer(packet, peer)`` when the client matters.

        ``fast_path`` opts in to the C loop (``Responder.fast_path``; None when the accelerator
        is off): it then serves hits itself and calls ``fast_path.fallback`` for the rest, so
        ``answer`` may be left out (it defaults to that fallback)."""
        if answer is None and peer_answer is None and fast_path is not None:
            answer = fast_path.fallback
        assert (answer is None) != (peer_answer is None), "exactly one handler"
        self.fast_path = fast_path
        self.sock = sock
        self.query_log = query_log
        self.answer = answer
        self.peer_answer = peer_answer
        self._stopping = False
        self.tally = Tally()
        """What the Python loop (and deferred replies) counted."""
        self.loop: Loop | None = None
        """The C loop's contract (``kdns.serve._fastpath.Loop``: its counts too) once it serves."""
        self._thread = threading.Thread(target=self._run, name=f"udp-{self.address}", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        if self.fast_path is None:
            self._python_loop(False)
            return
        # The C loop (kdns/serve/_fastpath.c): the same replies, counts and stop protocol; it
        # returns when told to divert (the query log went on), and the Python loop returns when
        # the log goes off again.
        loop = self.loop = self.fast_path.loop(self.deferred_sender)
        if self._stopping:
            loop.stop()  # stop() ran before the loop existed
        if self.query_log is not None:
            self.query_log.watch(loop.set_divert)
        while not self._stopping:
            first = accel.serve(self.sock.fileno(), loop)
            if not self._stopping:
                self._python_loop(True, first)

    def _python_loop(
        self, until_log_off: bool, first: tuple[bytes, tuple[str, int]] | None = None
    ) -> None:
        """Serve until stopped (or, with ``until_log_off``, until the query log is off after
        an answer); ``first`` is a datagram the C loop received and left to this loop."""
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        answer = self.answer
        peer_answer = self.peer_answer
        cells = self.tally.cells
        clock = time.perf_counter_ns
        # An IPv4 socket only has IPv4 clients; an IPv6 one may have mapped IPv4 clients too.
        fixed_family = 0 if self.sock.family == socket.AF_INET else None
        query_log = self.query_log
        proto = "udp"
        while True:
            if first is not None:
                (packet, peer), first = first, None
            else:
                try:
                    packet, peer = recvfrom(RECEIVE_SIZE)
                except OSError:
                    if self._stopping:
                        return
                    continue
            if self._stopping:
                return
            started = clock()
            reply = answer(packet) if answer is not None else peer_answer(packet, peer)  # type: ignore[misc]
            if reply is None:
                continue
            if isinstance(reply, bytes):
                family = fixed_family if fixed_family is not None else family_of(peer[0])
                elapsed = clock() - started
                count(cells, packet, reply, family, False, elapsed)
                back_to_c = False
                if query_log is not None:
                    if query_log.enabled:  # logged before the reply leaves: see deferred_sender
                        query_log.offer(packet, reply, peer[0], peer[1], proto, False, elapsed)
                    else:
                        back_to_c = until_log_off  # the log went off
                try:
                    sendto(reply, peer)
                except OSError as error:
                    logger.debug("sendto %s failed: %s", peer, error)
                if back_to_c:
                    return
            else:
                reply(self.deferred_sender(peer, packet, started))

    def deferred_sender(
        self, peer: Peer, packet: bytes, started_ns: int
    ) -> Callable[[bytes], None]:
        """The ``send`` a Deferred reply to ``packet`` (received at ``started_ns``, on the
        ``time.perf_counter_ns`` clock) is given: counts the reply, then sends it to ``peer``.
        The C loop calls this too."""

        def send(reply: bytes) -> None:
            elapsed = time.perf_counter_ns() - started_ns
            self.tally.count_late(packet, reply, family_of(peer[0]), elapsed)
            # Logged before it is sent, as TCP does: a client that has a reply has its line in
            # the log already, so lines keep the order of cause and effect (a client's next
            # query, answered on the loop's thread, cannot be logged before this one).
            query_log = self.query_log
            if query_log is not None and query_log.enabled:
                query_log.offer(packet, reply, peer[0], peer[1], "udp", True, elapsed)
            try:
                self.sock.sendto(reply, peer)
            except OSError as error:
                logger.debug("sendto %s failed: %s", peer, error)

        return send

    def counts(self) -> list[int]:
        """Every query this server answered, in ``kdns.serve.tally`` cells."""
        cells = self.tally.read()
        loop = self.loop
        if loop is not None:
            add(cells, loop.read())
        return cells

    def stop_receiving(self) -> None:
        """Take no new datagrams (a SO_REUSEPORT peer gets them), but keep answering the ones
        already queued: see ``kdns.serve.sockets.step_aside``."""
        sockets.step_aside(self.sock)

    def resume_receiving(self) -> None:
        """Undo ``stop_receiving``."""
        sockets.rejoin(self.sock)

    def wait_drained(self, quiet_s: float = 0.1, timeout_s: float = 2.0) -> bool:
        """After ``stop_receiving``: wait until the receive queue has stayed empty for
        ``quiet_s`` (the loop has taken every queued datagram, including one the kernel was
        delivering as we stepped aside). False if it was not empty within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        empty_since: float | None = None
        while True:
            now = time.monotonic()
            if sockets.queued(self.sock):
                empty_since = None
            elif empty_since is None:
                empty_since = now
            elif now - empty_since >= quiet_s:
                return True
            if now >= deadline:
                return False
            time.sleep(0.01)

    @property
    def accelerated(self) -> bool:
        """Whether the C loop serves (or will serve, once started) this socket."""
        return self.fast_path is not None

    def stop(self) -> None:
        self._stopping = True
        loop = self.loop
        if loop is not None:
            loop.stop()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recvfrom on Linux
        except OSError:
            pass
        self._thread.join(timeout=2)
        self.sock.close()
