"""A query loop that says who answered: run inside a network namespace by the node tests.

``python tests/support/who_answers.py HOST PORT SECONDS [INTERVAL]`` sends nodecache's probe
question (``dns-version.nodecache.invalid. TXT``) to HOST:PORT every INTERVAL (0.05 s) for at
most SECONDS, each with its own socket and a 0.2 s timeout, and prints one line per query:
``MONOTONIC WHO``. WHO is ``nodecache`` (its own NXDOMAIN, nodecache.node.probe), ``kdns``
(REFUSED: kdns with ``--upstream none`` refuses names outside its zones), ``timeout``,
``refused-icmp`` (nothing listens) or ``rcode-N``. CLOCK_MONOTONIC is the same in every network
namespace, so the test compares these times with its own ``time.monotonic()``.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from kdns.health import probe_query
from nodecache.handler import PROBE_ZONE
from nodecache.node.probe import is_probe_answer

REFUSED = 5


def who(host: str, port: int) -> str:
    query = probe_query(PROBE_ZONE, int.from_bytes(os.urandom(2), "big"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.connect((host, port))
            sock.send(query)
            reply = sock.recv(4096)
        except ConnectionRefusedError:
            return "refused-icmp"
        except OSError:
            return "timeout"
    if is_probe_answer(query, reply):
        return "nodecache"
    rcode = reply[3] & 0xF if len(reply) >= 4 else -1
    return "kdns" if rcode == REFUSED and reply[:2] == query[:2] else f"rcode-{rcode}"


def main() -> None:
    host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        sys.stdout.write(f"{started:.4f} {who(host, port)}\n")
        sys.stdout.flush()
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


if __name__ == "__main__":
    main()
