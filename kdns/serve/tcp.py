"""TCP transport: 2-byte length framing, pipelined queries answered concurrently and replied to
in query order, and connections one client cannot use to take the server over.

TCP is the rare path (truncated answers, nodecache's queries to kdns, zone-sized replies), so it
runs on an asyncio loop in its own thread. Each connection is a ``_Connection`` protocol that
reads into one buffer shared by the loop (``BufferedProtocol``: a read never takes more than the
connection may hold), answers up to ``MAX_PIPELINED`` of its queries at once, and writes their
replies in the order the queries came.

What bounds a connection, and what closes it (limits and defaults in ``TCPLimits``):

* ``TCP_NODELAY`` is set on every accepted socket, so reply 2 of a pipelined burst is not held
  back until the client ACKs reply 1 (Nagle against delayed ACK: 40 ms on Linux).
* Admission and eviction (per-client limit, longest-idle eviction at the global cap) and the
  bound on bytes held by all connections are ``kdns.serve.tcplimits.ConnectionTable``'s rules.
* Reading stops while the connection holds ``READ_AHEAD_BYTES`` of queries it cannot answer yet
  (its replies are not being read, or ``MAX_PIPELINED`` are being answered); the rest waits in
  the kernel, and the client's window closes.
* Writing: past ``max_queued_bytes`` queued to the transport the connection answers nothing
  more until the client reads; if the queued bytes make no progress for ``write_timeout_s`` the
  connection is aborted and its buffers freed. Nothing ever waits on a drain.
* Idle: no complete query received and no reply sent for ``idle_timeout_s`` closes it (a
  client trickling a query byte by byte is idle too).
* Memory freed by closed connections is handed back to the OS (``kdns.serve.heap``), so the
  RSS a burst of abusive clients raised comes down after they are gone.

A handler may answer with a ``Stream`` of messages (a zone transfer): they are built on a worker
thread one at a time (building one is CPU work that would hold the loop), and the next is built
only once the previous one is queued to the transport and writing is not paused, so a transfer
obeys the same write bounds as any reply. Every reply is counted in the tally of the listening
socket it came through (``kdns.serve.tally``), and offered to the query log while it is on, on
the loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdns.serve.heap import TRIM_INTERVAL_S, HeapTrimmer
from kdns.serve.reply import Peer, Stream, TCPHandler, TCPPeerHandler
from kdns.serve.sockets import bound_socket
from kdns.serve.tally import count, family_of, new_cells
from kdns.serve.tcplimits import (
    MAX_FRAME,
    MAX_PIPELINED,
    READ_AHEAD_BYTES,
    ConnectionTable,
    TCPLimits,
)

if TYPE_CHECKING:
    from kdns.querylog import QueryLog

logger = logging.getLogger(__name__)


def bind_tcp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    sock = bound_socket(host, port, socket.SOCK_STREAM, reuse_port=reuse_port)
    sock.listen(128)
    sock.setblocking(False)
    return sock


@dataclass(slots=True)
class TCPStats:
    """Counters since start; written on the loop thread, read from anywhere."""

    accepted: int = 0
    refused_per_client: int = 0
    """New connections closed because their client address was at ``max_per_client``."""
    evicted_idle: int = 0
    """Longest-idle connections closed to admit a new one at ``max_connections``."""
    closed_idle: int = 0
    closed_write_timeout: int = 0
    """Aborted: queued replies made no progress for ``write_timeout_s``."""
    closed_over_budget: int = 0
    """Aborted as the largest holder while all connections held more than ``max_buffer_bytes``."""
    deferred_timeouts: int = 0
    """Queries whose deferred answer did not come within ``deferred_timeout_s`` (no reply)."""


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    client: Peer
    held_bytes: int
    """Unread query bytes, replies waiting their turn, and reply bytes queued to the kernel."""
    idle_s: float
    nodelay: bool
    send_buffer: int
    """SO_SNDBUF as the kernel reports it (twice what was set)."""


@dataclass(frozen=True, slots=True)
class TCPUsage:
    """A consistent view of the open connections, taken on the loop thread."""

    connections: tuple[ConnectionInfo, ...] = ()
    held_bytes: int = 0


class _Slot:
    """One query's place in its connection's reply order. A stream's slot holds its next
    message in ``reply`` and is done once the stream is exhausted."""

    __slots__ = ("counted", "done", "packet", "pending", "reply", "started", "stream", "timer")

    def __init__(
        self, packet: bytes, started: int, reply: bytes | None, done: bool, stream: Stream | None
    ) -> None:
        self.packet = packet
        self.started = started
        self.reply = reply
        self.done = done
        self.stream = stream
        self.pending = False
        """A worker is building the stream's next message."""
        self.counted = False
        self.timer: asyncio.TimerHandle | None = None


