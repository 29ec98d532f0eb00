"""Is nodecache answering on an address? One real DNS query over UDP, checked strictly.

The question is the liveness probe's (``dns-version.nodecache.invalid. TXT``), which nodecache
answers itself, without an upstream, with NXDOMAIN (.invalid never exists, RFC 6761). The reply
must carry our ID, QR, NXDOMAIN, no records, and our question echoed. The strictness matters
for the guard: once the plumbing is removed, a query to the kube-dns IP is DNATed to kdns, and a
loose check would take kdns's answer (REFUSED, or an NXDOMAIN carrying the root's SOA) for the
cache coming back.
"""

from __future__ import annotations

import os
import socket
import struct

from kdns import dns
from kdns.health import probe_query
from nodecache.handler import PROBE_ZONE


def nodecache_answers(host: str, port: int, timeout_s: float) -> bool:
    """True if nodecache's probe answer came back from (host, port) within ``timeout_s``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    query_id = int.from_bytes(os.urandom(2), "big")
    query = probe_query(PROBE_ZONE, query_id)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect((host, port))  # only replies from that address are read
            sock.send(query)
            reply = sock.recv(4096)
        except OSError:  # timeout, or ECONNREFUSED: nothing listens there
            return False
    return is_probe_answer(query, reply)


def is_probe_answer(query: bytes, reply: bytes) -> bool:
    """Whether ``reply`` is nodecache's answer to the probe ``query``."""
    if len(reply) < len(query) or reply[:2] != query[:2]:
        return False
    flags, qdcount, ancount, nscount = struct.unpack(">HHHH", reply[2:10])
    question = query[dns.HEADER_SIZE :]
    return (
        bool(flags & 0x8000)
        and flags & 0xF == dns.NXDOMAIN
        and (qdcount, ancount, nscount) == (1, 0, 0)
        and reply[dns.HEADER_SIZE : dns.HEADER_SIZE + len(question)].lower() == question
    )
