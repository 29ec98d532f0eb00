"""Listening sockets for the transports: the one place that creates and binds them, and the
socket operations of a zero-loss handover between two processes sharing an address.

``SO_REUSEPORT`` is opt-in (``reuse_port``): with it, a second process can bind the same address
and the kernel spreads new UDP flows and TCP connections over every socket of the group. To
leave the group without losing the datagrams already queued to it, a UDP socket is
``connect``\\ ed to its own address (``step_aside``): since Linux 5.x the reuseport selection
skips connected sockets and a connected socket matches only its peer (nobody sends from our
own address), so no new datagram reaches it, while the ones queued stay readable. ``queued``
says how many bytes wait in its receive queue; ``rejoin`` dissolves the association again.
Closing instead would discard the queue.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import socket
import struct
import termios


def bound_socket(
    host: str, port: int, kind: socket.SocketKind, *, reuse_port: bool = False
) -> socket.socket:
    """A socket of ``kind`` bound to (host, port): address reuse on, IPv6 sockets v6-only so
    an IPv4 listener on the same port can coexist; ``reuse_port`` joins a SO_REUSEPORT group."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    return sock


def step_aside(sock: socket.socket) -> None:
    """Take a bound UDP socket out of its SO_REUSEPORT group's selection, keeping its queue."""
    sock.connect(sock.getsockname())


def rejoin(sock: socket.socket) -> None:
    """Undo ``step_aside``: ``connect(AF_UNSPEC)`` dissolves the association (connect(2)),
    which Python's ``socket.connect`` cannot express. Only for a socket bound to an explicit
    port: the kernel releases a port it picked (bind to port 0) on disconnect."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    unspec = struct.pack("=H14x", socket.AF_UNSPEC)
    buffer = ctypes.create_string_buffer(unspec, len(unspec))
    if libc.connect(sock.fileno(), buffer, len(unspec)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"connect(AF_UNSPEC): {os.strerror(errno)}")


def queued(sock: socket.socket) -> int:
    """Bytes of the next datagram waiting in a UDP socket's receive queue (0: empty)."""
    raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("=i", raw)[0])
