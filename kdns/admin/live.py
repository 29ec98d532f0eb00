"""Asking a live server what it answers, for ``explain --server``: the ``lookup.Answerer`` that
sends each query as the libc does (UDP, no EDNS, RD set; TCP again when the reply is
truncated) and times it.

With ``--metrics URL`` (nodecache's ``/metrics``), the server's own counters are read before
and after each query, so each answer is attributed as the offline answerer attributes it:
``autopath``, ``shape``/``cut``/``name`` (a local NXDOMAIN), ``cache``, and how many queries
it sent to kdns (the ``cluster`` upstream group) and to other upstreams. That reading is exact
on a quiet node; other clients' queries in between add to the counts. Without metrics the
server is a black box: ``how`` is ``server`` and the queries leaving the node are unknown,
unless the server is itself off the node (``kdns explain``: every query goes to kdns).
"""

from __future__ import annotations

import itertools
import socket
import struct
import time
import urllib.request
from collections.abc import Callable
from typing import Final

from kdns import wire
from kdns.admin.lookup import Answered, observe
from kdns.dns import names as zone
from kdns.resolver import message
from kdns.resolver.config import Address

TIMEOUT_S: Final = 2.0
QTYPE_TEXT: Final = {wire.A: "A", wire.AAAA: "AAAA"}
LOCAL: Final = ("shape", "cut", "name")


class LiveError(RuntimeError):
    """The server or its metrics could not be reached."""


def exchange(server: Address, packet: bytes, timeout_s: float = TIMEOUT_S) -> bytes:
    """One query over UDP; over TCP when the reply is truncated (the libc's retry)."""
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as udp:
        udp.settimeout(timeout_s)
        udp.sendto(packet, server)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                reply, _ = udp.recvfrom(65535)
            except TimeoutError:
                raise LiveError(f"no reply from {server[0]}:{server[1]} in {timeout_s} s") from None
            if reply[:2] == packet[:2]:
                break
            if time.monotonic() > deadline:
                raise LiveError(f"no matching reply from {server[0]}:{server[1]}")
    if not reply[2] & 0x02:
        return reply
    with socket.create_connection(server, timeout=timeout_s) as tcp:
        tcp.sendall(struct.pack(">H", len(packet)) + packet)
        length = struct.unpack(">H", _read(tcp, 2))[0]
        return _read(tcp, length)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise LiveError("the server closed the TCP connection")
        data += chunk
    return data


def read_metrics(url: str, timeout_s: float = TIMEOUT_S) -> dict[str, float]:
    """Prometheus text -> ``{"name{labels}": value}``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode()
    except OSError as error:
        raise LiveError(f"--metrics: cannot read {url}: {error}") from None
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            values[key] = float(value)
        except ValueError:
            continue
    return values


def _delta(after: dict[str, float], before: dict[str, float], key: str) -> int:
    return int(after.get(key, 0.0) - before.get(key, 0.0))


class LiveServer:
    """See the module docstring."""

    def __init__(
        self,
        server: Address,
        metrics_url: str | None = None,
        every_query_to: str = "",
        exchange: Callable[[Address, bytes], bytes] = exchange,
    ) -> None:
        self.server = server
        self.metrics_url = metrics_url
        self.every_query_to = every_query_to
        """Set (``kdns``) when the server is off the node: each query leaves it, to there."""
        self._exchange = exchange
        self._ids = itertools.cycle(range(1, 65536))

    def ask(self, qname: str, qtype: int) -> Answered:
        packet = message.make_query(
            next(self._ids), zone.to_wire(qname), qtype, wire.CLASS_IN, udp_size=None
        )
        before = read_metrics(self.metrics_url) if self.metrics_url else {}
        started = time.monotonic()
        reply = self._exchange(self.server, packet)
        latency_ms = 1000 * (time.monotonic() - started)
        seen = observe(reply, qtype)
        how = "server"
        left: tuple[str, ...] = ()
        if self.every_query_to:
            how = self.every_query_to
            left = (f"{how} {qname} {QTYPE_TEXT.get(qtype, str(qtype))}",)
        elif self.metrics_url:
            after = read_metrics(self.metrics_url)
            how, left = self._attribute(before, after, qname, qtype)
        return Answered(
            qname, qtype, seen.rcode, seen.reply, seen.ttl, seen.addresses, how, left,
            latency_ms, seen.cname, False, len(reply),
        )  # fmt: skip

    @staticmethod
    def _attribute(
        before: dict[str, float], after: dict[str, float], qname: str, qtype: int
    ) -> tuple[str, tuple[str, ...]]:
        left: list[str] = []
        for key in sorted(after):
            if key.startswith("nodecache_upstream_queries_total{"):
                group = key.split('upstream="', 1)[1].split('"', 1)[0]
                where = "kdns" if group == "cluster" else "upstream"
                count = _delta(after, before, key)
                left += [f"{where} ({group} group, from the metrics)"] * count
        if _delta(after, before, "nodecache_searchpath_autopath_answers_total") > 0:
            return "autopath", tuple(left)
        for mechanism in LOCAL:
            key = f'nodecache_searchpath_local_answers_total{{mechanism="{mechanism}"}}'
            if _delta(after, before, key) > 0:
                return mechanism, tuple(left)
        if _delta(after, before, "nodecache_cache_hits_total") > 0 and not left:
            return "cache", ()
        if left:
            return left[0].split(" ", 1)[0], tuple(left)
        return "server", ()
