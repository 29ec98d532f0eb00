"""kdns configuration: one frozen value built from flags and the YAML config file, validated once.

``ZoneConfig`` is the part that decides answers (it reaches the synthesis code); ``Config`` adds
what only the edges use (listeners, sources, logging). ``ConfigError`` always names the field.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kdns.names import Name, text_to_name
from kdns.resolver.config import parse_address

POD_MODES: Final = ("disabled", "insecure", "verified")
REVERSE_ZONES: Final[tuple[Name, ...]] = (("in-addr", "arpa"), ("ip6", "arpa"))


class ConfigError(ValueError):
    """A configuration value is invalid; ``field`` names it as the user wrote it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """Everything that changes what kdns answers."""

    zones: tuple[Name, ...] = (("cluster", "local"),)
    """Served cluster zones; the first is primary (PTR targets point into it)."""
    ttl_s: int = 5
    """TTL of every synthesized record (R12.2); also the SOA MINIMUM."""
    pods: str = "insecure"
    """Pod records: disabled | insecure | verified (R7.2). kubeadm's default is insecure."""
    endpoint_pod_names: bool = False
    """Name endpoints without a hostname after their pod (R13.3)."""
    namespaces: frozenset[str] | None = None
    """Only these namespaces are served; None serves all (R13.1)."""
    dns_service: tuple[str, str] = ("kube-system", "kube-dns")
    """The Service whose name and ClusterIPs are the zone's NS and glue (R10.1)."""
    fallback_glue: tuple[str, ...] = ()
    """Glue for ``ns.dns.<zone>`` when ``dns_service`` does not exist (specific listen IPs)."""

    @property
    def primary_zone(self) -> Name:
        return self.zones[0]

    @property
    def all_zones(self) -> tuple[Name, ...]:
        """Cluster zones, then the reverse zones (PTR is answered for known IPs only)."""
        return self.zones + REVERSE_ZONES


@dataclass(frozen=True, slots=True)
class Config:
    """The whole kdns server configuration."""

    zone: ZoneConfig = field(default_factory=ZoneConfig)
    listen: tuple[tuple[str, int], ...] = (("0.0.0.0", 53),)
    manifests: tuple[str, ...] = ()
    max_udp_size: int = 1232
    """Ceiling on the EDNS payload we honour (DNS flag day 2020 default)."""
    tcp_idle_timeout_s: float = 10.0
    log_level: str = "INFO"
    upstream: tuple[tuple[str, int], ...] | None = None
    """Where names outside our zones are forwarded: None reads ``resolv_conf``'s nameservers;
    an empty tuple (``--upstream none``) disables forwarding (they get REFUSED)."""
    resolv_conf: str = "/etc/resolv.conf"
    kubeconfig: str | None = None
    context: str | None = None
    health_listen: tuple[str, int] | None = ("0.0.0.0", 8080)
    """/health, /ready, /metrics; None disables the endpoint."""
    startup_timeout_s: float = 5.0
    """Serve anyway after this long if the initial lists have not completed (R8.2)."""
    forward_workers: int = 32
    """Forwarded names (and ExternalName chases): upstream fetches running at once."""
    forward_max_pending: int = 1024
    """Forwarded queries waiting on the upstream at once; more are SERVFAIL (or stale) at once."""
    forward_max_queue_wait_s: float = 2.0
    """A forwarded query that waited this long for a worker is dropped, not answered late
    (``kdns.resolver.config.ResolverConfig.max_queue_wait_s`` says why 2 s)."""
    forward_max_refreshes: int = 4
    """Prefetches and stale refreshes of forwarded names at once (always leaving a worker)."""


