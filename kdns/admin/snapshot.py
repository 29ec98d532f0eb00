"""kdns answering from a cluster snapshot, offline, and the answerer of ``kdns explain``.

``ClusterDNS`` is kdns itself: the snapshot loaded the way ``kdns serve --manifests`` loads it,
compiled into the same answer table, and asked through the same ``Responder``, so every answer
is kdns's real one (R1-R14). Names outside the cluster zones are what kdns would forward: they
go to ``Outside``.

``KdnsAlone`` is a pod whose nameserver is kdns (no node cache): every query leaves the node
for kdns, and kdns forwards the names outside its zones upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from kdns import wire
from kdns.admin.lookup import FORWARDED, Answered, observe
from kdns.admin.outside import Outside
from kdns.config import ZoneConfig
from kdns.dns import names as zone
from kdns.names import split_zone, text_to_name
from kdns.resolver import message
from kdns.runtime import Runtime
from kdns.serve.protocol import Responder
from kdns.source.manifests import Snapshot

QTYPE_TEXT: Final = {wire.A: "A", wire.AAAA: "AAAA", wire.SOA: "SOA"}


@dataclass(frozen=True, slots=True)
class Latency:
    """The round trips the latency estimate assumes (milliseconds)."""

    node_ms: float = 0.2
    """Pod to the node's cache and back."""
    kdns_ms: float = 1.0
    """To kdns through the Service (another node, usually) and back."""
    upstream_ms: float = 20.0
    """To the node's or kdns's upstream resolvers and back."""


DEFAULT_LATENCY: Final = Latency()


class ClusterDNS:
    """kdns's answers for one snapshot (module docstring)."""

    def __init__(self, snapshot: Snapshot, config: ZoneConfig, outside: Outside) -> None:
        self.config = config
        self.outside = outside
        self._responder = Responder(wire.TCP_MAX_SIZE)
        runtime = Runtime(config, self._responder)
        runtime.replace(snapshot.state.objects())

    def served(self, qname: str) -> bool:
        """Is ``qname`` in one of kdns's zones (the cluster zones and the reverse zones)?"""
        return split_zone(text_to_name(qname), self.config.all_zones) is not None

    def reply(self, qname: str, qtype: int) -> tuple[bytes, bool]:
        """The reply bytes to (``qname``, ``qtype``), and whether it is an assumption (a name
        outside the zones, answered by ``Outside``)."""
        if not self.served(qname):
            outside = self.outside.reply(qname, qtype)
            return outside.packet, outside.assumed
        packet = message.make_query(0, zone.to_wire(qname), qtype, wire.CLASS_IN, udp_size=None)
        reply = self._responder.answer(packet, tcp=True)
        if not isinstance(reply, bytes):
            raise ValueError(f"kdns dropped the query {qname} {QTYPE_TEXT.get(qtype, qtype)}")
        return reply, False


class KdnsAlone:
    """The ``lookup.Answerer`` of a pod that asks kdns directly (module docstring)."""

    def __init__(self, dns: ClusterDNS, latency: Latency = DEFAULT_LATENCY) -> None:
        self.dns = dns
        self.latency = latency

    def ask(self, qname: str, qtype: int) -> Answered:
        packet, assumed = self.dns.reply(qname, qtype)
        seen = observe(packet, qtype)
        query = f"{qname} {QTYPE_TEXT.get(qtype, str(qtype))}"
        left = (f"kdns {query}",)
        latency = self.latency.kdns_ms
        how = "kdns"
        if not self.dns.served(qname):
            left = (f"kdns {query}{FORWARDED}",)
            latency += self.latency.upstream_ms
            how = "kdns, forwarded upstream"
        return Answered(
            qname, qtype, seen.rcode, seen.reply, seen.ttl, seen.addresses, how, left, latency,
            seen.cname, assumed or self.dns.outside.any_assumed(seen.chain), len(packet),
        )  # fmt: skip
