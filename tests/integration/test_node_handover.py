"""The socket side of the zero-loss handover (nodecache.node.handover, kdns.serve.sockets) on
loopback: successor detection from /proc/net/udp, the kernel behaviour stepping aside rests on
(a connected UDP socket leaves the SO_REUSEPORT selection and keeps its queue), and rejoining
when the other socket does not answer."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from kdns.serve.udp import UDPServer, bind_udp
from nodecache.node.handover import hand_over, successor_bound

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture
def server() -> Iterator[UDPServer]:
    sock = bind_udp("127.0.0.1", 0, reuse_port=True)
    yield UDPServer(sock, answer=lambda packet: None)
    sock.close()


def test_successor_bound_sees_only_a_foreign_socket(server: UDPServer) -> None:
    host, port = server.address
    mine = os.fstat(server.sock.fileno()).st_ino
    assert not successor_bound([server], lambda: [(host, port, mine)])
    assert not successor_bound([server], lambda: [(host, port + 1, mine + 1)])
    assert successor_bound([server], lambda: [(host, port, mine), (host, port, mine + 1)])
    assert not successor_bound([server])  # the real table: we are alone on our port
    with bind_udp(host, port, reuse_port=True):
        assert successor_bound([server])


def test_step_aside_keeps_the_queue_and_sends_new_datagrams_to_the_peer(
    server: UDPServer,
) -> None:
    """The kernel behaviour the handover rests on (Linux >= 5.x reuseport selection)."""
    host, port = server.address
    with bind_udp(host, port, reuse_port=True) as peer:
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(40)]
        try:
            for client in clients:
                client.sendto(b"before", (host, port))
            server.stop_receiving()
            for client in clients:
                client.sendto(b"after", (host, port))
            got: dict[str, list[bytes]] = {"old": [], "new": []}
            for name, sock in (("old", server.sock), ("new", peer)):
                sock.setblocking(False)
                while True:
                    try:
                        got[name].append(sock.recv(64))
                    except BlockingIOError:
                        break
        finally:
            for client in clients:
                client.close()
    assert b"after" not in got["old"]
    assert got["new"].count(b"after") == 40
    assert got["old"].count(b"before") + got["new"].count(b"before") == 40
    assert got["old"], "with 40 flows, the hash gives the old socket some before stepping aside"


def drain_count(sock: socket.socket) -> int:
    sock.setblocking(False)
    count = 0
    while True:
        try:
            sock.recv(64)
        except BlockingIOError:
            return count
        count += 1


@pytest.mark.parametrize(
    ("successor_answers", "handed_over"),
    [pytest.param(True, True, id="successor-answers"), pytest.param(False, False, id="mute")],
)
def test_hand_over_steps_aside_only_for_a_successor_that_answers(
    successor_answers: bool, handed_over: bool
) -> None:
    with bind_udp("127.0.0.1", 0, reuse_port=True) as peer:
        host, port = peer.getsockname()
        # Bound to an explicit port, as in production (53): a socket bound to port 0 loses
        # its port when disconnected (udp_disconnect), so it could not rejoin.
        server = UDPServer(bind_udp(host, port, reuse_port=True), answer=lambda packet: None)
        assert hand_over([server], lambda: successor_answers, confirm_s=0.05) is handed_over
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(40)]
        try:
            for client in clients:
                client.sendto(b"q", (host, port))
        finally:
            for client in clients:
                client.close()
        ours, theirs = drain_count(server.sock), drain_count(peer)
        server.sock.close()
    assert ours + theirs == 40
    # Handed over: nothing more for us. Not handed over: we rejoined and get our share again.
    assert (ours == 0) is handed_over


def test_no_successor_no_step_aside(server: UDPServer) -> None:
    asked: list[bool] = []
    assert not hand_over([server], lambda: asked.append(True) or True)
    assert asked == []  # alone on the port: not even a probe
