"""The kube-dns ConfigMap (``kube-system/kube-dns``): ``stubDomains`` and ``upstreamNameservers``.

Clusters that ran kube-dns, and NodeLocal DNSCache to this day, configure forwarding with this
ConfigMap (../shared/docs/nodecache.md §1.3; node-cache's ``configmap.go``):

* ``stubDomains``: a JSON object ``{"corp.example": ["10.0.0.53", "10.0.0.54:5353"]}``; each
  zone is forwarded to its servers (NodeLocal appends one ``cache 30`` + UDP ``forward`` block
  per zone);
* ``upstreamNameservers``: a JSON list ``["8.8.8.8"]`` of at most three servers that replace the
  node's resolv.conf nameservers for names outside every other zone.

This module is the pure part: ConfigMap data in, ``KubeDns`` out, with kube-dns's validation
(``dns/pkg/dns/config``: servers are IP addresses with an optional port, at most three upstream
nameservers, zone names valid DNS names). A malformed ConfigMap raises ``KubeDnsError`` naming
the key; the caller keeps the last good one. ``overlay`` merges it into a server's settings,
where the server's own config file wins: a stub zone the file also lists keeps the file's
servers, and ``upstreamNameservers`` applies only while the file or the flags name no upstream.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

MAX_UPSTREAM_NAMESERVERS: Final = 3
"""kube-dns's limit (``config.go``: "upstreamNameservers cannot have more than three entries")."""

STUB_DOMAINS: Final = "stubDomains"
UPSTREAM_NAMESERVERS: Final = "upstreamNameservers"


class KubeDnsError(ValueError):
    """The ConfigMap cannot be used; ``field`` names the key (``stubDomains.corp.example``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class KubeDns:
    """What the ConfigMap says; empty when it is absent or says nothing."""

    stub_domains: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(zone, servers as HOST or HOST:PORT text), in the ConfigMap's order."""
    upstream_nameservers: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.stub_domains and not self.upstream_nameservers


def parse(data: Mapping[str, str] | None) -> KubeDns:
    """The ConfigMap's ``data``; None (no such ConfigMap) is an empty ``KubeDns``."""
    if not data:
        return KubeDns()
    stubs: list[tuple[str, tuple[str, ...]]] = []
    raw_stubs = _json(data, STUB_DOMAINS)
    if raw_stubs is not None:
        if not isinstance(raw_stubs, dict):
            raise KubeDnsError(STUB_DOMAINS, "expected a JSON object of domain to server list")
        seen: set[str] = set()
        for zone, servers in raw_stubs.items():
            where = f"{STUB_DOMAINS}.{zone}"
            name = _zone(zone, where)
            if name in seen:
                raise KubeDnsError(where, "the domain is listed twice")
            seen.add(name)
            stubs.append((name, _servers(servers, where)))
    upstreams: tuple[str, ...] = ()
    raw_upstreams = _json(data, UPSTREAM_NAMESERVERS)
    if raw_upstreams is not None:
        upstreams = _servers(raw_upstreams, UPSTREAM_NAMESERVERS)
        if len(upstreams) > MAX_UPSTREAM_NAMESERVERS:
            raise KubeDnsError(
                UPSTREAM_NAMESERVERS,
                f"at most {MAX_UPSTREAM_NAMESERVERS} servers (as kube-dns), got {len(upstreams)}",
            )
    return KubeDns(tuple(stubs), upstreams)


def overlay(values: Mapping[str, Any], kube_dns: KubeDns) -> dict[str, Any]:
    """``values`` (a server's merged file + flag settings) with the ConfigMap applied."""
    merged = dict(values)
    if kube_dns.stub_domains:
        own = values.get("stub_domains") or {}
        stubs: dict[Any, Any] = dict(own) if isinstance(own, dict) else {}
        mine = {str(zone).lower().rstrip(".") for zone in stubs}
        for zone, servers in kube_dns.stub_domains:
            if zone not in mine:
                stubs[zone] = list(servers)
        merged["stub_domains"] = stubs
    if kube_dns.upstream_nameservers and not values.get("upstream"):
        merged["upstream"] = list(kube_dns.upstream_nameservers)
    return merged


def _json(data: Mapping[str, str], key: str) -> object:
    text = data.get(key)
    if text is None or not str(text).strip():
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise KubeDnsError(key, f"not valid JSON ({error})") from None


def _zone(zone: object, where: str) -> str:
    if not isinstance(zone, str):
        raise KubeDnsError(where, "the domain is not a string")
    name = zone.lower().rstrip(".")
    labels = name.split(".")
    if not name or any(not label or len(label) > 63 for label in labels) or len(name) > 253:
        raise KubeDnsError(where, f"{zone!r} is not a valid domain name")
    return name


def _servers(raw: object, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise KubeDnsError(where, "expected a non-empty JSON list of servers")
    out = []
    for i, server in enumerate(raw):
        if not isinstance(server, str):
            raise KubeDnsError(f"{where}[{i}]", f"expected a string, got {server!r}")
        _check_server(server, f"{where}[{i}]")
        out.append(server)
    return tuple(out)


def _check_server(text: str, where: str) -> None:
    """An IP, or IP:port (IPv6 with a port in brackets), as kube-dns accepts."""
    host, port = text, None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise KubeDnsError(where, f"{text!r} is not IP or IP:PORT")
        port = rest[1:] or None
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise KubeDnsError(where, f"{text!r}: {host!r} is not an IP address") from None
    if port is not None and (not port.isdigit() or not 0 < int(port) < 65536):
        raise KubeDnsError(where, f"{text!r}: bad port {port!r}")
