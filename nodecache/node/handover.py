"""Zero-loss upgrades: the old nodecache hands its addresses to a new one and drains.

Both processes bind every listen address with SO_REUSEPORT, so during a DaemonSet rolling
update with ``maxSurge: 1, maxUnavailable: 0`` the new pod serves beside the old one and the
kernel spreads queries over both. Once the new pod is Ready the DaemonSet controller deletes
the old one, whose SIGTERM then runs ``hand_over``:

1. ``successor_bound``: does another socket, not one of ours, sit on each of our UDP addresses?
   (``/proc/net/udp``: the address, port and inode of every UDP socket in our network
   namespace, the node's with ``hostNetwork``.) If not, there is no successor and nodecache
   shuts down as usual: rules removed, so queries fall back to kdns.
2. ``UDPServer.stop_receiving`` on each socket: it leaves the reuseport selection but keeps its
   receive queue (``kdns.serve.sockets.step_aside``); from now on the kernel gives every new
   datagram to the successor.
3. A probe of our first address must now be answered, and only the successor can answer it. If
   it is not (the other socket is not a working nodecache, or one still starting), we rejoin
   and shut down as usual, except that the node plumbing stays: a bound successor owns it (its
   own sync installs and re-ensures it, its guard bypasses it if it never answers), and
   tearing it down would take the node's DNS from a pod that is about to serve it.
4. The caller waits until the queues are read empty (``wait_drained``), then lets the queries
   in flight finish, and leaves the interface and rules to the successor.

Closing a socket instead would drop what its queue holds; stopping to read without stepping
aside would leave the kernel hashing a share of new flows to a socket nobody reads.

TCP: the old listeners stop being read and close (``TCPServer.stop_accepting``); connections
the kernel queued to them in the last instant move to the successor only with
``net.ipv4.tcp_migrate_req=1``, which ``ensure_tcp_migrate`` turns on at startup when it may.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kdns.serve.udp import UDPServer

logger = logging.getLogger(__name__)

PROC_UDP = (Path("/proc/net/udp"), Path("/proc/net/udp6"))
TCP_MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def ensure_tcp_migrate(path: Path = TCP_MIGRATE_REQ) -> str:
    """Turn on ``net.ipv4.tcp_migrate_req`` (Linux >= 5.14, IPv4 and IPv6) if we may: then a
    connection queued to a closing SO_REUSEPORT listener (ours, in an upgrade) moves to the
    successor's instead of being reset. Returns ``on``, ``set``, ``absent`` or ``read-only``,
    logged; never raises (a container's /proc/sys is usually read-only: set it on the node)."""
    try:
        if path.read_text().strip() != "0":
            return "on"
    except OSError:
        logger.info("no %s (Linux < 5.14): TCP connections queued at an upgrade are reset", path)
        return "absent"
    try:
        path.write_text("1\n")
    except OSError as error:
        logger.warning(
            "cannot set net.ipv4.tcp_migrate_req=1 (%s): set it on the node, or TCP connections "
            "queued to the old listener at an upgrade are reset",
            error.strerror or error,
        )
        return "read-only"
    logger.info("net.ipv4.tcp_migrate_req=1: queued TCP connections move to a successor")
    return "set"


def parse_proc_udp(text: str) -> list[tuple[str, int, int]]:
    """``(ip, port, inode)`` of each socket in a ``/proc/net/udp`` or ``udp6`` table."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        address, _, port_hex = fields[1].partition(":")
        raw = bytes.fromhex(address)
        # The kernel prints each 32-bit word of the address in host byte order.
        words = struct.unpack(f"={len(raw) // 4}I", raw)
        packed = b"".join(struct.pack(">I", word) for word in words)
        ip = str(ipaddress.ip_address(packed))
        found.append((ip, int(port_hex, 16), int(fields[9])))
    return found


def _read_proc_udp() -> list[tuple[str, int, int]]:
    entries: list[tuple[str, int, int]] = []
    for path in PROC_UDP:
        try:
            entries += parse_proc_udp(path.read_text())
        except OSError:
            continue
    return entries


def successor_bound(
    servers: Sequence[UDPServer],
    read: Callable[[], list[tuple[str, int, int]]] = _read_proc_udp,
) -> bool:
    """Whether every one of our UDP addresses also has a socket that is not ours."""
    if not servers:
        return False
    ours = {os.fstat(server.sock.fileno()).st_ino for server in servers}
    table = read()
    for server in servers:
        host, port = server.address
        want = ipaddress.ip_address(host)
        if not any(
            ipaddress.ip_address(ip) == want and p == port and inode not in ours
            for ip, p, inode in table
        ):
            return False
    return True


def hand_over(
    servers: Sequence[UDPServer],
    answers: Callable[[], bool],
    confirm_s: float = 2.0,
    successor: bool | None = None,
) -> bool:
    """Steps 1-3 of the module docstring. True: the successor serves our addresses and our
    sockets take no new datagrams (the caller drains them); False: we still serve.
    ``successor``: step 1's answer when the caller already has it (``successor_bound``)."""
    if not (successor_bound(servers) if successor is None else successor):
        return False
    for server in servers:
        server.stop_receiving()
    deadline = time.monotonic() + confirm_s
    while True:
        if answers():
            logger.info(
                "a successor answers on %s: handing over (draining our queues)",
                ", ".join(_show(server.address) for server in servers),
            )
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    logger.warning("another socket holds our addresses but does not answer; not handing over")
    for server in servers:
        server.resume_receiving()
    return False


def _show(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["hand_over", "parse_proc_udp", "successor_bound"]
