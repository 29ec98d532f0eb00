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
from kdns.resolver.config import ResolverConfig, StaleConfig, StaleMode, UpstreamConfig
from kdns.resolver.core import Resolver
from kdns.runtime import Runtime
from kdns.serve.forward import Forwarder
from kdns.serve.protocol import Forwarding, Responder
from kdns.serve.reply import Handler, Peer, PeerHandler
from kdns.serve.tcp import TCPServer, bind_pair, bind_tcp
from kdns.serve.tcplimits import TCPLimits
from kdns.serve.transfer import Network, ZoneTransfer
from kdns.serve.udp import UDPServer

TIMEOUT_S = 3.0


@dataclass
class RunningServer:
    host: str
    port: int
    runtime: Runtime
    responder: Responder
    tcp: TCPServer
    transfer: ZoneTransfer | None = None
    udp: UDPServer | None = None

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
    python_udp_loop: bool = False,
    transfer_to: tuple[Network, ...] = (),
    transfer_limit: int = 2,
    tcp_limits: TCPLimits | None = None,
) -> Iterator[RunningServer]:
    """kdns on 127.0.0.1:0. ``python_udp_loop`` serves UDP from the pure-Python loop even when
    the C accelerator is built (no ``fast_path`` opt-in), so a test can
    cover both. ``transfer_to`` puts a ``ZoneTransfer`` (at most ``transfer_limit`` at once) on
    TCP. ``tcp_limits`` defaults to ``TCPLimits(idle_timeout_s=...)``."""
    responder = Responder(max_udp_size)
    runtime = Runtime(zone_config or ZoneConfig(), responder, synced=synced)
    if forwarder is not None:
        responder.forwarder = forwarder
        runtime.builder.chase_external = True
    runtime.replace(objects)
    udp_sock, tcp_sock = bind_pair("127.0.0.1", 0)
    port = udp_sock.getsockname()[1]
    udp = UDPServer(
        udp_sock,
        responder.answer,
        fast_path=None if python_udp_loop else responder.fast_path,
    )
    limits = tcp_limits or TCPLimits(idle_timeout_s=idle_timeout_s)
    transfer = ZoneTransfer(responder, transfer_to, transfer_limit) if transfer_to else None
    if transfer is not None:
        tcp = TCPServer([tcp_sock], None, limits, peer_answer=transfer.answer)
    else:
        tcp = TCPServer([tcp_sock], lambda p: responder.answer(p, tcp=True), limits)
    udp.start()
    tcp.start()
    try:
        yield RunningServer("127.0.0.1", port, runtime, responder, tcp, transfer, udp)
    finally:
        tcp.stop()
        udp.stop()


@contextlib.contextmanager
def forwarder_to(address: tuple[str, int]) -> Iterator[Forwarder]:
    """kdns's forwarder on a started resolver core asking one test upstream, with short
    timeouts and no stale answers (a failure shows at once)."""
    resolver = Resolver.from_config(
        ResolverConfig(
            cluster_upstream=None,
            reverse_zones=(),
            upstream=UpstreamConfig((address,), try_timeout_s=0.3, overall_timeout_s=0.6),
            stale=StaleConfig(mode=StaleMode.OFF),
        )
    )
    resolver.start()
    try:
        yield Forwarder(resolver)
    finally:
        resolver.close()
