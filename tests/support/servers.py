"""In-process kdns servers on 127.0.0.1:0, and query helpers over real sockets."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import dns.message
import dns.query

from kdns.config import ZoneConfig
from kdns.model import KubeObject
from kdns.runtime import Runtime
from kdns.serve.protocol import Forwarding, Responder
from kdns.serve.reply import Handler, Peer, PeerHandler
from kdns.serve.tcp import TCPServer, bind_pair, bind_tcp
from kdns.serve.tcplimits import TCPLimits
from kdns.serve.udp import UDPServer

TIMEOUT_S = 3.0


@dataclass
class RunningServer:
    host: str
    port: int
    runtime: Runtime
    responder: Responder
    tcp: TCPServer

    def query(self, message: dns.message.Message, transport: str = "udp") -> dns.message.Message:
        if transport == "udp":
            return dns.query.udp(message, self.host, port=self.port, timeout=TIMEOUT_S)
        return dns.query.tcp(message, self.host, port=self.port, timeout=TIMEOUT_S)

    def raw_udp(self, packet: bytes, timeout: float = 1.0) -> bytes | None:
        """Send bytes, return the reply bytes or None if nothing came back in ``timeout``."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(packet, (self.host, self.port))
            try:
                return sock.recv(65535)
            except TimeoutError:
                return None


def read_frame(sock: socket.socket) -> bytes:
    """One length-prefixed DNS message from a TCP socket; ConnectionError if it closes first."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    return exactly(int.from_bytes(exactly(2), "big"))


@contextlib.contextmanager
def running_tcp(
    answer: Handler | None, limits: TCPLimits, peer_answer: PeerHandler | None = None
) -> Iterator[tuple[TCPServer, Peer]]:
    """The TCP transport alone on 127.0.0.1:0 in front of ``answer`` (or ``peer_answer``):
    the server and its address."""
    sock = bind_tcp("127.0.0.1", 0)
    server = TCPServer([sock], answer, limits, peer_answer=peer_answer)
    server.start()
    try:
        host, port = sock.getsockname()[:2]
        yield server, (host, port)
    finally:
        server.stop()


@contextlib.contextmanager
def running_server(
    objects: list[KubeObject],
    zone_config: ZoneConfig | None = None,
    max_udp_size: int = 1232,
    idle_timeout_s: float = 10.0,
    synced: bool = True,
    forwarder: Forwarding | None = None,
    tcp_limits: TCPLimits | None = None,
) -> Iterator[RunningServer]:
    """kdns on 127.0.0.1:0; ``tcp_limits`` (default: ``TCPLimits(idle_timeout_s=...)``)."""
    responder = Responder(max_udp_size)
    runtime = Runtime(zone_config or ZoneConfig(), responder, synced=synced)
    if forwarder is not None:
        responder.forwarder = forwarder
        runtime.builder.chase_external = True
    runtime.replace(objects)
    udp_sock, tcp_sock = bind_pair("127.0.0.1", 0)
    port = udp_sock.getsockname()[1]
    udp = UDPServer(udp_sock, responder.answer)
    limits = tcp_limits or TCPLimits(idle_timeout_s=idle_timeout_s)
    tcp = TCPServer([tcp_sock], lambda p: responder.answer(p, tcp=True), limits)
    udp.start()
    tcp.start()
    try:
        yield RunningServer("127.0.0.1", port, runtime, responder, tcp)
    finally:
        tcp.stop()
        udp.stop()