def parse_listen(value: str, field_name: str = "listen") -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(field_name, f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(field_name, f"{host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(field_name, f"port must be 0-65535, got {port_text!r}")
    return host, int(port_text)


def parse_server(value: str, field_name: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT``, ``V6`` or ``[V6]:PORT``; the port defaults to 53. The syntax is the
    resolver core's (``parse_address``); a server must be an IP (DNS cannot find DNS)."""
    try:
        host, port = parse_address(value)
        return str(ipaddress.ip_address(host)), port
    except ValueError as error:
        raise ConfigError(field_name, f"expected IP[:PORT], got {value!r} ({error})") from None


def parse_zone(value: str, field_name: str = "zone") -> Name:
    zone = text_to_name(value)
    if not zone:
        raise ConfigError(field_name, "the root zone cannot be served")
    for label in zone:
        if not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label):
            raise ConfigError(field_name, f"{value!r} is not a valid domain name")
    return zone


def string_list(values: Mapping[str, Any], key: str) -> list[str]:
    """A setting that is one string or a list of strings (a repeatable flag): as a list;
    empty when unset. kdns's and nodecache's config builders share it."""
    raw = values.get(key)
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ConfigError(key, "expected a string or a list of strings")
    return list(raw)


def build_config(values: Mapping[str, Any]) -> Config:
    """Validate merged settings (config file overlaid by flags) into a ``Config``.

    Keys are the long flag names with ``_`` for ``-``: zone, ttl, pods, endpoint_pod_names,
    namespaces, listen, manifests, max_udp_size, tcp_idle_timeout, log_level, dns_service,
    upstream, resolv_conf, forward_workers, forward_max_pending, forward_max_queue_wait,
    forward_max_refreshes.
    """
    known = {
        "zone", "ttl", "pods", "endpoint_pod_names", "namespaces", "listen", "manifests",
        "max_udp_size", "tcp_idle_timeout", "log_level", "dns_service", "upstream", "resolv_conf",
        "kubeconfig", "context", "health_listen", "startup_timeout", "forward_workers",
        "forward_max_pending", "forward_max_queue_wait", "forward_max_refreshes",
    }  # fmt: skip
    for key in values:
        if key not in known:
            raise ConfigError(key, "unknown setting")

    def strings(key: str, default: list[str]) -> list[str]:
        return string_list(values, key) if values.get(key) is not None else default

    def integer(key: str, default: int, low: int, high: int) -> int:
        raw = values.get(key, default)
        if raw is None:
            return default
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(key, f"expected an integer, got {raw!r}")
        if not low <= raw <= high:
            raise ConfigError(key, f"must be between {low} and {high}, got {raw}")
        return raw

    zones = tuple(parse_zone(z) for z in strings("zone", ["cluster.local"]))
    if len(set(zones)) != len(zones):
        raise ConfigError("zone", "a zone is listed twice")
    pods = values.get("pods", "insecure") or "insecure"
    if pods not in POD_MODES:
        raise ConfigError("pods", f"must be one of {', '.join(POD_MODES)}, got {pods!r}")
    epn = values.get("endpoint_pod_names", False)
    if not isinstance(epn, bool):
        raise ConfigError("endpoint_pod_names", f"expected true or false, got {epn!r}")
    namespaces_list = strings("namespaces", [])
    namespaces = frozenset(namespaces_list) if namespaces_list else None
    listen = tuple(parse_listen(v) for v in strings("listen", ["0.0.0.0:53"]))
    dns_service_text = values.get("dns_service", "kube-system/kube-dns")
    if not isinstance(dns_service_text, str) or dns_service_text.count("/") != 1:
        raise ConfigError("dns_service", f"expected NAMESPACE/NAME, got {dns_service_text!r}")
    ns_part, name_part = dns_service_text.split("/")
    glue = tuple(host for host, _ in listen if not ipaddress.ip_address(host).is_unspecified)
    idle = values.get("tcp_idle_timeout", 10.0)
    if isinstance(idle, bool) or not isinstance(idle, int | float) or idle <= 0:
        raise ConfigError("tcp_idle_timeout", f"expected a positive number, got {idle!r}")
    log_level = str(values.get("log_level", "INFO") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError("log_level", f"unknown level {log_level!r}")
    upstream_values = strings("upstream", [])
    upstream: tuple[tuple[str, int], ...] | None
    if not upstream_values:
        upstream = None
    elif upstream_values == ["none"]:
        upstream = ()
    else:
        upstream = tuple(parse_server(v, "upstream") for v in upstream_values)
    resolv_conf = values.get("resolv_conf", "/etc/resolv.conf")
    if not isinstance(resolv_conf, str) or not resolv_conf:
        raise ConfigError("resolv_conf", f"expected a path, got {resolv_conf!r}")
    optional_paths: dict[str, str | None] = {}
    for key in ("kubeconfig", "context"):
        raw = values.get(key)
        if raw is not None and (not isinstance(raw, str) or not raw):
            raise ConfigError(key, f"expected a non-empty string, got {raw!r}")
        optional_paths[key] = raw
    health_text = values.get("health_listen", "0.0.0.0:8080")
    if not isinstance(health_text, str):
        raise ConfigError("health_listen", f"expected HOST:PORT or none, got {health_text!r}")
    health_listen = None if health_text == "none" else parse_listen(health_text, "health_listen")
    startup = values.get("startup_timeout", 5.0)
    if isinstance(startup, bool) or not isinstance(startup, int | float) or startup < 0:
        raise ConfigError("startup_timeout", f"expected seconds >= 0, got {startup!r}")
    queue_wait = values.get("forward_max_queue_wait", 2.0)
    if queue_wait is None:
        queue_wait = 2.0
    if isinstance(queue_wait, bool) or not isinstance(queue_wait, int | float) or queue_wait <= 0:
        raise ConfigError(
            "forward_max_queue_wait", f"expected a positive number of seconds, got {queue_wait!r}"
        )
    zone_config = ZoneConfig(
        zones=zones,
        ttl_s=integer("ttl", 5, 0, 3600),
        pods=pods,
        endpoint_pod_names=epn,
        namespaces=namespaces,
        dns_service=(ns_part, name_part),
        fallback_glue=glue,
    )
    return Config(
        zone=zone_config,
        listen=listen,
        manifests=tuple(strings("manifests", [])),
        max_udp_size=integer("max_udp_size", 1232, 512, 65535),
        tcp_idle_timeout_s=float(idle),
        log_level=log_level,
        upstream=upstream,
        resolv_conf=resolv_conf,
        kubeconfig=optional_paths["kubeconfig"],
        context=optional_paths["context"],
        health_listen=health_listen,
        startup_timeout_s=float(startup),
        forward_workers=integer("forward_workers", 32, 1, 4096),
        forward_max_pending=integer("forward_max_pending", 1024, 1, 1_000_000),
        forward_max_queue_wait_s=float(queue_wait),
        forward_max_refreshes=integer("forward_max_refreshes", 4, 0, 4096),
    )