class _Connection(asyncio.BufferedProtocol):
    """One client connection: framing, reply order, and its part of the limits."""

    def __init__(self, server: TCPServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.peer: Peer = ("", 0)
        self.family = 0
        self.cells: list[int] = []
        self.nodelay = False
        self.send_buffer = 0
        self.closed = False
        self.inbox = bytearray()
        self.slots: deque[_Slot] = deque()
        self.parked_bytes = 0
        """Reply bytes done but waiting behind an earlier, slower query."""
        self.written = 0
        self.writing_paused = False
        self.eof = False
        self.last_active = time.monotonic()
        self.idle_timer: asyncio.TimerHandle | None = None
        self.write_timer: asyncio.TimerHandle | None = None
        self.write_mark = 0
        self.write_progress_at = 0.0

    # --- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1]))
        self.family = family_of(self.peer[0])
        self.cells = self.server.cells_for(transport.get_extra_info("sockname"))
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.nodelay = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            self.send_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        limits = self.server.limits
        transport.set_write_buffer_limits(
            high=limits.max_queued_bytes, low=limits.max_queued_bytes // 4
        )
        if not self.server.admit(self):
            return
        self.idle_timer = self.loop.call_later(limits.idle_timeout_s, self._check_idle)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server.scratch[: max(1, self._room())]

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        self.inbox += self.server.scratch[:nbytes]
        self._work()

    def eof_received(self) -> bool:
        # A client may half-close after its last query: answer what it sent, then close.
        self.eof = True
        self._work()
        return True

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._work()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    # --- reading and answering -----------------------------------------------------------------

    def _room(self) -> int:
        """How many more bytes this connection may read now."""
        held = len(self.inbox)
        room = READ_AHEAD_BYTES - held
        if held >= 2:
            # Always enough to complete the message at the head, however long.
            room = max(room, 2 + int.from_bytes(self.inbox[:2], "big") - held)
        return max(0, min(room, MAX_FRAME))

    def _frame_end(self) -> int:
        """Where the complete message at the head of the inbox ends; 0 if it is incomplete."""
        if len(self.inbox) < 2:
            return 0
        end = 2 + int.from_bytes(self.inbox[:2], "big")
        return end if len(self.inbox) >= end else 0

    def _work(self) -> None:
        """Answer the complete queries we may, write what is ready, then decide on reading."""
        while not self.closed and not self.writing_paused and len(self.slots) < MAX_PIPELINED:
            end = self._frame_end()
            if not end:
                break
            packet = bytes(self.inbox[2:end])
            del self.inbox[:end]
            self._active()
            self._answer(packet)
            self._flush()
        if self.closed:
            return
        self._flush()
        if self.closed:
            return
        assert self.transport is not None
        if self.eof:
            # The client sends no more: once every query it sent is answered, close after the
            # queued replies are flushed (the write timeout still bounds that).
            if not self.slots and not self._frame_end():
                self.transport.close()
        elif self._room() == 0 or self.writing_paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()
        self.server.account(self)

    def _answer(self, packet: bytes) -> None:
        server = self.server
        started = time.perf_counter_ns()
        if server.answer is not None:
            result = server.answer(packet)
        else:
            assert server.peer_answer is not None
            result = server.peer_answer(packet, self.peer)
        if result is None:
            return
        if isinstance(result, bytes):
            slot = _Slot(packet, started, result, done=True, stream=None)
            self._count(slot, result, deferred=False)
            self.slots.append(slot)
            self.parked_bytes += len(result)
            return
        if isinstance(result, Iterator):
            slot = _Slot(packet, started, None, done=False, stream=result)
            self.slots.append(slot)
            self._pull(slot)
            return
        slot = _Slot(packet, started, None, done=False, stream=None)
        slot.timer = self.loop.call_later(server.deferred_timeout_s, self._expire, slot)
        self.slots.append(slot)
        loop = self.loop

        def send(data: bytes) -> None:
            # From any thread; a loop already stopped (shutdown) has nobody to send to.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._settle, slot, data)

        result(send)

    def _settle(self, slot: _Slot, data: bytes) -> None:
        if slot.done or self.closed:
            return
        if slot.timer is not None:
            slot.timer.cancel()
        slot.reply, slot.done = data, True
        self._count(slot, data, deferred=True)
        self.parked_bytes += len(data)
        self._work()

    def _count(self, slot: _Slot, reply: bytes, *, deferred: bool) -> None:
        if slot.counted:
            return
        slot.counted = True
        elapsed = time.perf_counter_ns() - slot.started
        count(self.cells, slot.packet, reply, self.family, deferred, elapsed)
        query_log = self.server.query_log
        if query_log is not None and query_log.enabled:
            query_log.offer(slot.packet, reply, *self.peer, "tcp", deferred, elapsed)

    # --- streams (zone transfers) --------------------------------------------------------------

    def _pull(self, slot: _Slot) -> None:
        """Have a worker build the stream's next message (one at a time)."""
        assert slot.stream is not None
        if slot.pending or slot.done or slot.reply is not None or self.closed:
            return
        slot.pending = True
        future = self.loop.run_in_executor(None, next, slot.stream, None)
        future.add_done_callback(lambda done: self._pulled(slot, done))

    def _pulled(self, slot: _Slot, future: asyncio.Future[Any] | Future[Any]) -> None:
        slot.pending = False
        if self.closed:
            _close_stream(slot.stream)
            return
        error = future.exception()
        message = None if error is not None else future.result()
        if error is not None:
            logger.error("a reply stream failed: %s", error)
        if message is None:
            slot.done = True
            _close_stream(slot.stream)
        else:
            slot.reply = message
            self._count(slot, message, deferred=True)
            self.parked_bytes += len(message)
        self._work()

    def _expire(self, slot: _Slot) -> None:
        if slot.done or self.closed:
            return
        self.server.stats.deferred_timeouts += 1
        slot.done = True  # no reply: the client times this query out
        self._work()

    def _flush(self) -> None:
        """Write the replies that are next in query order."""
        assert self.transport is not None
        wrote = False
        while self.slots:
            head = self.slots[0]
            if head.stream is not None and not head.done:
                if head.reply is not None:
                    self._write(head.reply)
                    head.reply = None
                    wrote = True
                if not self.writing_paused:
                    self._pull(head)
                break
            if not head.done:
                break
            reply = self.slots.popleft().reply
            if reply is None:
                continue
            self._write(reply)
            wrote = True
        if wrote:
            self._active()
            if self.transport.get_write_buffer_size() and self.write_timer is None:
                self._arm_write_timer()

    def _write(self, reply: bytes) -> None:
        assert self.transport is not None
        self.parked_bytes -= len(reply)
        self.transport.write(len(reply).to_bytes(2, "big") + reply)
        self.written += 2 + len(reply)

    # --- timers --------------------------------------------------------------------------------

    def _active(self) -> None:
        self.last_active = time.monotonic()
        self.server.table.touch(self)

    def _flushed(self) -> int:
        assert self.transport is not None
        return self.written - self.transport.get_write_buffer_size()

    def _arm_write_timer(self) -> None:
        self.write_mark = self._flushed()
        self.write_progress_at = self.loop.time()
        self._schedule_write_check()

    def _schedule_write_check(self) -> None:
        # A quarter of the timeout: a stalled client is closed within 1.25 write timeouts.
        self.write_timer = self.loop.call_later(
            self.server.limits.write_timeout_s / 4, self._check_write
        )

    def _check_write(self) -> None:
        """Queued replies must move towards the client at least once per write timeout."""
        self.write_timer = None
        if self.closed:
            return
        assert self.transport is not None
        if not self.transport.get_write_buffer_size():
            self.server.account(self)
            return
        flushed = self._flushed()
        if flushed > self.write_mark:
            self.write_mark, self.write_progress_at = flushed, self.loop.time()
        elif self.loop.time() - self.write_progress_at >= self.server.limits.write_timeout_s:
            self.server.stats.closed_write_timeout += 1
            self.close(abort=True)
            return
        self._schedule_write_check()

    def _check_idle(self) -> None:
        self.idle_timer = None
        if self.closed:
            return
        assert self.transport is not None
        idle_timeout = self.server.limits.idle_timeout_s
        # Queries being answered and replies being written have their own timeouts.
        busy = bool(self.slots) or self.transport.get_write_buffer_size() > 0
        due = self.last_active + idle_timeout
        if not busy and time.monotonic() >= due:
            self.server.stats.closed_idle += 1
            self.close(abort=False)
            return
        delay = idle_timeout if busy else due - time.monotonic()
        self.idle_timer = self.loop.call_later(max(0.01, delay), self._check_idle)

    # --- accounting and closing ----------------------------------------------------------------

    def held_bytes(self) -> int:
        queued = 0 if self.transport is None else self.transport.get_write_buffer_size()
        return len(self.inbox) + self.parked_bytes + queued

    def close(self, *, abort: bool) -> None:
        """Close now; queued replies are flushed first unless ``abort`` (or nothing is queued),
        and the connection's slot and buffers are given back at once either way."""
        if self.closed:
            return
        transport = self.transport
        self._forget()
        if transport is None:
            return
        if abort or transport.get_write_buffer_size():
            transport.abort()  # a close() would wait, unbounded, for a client that does not read
        else:
            transport.close()

    def _forget(self) -> None:
        if self.closed:
            return
        self.server.trimmer.freed(self.held_bytes())
        self.closed = True
        for timer in (self.idle_timer, self.write_timer):
            if timer is not None:
                timer.cancel()
        for slot in self.slots:
            if slot.timer is not None:
                slot.timer.cancel()
            if not slot.pending:  # a stream being built is closed when its worker returns
                _close_stream(slot.stream)
        self.slots.clear()
        self.inbox = bytearray()
        self.parked_bytes = 0
        self.server.table.remove(self)


class TCPServer:
    """Serves bound listening sockets on an asyncio loop in a dedicated thread."""

    def __init__(
        self,
        socks: list[socket.socket],
        answer: TCPHandler | None,
        limits: TCPLimits,
        deferred_timeout_s: float = 10.0,
        peer_answer: TCPPeerHandler | None = None,
        query_log: QueryLog | None = None,
    ) -> None:
        """Give ``answer(packet)``, or ``peer_answer(packet, peer)`` when the client matters."""
        assert (answer is None) != (peer_answer is None), "exactly one handler"
        self.socks = socks
        self.answer = answer
        self.peer_answer = peer_answer
        self.limits = limits
        self.deferred_timeout_s = deferred_timeout_s
        self.query_log = query_log
        """Offered every answered query while it is on (kdns.querylog)."""
        self.cells: dict[tuple[str, int], list[int]] = {
            _local_address(sock.getsockname()): new_cells() for sock in socks
        }
        """Per listening address: the tally cells, written only by the loop's thread."""
        self.stats = TCPStats()
        self.table: ConnectionTable[_Connection] = ConnectionTable(limits)
        # Every read lands here first: one buffer for the loop, not one per connection.
        self.scratch = memoryview(bytearray(MAX_FRAME))
        self.loop = asyncio.new_event_loop()
        self.trimmer = HeapTrimmer(self.loop.time)
        self._servers: list[asyncio.Server] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        for sock in self.socks:
            # Accepted sockets inherit these from the listener, before the handshake picks the
            # window scale.
            for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, self.limits.socket_buffer_bytes)
            server = self.loop.run_until_complete(
                self.loop.create_server(lambda: _Connection(self), sock=sock)
            )
            self._servers.append(server)
        self._ready.set()
        self.loop.call_later(TRIM_INTERVAL_S, self._trim)
        self.loop.run_forever()
        self.loop.close()

    def cells_for(self, sockname: Any) -> list[int]:
        """The tally cells of the listener an accepted connection came through."""
        found = self.cells.get(_local_address(sockname))
        if found is None:  # not one of our listeners (cannot happen): count it somewhere
            found = next(iter(self.cells.values()))
        return found

    # --- limits (on the loop thread) -----------------------------------------------------------

    def admit(self, conn: _Connection) -> bool:
        admission = self.table.admit(conn, conn.peer[0])
        if not admission.admitted:
            self.stats.refused_per_client += 1
            conn.close(abort=False)
            return False
        self.stats.accepted += 1
        if admission.evict is not None:
            self.stats.evicted_idle += 1
            admission.evict.close(abort=False)
        return True

    def account(self, conn: _Connection) -> None:
        """Record what ``conn`` holds; over the bound, re-measure every connection (transports
        flush without telling us) and close the largest holders until under 7/8 of it."""
        if not self.table.report(conn, conn.held_bytes()):
            return
        for other in self.table:
            self.table.report(other, other.held_bytes())
        if not self.table.over_budget():
            return
        while not self.table.relieved():
            largest = self.table.largest()
            if largest is None:
                return
            self.stats.closed_over_budget += 1
            largest.close(abort=True)

    def _trim(self) -> None:
        """Give the heap freed by closed connections back to the OS (``kdns.serve.heap``)."""
        self.trimmer.maybe_trim()
        self.loop.call_later(TRIM_INTERVAL_S, self._trim)

    def usage(self, timeout_s: float = 3.0) -> TCPUsage:
        """The open connections and the bytes they hold, measured on the loop thread."""

        async def measure() -> TCPUsage:
            now = time.monotonic()
            infos = tuple(
                ConnectionInfo(
                    conn.peer,
                    conn.held_bytes(),
                    now - conn.last_active,
                    conn.nodelay,
                    conn.send_buffer,
                )
                for conn in self.table
            )
            return TCPUsage(infos, sum(info.held_bytes for info in infos))

        return asyncio.run_coroutine_threadsafe(measure(), self.loop).result(timeout=timeout_s)

    # --- lifecycle -----------------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Close the listening sockets (a SO_REUSEPORT peer takes new connections); the open
        connections are served until ``stop``."""

        async def close() -> None:
            # Stop accepting first, then let the connections asyncio has already accepted get
            # their transports: it attaches each to its Server, which must still be open (a
            # connection accepted in the same batch as a close() is otherwise dropped with its
            # query unread, and the client sees a reset).
            for server in self._servers:
                for sock in server.sockets:
                    self.loop.remove_reader(sock.fileno())
            for _ in range(3):
                await asyncio.sleep(0)
            for server in self._servers:
                server.close()

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=3)

    def stop(self) -> None:
        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            for conn in self.table:
                conn.close(abort=True)
            for server in self._servers:
                await server.wait_closed()

        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
            with contextlib.suppress(Exception):
                future.result(timeout=3)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=3)


def _local_address(name: Any) -> tuple[str, int]:
    """A socket's own (host, port), from ``getsockname()``."""
    return str(name[0]), int(name[1])


def _close_stream(stream: Stream | None) -> None:
    """Close a stream's generator (a transfer frees its slot in ``finally``)."""
    close = getattr(stream, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


def bind_pair(
    host: str, port: int, attempts: int = 20, *, reuse_port: bool = False
) -> tuple[socket.socket, socket.socket]:
    """Bind UDP and TCP on the same address. With port 0 the UDP port is picked by the kernel and
    TCP takes the same number; if another process holds that TCP port, try a fresh one."""
    from kdns.serve.udp import bind_udp

    for _ in range(attempts if port == 0 else 1):
        udp = bind_udp(host, port, reuse_port=reuse_port)
        try:
            return udp, bind_tcp(host, udp.getsockname()[1], reuse_port=reuse_port)
        except OSError:
            udp.close()
            if port != 0:
                raise
    raise OSError(f"no free UDP+TCP port pair on {host} after {attempts} attempts")
