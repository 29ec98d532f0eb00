"""TCP transport: 2-byte length framing, pipelined queries answered in order, idle timeout.

TCP is the rare path (truncated answers, zone-sized replies), so it runs on an asyncio loop in
its own thread. Each connection reads one framed query at a time and writes its reply before
reading the next, which keeps replies in query order. A handler may answer with a ``Stream`` of
messages (a zone transfer): they are built on a worker thread, one at a time, and written in
order before the next query is read. Every reply is counted in the tally of the listening socket
it came through (kdns.serve.tally), on the loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from kdns.serve.reply import Stream, TCPHandler, TCPPeerHandler
from kdns.serve.sockets import bound_socket
from kdns.serve.tally import count, family_of, new_cells

if TYPE_CHECKING:
    from kdns.querylog import QueryLog

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 1024


def bind_tcp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    sock = bound_socket(host, port, socket.SOCK_STREAM, reuse_port=reuse_port)
    sock.listen(128)
    sock.setblocking(False)
    return sock


class TCPServer:
    """Serves bound listening sockets on an asyncio loop in a dedicated thread."""

    def __init__(
        self,
        socks: list[socket.socket],
        answer: TCPHandler | None,
        idle_timeout_s: float,
        deferred_timeout_s: float = 10.0,
        peer_answer: TCPPeerHandler | None = None,
        query_log: QueryLog | None = None,
    ) -> None:
        """Give ``answer(packet)``, or ``peer_answer(packet, peer)`` when the client matters."""
        assert (answer is None) != (peer_answer is None), "exactly one handler"
        self.socks = socks
        self.answer = answer
        self.peer_answer = peer_answer
        self.idle_timeout_s = idle_timeout_s
        self.query_log = query_log
        """Offered every answered query while it is on (kdns.querylog)."""
        self.deferred_timeout_s = deferred_timeout_s
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self.cells: dict[tuple[str, int], list[int]] = {
            _local_address(sock): new_cells() for sock in socks
        }
        """Per listening address: the tally cells, written only by the loop's thread."""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        for sock in self.socks:
            server = self._loop.run_until_complete(
                asyncio.start_server(self._serve_connection, sock=sock)
            )
            self._servers.append(server)
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        client = (str(peer[0]), int(peer[1]))
        family = family_of(client[0])
        cells = self.cells.get(_local_address(writer.get_extra_info("socket")))
        if cells is None:  # not one of our listeners (cannot happen): count it somewhere
            cells = next(iter(self.cells.values()))
        clock = time.perf_counter_ns
        try:
            while True:
                try:
                    prefix = await asyncio.wait_for(reader.readexactly(2), self.idle_timeout_s)
                    length = int.from_bytes(prefix, "big")
                    packet = await asyncio.wait_for(reader.readexactly(length), self.idle_timeout_s)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                started = clock()
                if self.answer is not None:
                    result = self.answer(packet)
                else:
                    assert self.peer_answer is not None
                    result = self.peer_answer(packet, client)
                if result is None:
                    continue
                deferred = not isinstance(result, bytes)
                if isinstance(result, bytes):
                    reply = result
                elif isinstance(result, Iterator):
                    await _send_stream(writer, result)
                    continue
                else:
                    # Answered from another thread; awaiting it here keeps replies in order.
                    future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                    result(_threadsafe_sender(future))
                    try:
                        reply = await asyncio.wait_for(future, self.deferred_timeout_s)
                    except TimeoutError:
                        continue
                elapsed = clock() - started
                count(cells, packet, reply, family, deferred, elapsed)
                query_log = self.query_log
                if query_log is not None and query_log.enabled:
                    query_log.offer(packet, reply, client[0], client[1], "tcp", deferred, elapsed)
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

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
                    self._loop.remove_reader(sock.fileno())
            for _ in range(3):
                await asyncio.sleep(0)
            for server in self._servers:
                server.close()

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=3)

    def stop(self) -> None:
        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            for task in list(self._connections):
                task.cancel()
            for server in self._servers:
                await server.wait_closed()

        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
            with contextlib.suppress(Exception):
                future.result(timeout=3)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=3)


async def _send_stream(writer: asyncio.StreamWriter, messages: Stream) -> None:
    """Several messages for one query (a zone transfer), in order: each is built on a worker
    thread (building one is CPU work that would hold the loop) and drained before the next is
    built, so one stream cannot stall the other connections."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            message = await loop.run_in_executor(None, next, messages, None)
            if message is None:
                return
            writer.write(len(message).to_bytes(2, "big") + message)
            await writer.drain()
    finally:
        close = getattr(messages, "close", None)
        if close is not None:
            close()


def _local_address(sock: Any) -> tuple[str, int]:
    """A listening socket's (or an accepted connection's) own host and port."""
    name = sock.getsockname()
    return str(name[0]), int(name[1])


def _threadsafe_sender(future: asyncio.Future[bytes]) -> Callable[[bytes], None]:
    loop = future.get_loop()

    def send(data: bytes) -> None:
        loop.call_soon_threadsafe(_settle, future, data)

    return send


def _settle(future: asyncio.Future[bytes], data: bytes) -> None:
    if not future.done():
        future.set_result(data)


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
