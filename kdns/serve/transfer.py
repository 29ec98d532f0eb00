"""Zone transfer of the cluster zones (AXFR, and IXFR answered with the whole zone as RFC 1995
section 4 allows) to an allow-list of client networks, over TCP only.

``ZoneTransfer.answer(packet, peer)`` is the TCP handler when ``transfer.to`` is set. A transfer
question from an allowed client gets a ``Stream``: the zone's SOA, every record of the zone (what
``kdns zonefile`` prints, from one published table, so the copy is consistent), and the SOA
again, in messages of at most ``message_size`` bytes, each built only when the transport asks
for it (the transport yields to other connections between messages). Everyone else, and every
other question, goes to ``Responder.answer``, which answers AXFR and IXFR REFUSED; UDP never
comes here. At most ``max_concurrent`` transfers run at once (more are REFUSED), so secondaries
cannot take the server's CPU from its other clients.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Final

from kdns import wire
from kdns.dns.query import Query, screen
from kdns.names import name_to_text
from kdns.serve.protocol import Responder
from kdns.serve.reply import Peer, TCPReply
from kdns.state import Index
from kdns.synth.resolve import soa_record
from kdns.zonefile import records

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MESSAGE_SIZE: Final = 16384
"""Bytes per transfer message: well under TCP's 65535, and small enough that building one
(a few hundred records) never holds the event loop for long."""
MAX_CONCURRENT: Final = 2


def client_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The peer's address, with an IPv4-mapped IPv6 address (a dual-stack socket) as IPv4."""
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _asks_transfer(packet: bytes) -> bool:
    """Whether the question's type is AXFR or IXFR (a cheap look; ``screen`` checks the rest)."""
    end = packet.find(b"\x00", 12)
    return end > 0 and packet[end + 1 : end + 3] in (b"\x00\xfc", b"\x00\xfb")


class ZoneTransfer:
    """The TCP handler that adds zone transfers in front of a ``Responder``."""

    def __init__(
        self,
        responder: Responder,
        allow: tuple[Network, ...],
        max_concurrent: int = MAX_CONCURRENT,
        message_size: int = MESSAGE_SIZE,
    ) -> None:
        self.responder = responder
        self.allow = allow
        self.max_concurrent = max_concurrent
        self.message_size = message_size
        self.active = 0
        self._lock = threading.Lock()

    def allowed(self, host: str) -> bool:
        address = client_address(host)
        return any(address in network for network in self.allow)

    def answer(self, packet: bytes, peer: Peer) -> TCPReply:
        if not _asks_transfer(packet):
            return self.responder.answer(packet, tcp=True)
        screened = screen(packet, self.responder.max_udp_size, allow_transfer=True)
        if not isinstance(screened, Query):
            return screened
        query = screened
        if not self.allowed(peer[0]):
            logger.info("zone transfer refused to %s (not in transfer.to)", peer[0])
            return query.error(wire.REFUSED)
        table = self.responder.table
        if table is None or not table.index.synced:
            return query.error(wire.SERVFAIL)  # the zone is not complete yet (R8.2)
        index = table.index
        zones = index.config.zones
        if query.question.name not in zones:
            return query.error(wire.NOTAUTH)
        with self._lock:
            if self.active >= self.max_concurrent:
                logger.warning(
                    "zone transfer refused to %s: %d already running", peer[0], self.active
                )
                return query.error(wire.REFUSED)
            self.active += 1
        logger.info("zone transfer of %s to %s", name_to_text(query.question.name), peer[0])
        zone_index = zones.index(query.question.name)
        return _Transfer(self._messages(query, index, zone_index), self._release)

    def _release(self) -> None:
        with self._lock:
            self.active -= 1

    def _messages(self, query: Query, index: Index, zone_index: int) -> Iterator[bytes]:
        zone = index.config.zones[zone_index]
        soa = soa_record(index, zone_index)
        body = (rr for rr in records(index, zone) if rr.rtype != wire.SOA)
        rrs = itertools.chain((soa,), body, (soa,))
        room = self.message_size - query.question.end - len(query.opt)
        prefix, question, opt = query.packet[:2], query.question_bytes, query.opt
        for batch, count in wire.encode_batches(zone, rrs, room):
            head = wire.heads(wire.NOERROR, True, False, count, 0, 0)[query.head_index]
            yield prefix + head + question + batch + opt


class _Transfer(Iterator[bytes]):
    """The messages of one transfer; frees its slot once, when done, failed or closed (even
    if never started, which a bare generator's ``close`` would not run any code for)."""

    def __init__(self, messages: Iterator[bytes], release: Callable[[], None]) -> None:
        self._messages = messages
        self._release: Callable[[], None] | None = release

    def __next__(self) -> bytes:
        try:
            return next(self._messages)
        except StopIteration:
            self.close()
            raise
        except Exception:
            logger.exception("zone transfer failed; the client gets an incomplete zone")
            self.close()
            raise StopIteration from None

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
