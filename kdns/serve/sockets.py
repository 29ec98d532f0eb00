"""Listening sockets for the transports: the one place that creates and binds them."""

from __future__ import annotations

import socket


def bound_socket(host: str, port: int, kind: socket.SocketKind) -> socket.socket:
    """A socket of ``kind`` bound to (host, port): address reuse on, IPv6 sockets v6-only so
    an IPv4 listener on the same port can coexist."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    return sock
