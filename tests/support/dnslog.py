"""A query log for a network namespace: every DNS message over UDP on its loopback, one JSON line
each.

NSD 4.6 logs queries only through dnstap (a Frame Streams collector on a unix socket), and kdns
and nodecache log none, so tests/support/ndots.py runs this inside the namespace instead
(``python tests/support/dnslog.py OUT``): an ``AF_PACKET`` socket on ``lo`` sees each datagram
once as sent (``PACKET_OUTGOING``, skipped) and once as received; the received copy of every IPv4
UDP datagram to or from port 53 is decoded with dnspython and appended to ``OUT`` as
``{"src": "IP:PORT", "dst": "IP:PORT", "qr": bool, "name": ..., "type": ..., "rcode": ...,
"answer": [...]}`` and flushed, so a reader sees it at once. It runs until terminated.

A standalone script (dnspython and the stdlib only): it runs under the namespace's ``ip netns
exec``, not inside the test process. SIGUSR1 pauses the capture (a ``{"paused": true}`` line
says it has stopped), SIGUSR2 resumes it (``{"ready": true}`` again).
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import sys
from typing import TextIO

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
ETH_HEADER = 14  # lo frames carry an Ethernet header with zero addresses
DNS_PORT = 53


def decode(frame: bytes) -> dict[str, object] | None:
    """The log record of one frame, or None when it is not an IPv4 UDP DNS message."""
    ip = frame[ETH_HEADER:]
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
        return None
    header = (ip[0] & 0x0F) * 4
    sport, dport = struct.unpack("!HH", ip[header : header + 4])
    if DNS_PORT not in (sport, dport):
        return None
    src = f"{socket.inet_ntoa(ip[12:16])}:{sport}"
    dst = f"{socket.inet_ntoa(ip[16:20])}:{dport}"
    try:
        message = dns.message.from_wire(ip[header + 8 :])
    except dns.exception.DNSException:
        return {"src": src, "dst": dst, "garbage": True}
    question = message.question[0] if message.question else None
    return {
        "src": src,
        "dst": dst,
        "qr": bool(message.flags & 0x8000),
        # An RRset without rdatas (a question) is falsy: test for None.
        "name": question.name.to_text() if question is not None else "",
        "type": dns.rdatatype.to_text(question.rdtype) if question is not None else "",
        "rcode": dns.rcode.to_text(message.rcode()),
        "answer": [str(rrset) for rrset in message.answer],
    }


class PauseRequestError(Exception):
    """SIGUSR1: stop capturing (close the socket) until SIGUSR2."""


def _pause(signum: int, frame: object) -> None:
    raise PauseRequestError


def capture(out: TextIO) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind(("lo", 0))
        print(json.dumps({"ready": True}), file=out, flush=True)
        while True:
            frame, address = sock.recvfrom(65535)
            if address[2] == PACKET_OUTGOING:
                continue
            record = decode(frame)
            if record is not None:
                print(json.dumps(record), file=out, flush=True)
    finally:
        sock.close()


def main(out_path: str) -> None:
    # Paused while a benchmark times lookups: decoding every datagram in Python would compete
    # with the servers for the machine's two cores.
    signal.signal(signal.SIGUSR1, _pause)
    # SIGUSR2 stays blocked and is taken by sigwait, so one sent before we wait is not lost.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    with open(out_path, "a", encoding="utf-8") as out:
        while True:
            try:
                capture(out)
            except PauseRequestError:
                print(json.dumps({"paused": True}), file=out, flush=True)
                signal.sigwait({signal.SIGUSR2})


if __name__ == "__main__":
    main(sys.argv[1])
