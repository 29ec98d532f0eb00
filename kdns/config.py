"""kdns configuration: one frozen value built from flags and the YAML config file, validated once.

``ZoneConfig`` is the part that decides answers (it reaches the synthesis code); ``Config`` adds
what only the edges use (listeners, sources, logging). ``ConfigError`` always names the field.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kdns import custom, kubedns, rewrite
from kdns.names import Name
from kdns.resolver import forwardconf
from kdns.resolver.config import Transport, UpstreamConfig, parse_address
from kdns.resolver.forwardconf import ConfigError as ConfigError
from kdns.resolver.forwardconf import parse_zone as parse_zone
from kdns.resolver.forwardconf import string_list as string_list
from kdns.serve.tcplimits import TCPLimits
from kdns.zoneconfig import REVERSE_ZONES as REVERSE_ZONES
from kdns.zoneconfig import ZoneConfig as ZoneConfig

POD_MODES: Final = ("disabled", "insecure", "verified")
LOADBALANCE_MODES: Final = ("round_robin", "off")
LOG_FORMATS: Final = ("text", "json")
QUERY_LOG_FORMATS: Final = ("text", "json")
RCODE_CLASSES: Final = ("success", "denial", "error")

QueryLogNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class QueryLogConfig:
    """The query log's settings (kdns.querylog has what each means)."""

    enabled: bool = False
    format: str = "text"
    rcode: frozenset[str] = frozenset()
    """Rcode classes to log; empty logs all."""
    suffix: tuple[str, ...] = ()
    """Name suffixes (lower case, trailing dot); empty logs all names."""
    client: tuple[QueryLogNetwork, ...] = ()
    """Client networks; empty logs every client."""
    sample: int = 1
    rate: float = 100.0
    output: str = "stderr"

    def describe(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "format": self.format,
            "rcode": sorted(self.rcode),
            "suffix": list(self.suffix),
            "client": [str(n) for n in self.client],
            "sample": self.sample,
            "rate": self.rate,
            "output": self.output,
        }


_KEYS: Final = ("enabled", "format", "rcode", "suffix", "client", "sample", "rate", "output")


def parse_query_log(
    raw: Mapping[str, Any], base: QueryLogConfig | None = None, prefix: str = "query_log"
) -> QueryLogConfig:
    """``base`` (default: all defaults) with the settings in ``raw``; ConfigError names the
    field as ``query_log.KEY``. Values may be YAML values or the strings of a query string."""
    config = base or QueryLogConfig()
    changes: dict[str, Any] = {}
    for key, value, name in forwardconf.section_items(raw, prefix, _KEYS):
        if key == "enabled":
            changes[key] = _boolean(value, name)
        elif key == "format":
            if value not in QUERY_LOG_FORMATS:
                formats = ", ".join(QUERY_LOG_FORMATS)
                raise ConfigError(name, f"expected one of {formats}, got {value!r}")
            changes[key] = value
        elif key == "rcode":
            classes = _strings(value, name)
            wrong = [c for c in classes if c not in (*RCODE_CLASSES, "all")]
            if wrong:
                raise ConfigError(name, f"unknown class {wrong[0]!r} (success, denial, error, all)")
            changes[key] = frozenset() if "all" in classes else frozenset(classes)
        elif key == "suffix":
            changes[key] = tuple(_suffix(text, name) for text in _strings(value, name))
        elif key == "client":
            changes[key] = tuple(_network(text, name) for text in _strings(value, name))
        elif key == "sample":
            changes[key] = _number(value, name, int, 1)
        elif key == "rate":
            changes[key] = float(_number(value, name, float, 0))
        else:
            if not isinstance(value, str) or not value:
                raise ConfigError(name, f"expected stderr or a file path, got {value!r}")
            changes[key] = value
    return dataclasses.replace(config, **changes)


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "true",
        "1",
        "on",
        "yes",
        "false",
        "0",
        "off",
        "no",
    ):
        return value.lower() in ("true", "1", "on", "yes")
    raise ConfigError(name, f"expected true or false, got {value!r}")


def _strings(value: Any, name: str) -> list[str]:
    if isinstance(value, str):  # a query string's comma list, or one YAML string
        return [part.strip() for part in value.split(",") if part.strip()]
    return string_list({name: value}, name)


def _number(value: Any, name: str, kind: type[int] | type[float], low: float) -> int | float:
    if isinstance(value, bool):
        raise ConfigError(name, f"expected a number, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"expected a number, got {value!r}") from None
    if number < low:
        raise ConfigError(name, f"must be at least {low:g}, got {value!r}")
    return number


def _suffix(text: str, name: str) -> str:
    labels = [label for label in text.lower().rstrip(".").split(".")]
    if not text.strip(".") or any(not label or len(label) > 63 for label in labels):
        raise ConfigError(name, f"{text!r} is not a domain name")
    return ".".join(labels) + "."


def _network(text: str, name: str) -> QueryLogNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(name, f"{text!r} is not an IP network (CIDR)") from None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole kdns server configuration."""

    zone: ZoneConfig = field(default_factory=ZoneConfig)
    listen: tuple[tuple[str, int], ...] = (("0.0.0.0", 53),)
    manifests: tuple[str, ...] = ()
    max_udp_size: int = 1232
    """Ceiling on the EDNS payload we honour (DNS flag day 2020 default)."""
    tcp: TCPLimits = field(default_factory=TCPLimits)
    """TCP connection limits: idle and write timeouts, per-client and global caps, buffers."""
    log_level: str = "INFO"
    upstream: tuple[tuple[str, int], ...] | None = None
    """Where names outside our zones are forwarded: None reads ``resolv_conf``'s nameservers;
    an empty tuple (``--upstream none``) disables forwarding (they get REFUSED)."""
    resolv_conf: str = "/etc/resolv.conf"
    kubeconfig: str | None = None
    context: str | None = None
    health_listen: tuple[str, int] | None = ("0.0.0.0", 8080)
    """/health, /ready, /metrics; None disables the endpoint."""
    metrics_listen: tuple[str, int] | None = ("0.0.0.0", 9153)
    """/metrics alone, on CoreDNS's port; None disables it (/metrics stays on health_listen)."""
    log_format: str = "text"
    """text | json (kdns.logs)."""
    query_log: QueryLogConfig = field(default_factory=QueryLogConfig)
    """The query log at start (kdns.querylog); ``POST /querylog`` changes it at runtime."""
    startup_timeout_s: float = 5.0
    """Serve anyway after this long if the initial lists have not completed (R8.2)."""
    transfer_to: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """Client networks allowed to transfer the cluster zones (AXFR/IXFR over TCP); none when
    empty."""
    forward_workers: int = 32
    """Forwarded names (and ExternalName chases): upstream fetches running at once."""
    forward_max_pending: int = 1024
    """Forwarded queries waiting on the upstream at once; more are SERVFAIL (or stale) at once."""
    forward_max_queue_wait_s: float = 2.0
    """A forwarded query that waited this long for a worker is dropped, not answered late
    (``kdns.resolver.config.ResolverConfig.max_queue_wait_s`` says why 2 s)."""
    forward_max_refreshes: int = 4
    """Prefetches and stale refreshes of forwarded names at once (always leaving a worker)."""
    forward: dict[str, Any] = field(default_factory=dict)
    """The ``forward:`` section (CoreDNS forward options) as ``UpstreamConfig`` keyword
    arguments (``kdns.resolver.forwardconf``), for the default upstream and every stub domain."""
    stub_domains: tuple[tuple[str, UpstreamConfig], ...] = ()
    """Zone → its own servers and options (``stub_domains:``); the longest zone wins."""
    kube_dns: kubedns.KubeDnsSettings = field(default_factory=kubedns.KubeDnsSettings)
    """Which kube-dns ConfigMap's stubDomains / upstreamNameservers to follow (``kdns.kubedns``,
    ``kdns.forwarding``); off unless set."""


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


def optional_listen(values: Mapping[str, Any], key: str, default: str) -> tuple[str, int] | None:
    """A ``HOST:PORT`` setting that ``none`` turns off (health_listen, metrics_listen)."""
    text = values.get(key)
    if text is None:
        text = default
    if not isinstance(text, str):
        raise ConfigError(key, f"expected HOST:PORT or none, got {text!r}")
    return None if text.lower() == "none" else parse_listen(text, key)


def metrics_apart(
    metrics: tuple[str, int] | None, health: tuple[str, int] | None
) -> tuple[str, int] | None:
    """``metrics_listen`` unless the health endpoint already holds that port (the same address,
    or the same port with either address a wildcard): then None, because the health endpoint
    serves ``/metrics`` too, and a second listener there would clash with it."""
    if metrics is None or health is None or metrics[1] == 0 or metrics[1] != health[1]:
        return metrics
    wildcard = ("0.0.0.0", "::")
    if metrics[0] == health[0] or metrics[0] in wildcard or health[0] in wildcard:
        return None
    return metrics


def query_log_of(values: Mapping[str, Any]) -> QueryLogConfig:
    """The ``query_log`` setting: a mapping of the query log's keys (kdns.querylog)."""
    raw = values.get("query_log")
    if raw is None:
        return QueryLogConfig()
    if not isinstance(raw, Mapping):
        raise ConfigError("query_log", f"expected a mapping of settings, got {raw!r}")
    return parse_query_log(raw)


def log_format_of(values: Mapping[str, Any]) -> str:
    """The ``log_format`` setting: text (the default) or json."""
    raw = values.get("log_format") or "text"
    if not isinstance(raw, str) or raw.lower() not in LOG_FORMATS:
        raise ConfigError("log_format", f"must be one of {', '.join(LOG_FORMATS)}, got {raw!r}")
    return raw.lower()


def parse_server(value: str, field_name: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT``, ``V6`` or ``[V6]:PORT``; the port defaults to 53. The syntax is the
    resolver core's (``parse_address``); a server must be an IP (DNS cannot find DNS)."""
    try:
        host, port = parse_address(value)
        return str(ipaddress.ip_address(host)), port
    except ValueError as error:
        raise ConfigError(field_name, f"expected IP[:PORT], got {value!r} ({error})") from None


def boolean(values: Mapping[str, Any], key: str, default: bool = False) -> bool:
    """A true/false setting; ``default`` when unset."""
    raw = values.get(key)
    if raw is None:
        return default
    if not isinstance(raw, bool):
        raise ConfigError(key, f"expected true or false, got {raw!r}")
    return raw


def custom_records(
    values: Mapping[str, Any], zones: tuple[Name, ...], ttl_s: int, hosts_ttl: int
) -> custom.CustomRecords:
    """``records``, ``hosts`` and ``hosts_file`` parsed together; errors name the line."""
    reverse = boolean(values, "hosts_reverse", default=True)
    records = [(f"records[{i}]", line) for i, line in enumerate(string_list(values, "records"))]
    hosts = [(f"hosts[{i}]", line) for i, line in enumerate(string_list(values, "hosts"))]
    path = values.get("hosts_file")
    if path is not None:
        if not isinstance(path, str) or not path:
            raise ConfigError("hosts_file", f"expected a path, got {path!r}")
        try:
            with open(path, encoding="utf-8") as hosts_file:
                lines = hosts_file.read().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError("hosts_file", f"cannot read {path}: {error}") from None
        hosts = [(f"hosts_file {path} line {n}", line) for n, line in enumerate(lines, 1)] + hosts
    try:
        return custom.build(records, hosts, ttl_s, hosts_ttl, reverse, zones + REVERSE_ZONES)
    except custom.RecordError as error:
        raise ConfigError(error.where, error.message) from None


def transfer_networks(raw: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``transfer: {to: [CIDR, ...]}`` (CoreDNS ``transfer { to ... }``); a bare IP is a /32
    or /128. ``*`` is not accepted: the zone lists every Service, so name who may copy it."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or set(raw) - {"to"}:
        raise ConfigError("transfer", f"expected a mapping with the key 'to', got {raw!r}")
    networks = []
    for i, text in enumerate(string_list(raw, "to")):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"transfer.to[{i}]", f"{text!r} is not an IP network") from None
    return tuple(networks)


def rewrite_rules(values: Mapping[str, Any]) -> rewrite.Rules:
    rules: list[rewrite.Rule] = []
    for i, text in enumerate(string_list(values, "rewrite")):
        try:
            rules.append(rewrite.parse_rule(text))
        except rewrite.RewriteError as error:
            raise ConfigError(f"rewrite[{i}]", f"{text!r}: {error}") from None
    return rewrite.Rules(tuple(rules))


TCP_KEYS: Final = {
    "tcp_idle_timeout": "idle_timeout_s",
    "tcp_write_timeout": "write_timeout_s",
    "tcp_max_connections": "max_connections",
    "tcp_max_per_client": "max_per_client",
    "tcp_max_queued_bytes": "max_queued_bytes",
    "tcp_max_buffer_bytes": "max_buffer_bytes",
    "tcp_socket_buffer_bytes": "socket_buffer_bytes",
}
"""kdns's setting names for the ``TCPLimits`` fields."""


def tcp_limits(settings: Mapping[str, Any], keys: Mapping[str, str]) -> TCPLimits:
    """``TCPLimits`` from type-checked ``settings`` (by setting name; absent ones default);
    ``keys`` maps setting names to fields, so a range error names the setting as written."""
    fields = {keys[key]: value for key, value in settings.items()}
    try:
        return TCPLimits(**fields)
    except ValueError as error:
        field_name, _, message = str(error).partition(" ")
        key = next(key for key, name in keys.items() if name == field_name)
        raise ConfigError(key, message) from None


def build_config(values: Mapping[str, Any]) -> Config:
    """Validate merged settings (config file overlaid by flags) into a ``Config``.

    Keys are the long flag names with ``_`` for ``-``: zone, ttl, pods, endpoint_pod_names,
    namespaces, listen, manifests, max_udp_size, log_level, log_format, dns_service, upstream,
    resolv_conf, health_listen, metrics_listen, loadbalance, the ``TCP_KEYS``
    (tcp_idle_timeout, tcp_max_per_client, ...), and the custom records: records, hosts,
    hosts_file, hosts_ttl, hosts_reverse; rewrite; ignore_empty_service, noendpoints; transfer;
    forward_workers, forward_max_pending, forward_max_queue_wait, forward_max_refreshes;
    forward (CoreDNS forward options), stub_domains (``kdns.resolver.forwardconf``);
    kube_dns_configmap, kube_dns_configmap_dir (``kdns.kubedns``).
    """
    known = {
        "zone", "ttl", "pods", "endpoint_pod_names", "namespaces", "listen", "manifests",
        "max_udp_size", "log_level", "dns_service", "upstream", "resolv_conf",
        "kubeconfig", "context", "health_listen", "startup_timeout", "records", "hosts",
        "hosts_file", "hosts_ttl", "hosts_reverse", "rewrite", "ignore_empty_service",
        "noendpoints", "transfer", "loadbalance", "metrics_listen", "log_format", "query_log",
        *TCP_KEYS, "forward_workers", "forward_max_pending", "forward_max_queue_wait",
        "forward_max_refreshes", "forward", "stub_domains", *kubedns.SETTINGS,
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
    epn = boolean(values, "endpoint_pod_names")
    ignore_empty = boolean(values, "ignore_empty_service")
    noendpoints = boolean(values, "noendpoints")
    if ignore_empty and noendpoints:
        raise ConfigError(
            "ignore_empty_service",
            "cannot be combined with noendpoints (every ClusterIP Service would be NXDOMAIN)",
        )
    loadbalance = values.get("loadbalance", "round_robin")
    if loadbalance not in LOADBALANCE_MODES:
        raise ConfigError(
            "loadbalance", f"must be one of {', '.join(LOADBALANCE_MODES)}, got {loadbalance!r}"
        )
    namespaces_list = strings("namespaces", [])
    namespaces = frozenset(namespaces_list) if namespaces_list else None
    listen = tuple(parse_listen(v) for v in strings("listen", ["0.0.0.0:53"]))
    dns_service_text = values.get("dns_service", "kube-system/kube-dns")
    if not isinstance(dns_service_text, str) or dns_service_text.count("/") != 1:
        raise ConfigError("dns_service", f"expected NAMESPACE/NAME, got {dns_service_text!r}")
    ns_part, name_part = dns_service_text.split("/")
    glue = tuple(host for host, _ in listen if not ipaddress.ip_address(host).is_unspecified)
    tcp_settings: dict[str, Any] = {}
    for key, name in TCP_KEYS.items():
        raw = values.get(key)
        if raw is None:
            continue
        seconds = name.endswith("_s")
        if isinstance(raw, bool) or not isinstance(raw, int | float if seconds else int):
            kind = "a number of seconds" if seconds else "an integer"
            raise ConfigError(key, f"expected {kind}, got {raw!r}")
        tcp_settings[key] = float(raw) if seconds else raw
    tcp = tcp_limits(tcp_settings, TCP_KEYS)
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
    health_listen = optional_listen(values, "health_listen", "0.0.0.0:8080")
    metrics_listen = metrics_apart(
        optional_listen(values, "metrics_listen", "0.0.0.0:9153"), health_listen
    )
    startup = values.get("startup_timeout", 5.0)
    if isinstance(startup, bool) or not isinstance(startup, int | float) or startup < 0:
        raise ConfigError("startup_timeout", f"expected seconds >= 0, got {startup!r}")
    ttl_s = integer("ttl", 5, 0, 3600)
    hosts_ttl = integer("hosts_ttl", custom.HOSTS_TTL, 0, 2**31 - 1)
    queue_wait = values.get("forward_max_queue_wait", 2.0)
    if queue_wait is None:
        queue_wait = 2.0
    if isinstance(queue_wait, bool) or not isinstance(queue_wait, int | float) or queue_wait <= 0:
        raise ConfigError(
            "forward_max_queue_wait", f"expected a positive number of seconds, got {queue_wait!r}"
        )
    forward = forwardconf.forward_options(values.get("forward"))
    # Checked once here (the default upstream may come from resolv.conf only at start), so a
    # range error names forward.FIELD rather than surfacing when forwarding starts.
    forwardconf.upstream_group((("192.0.2.1", 53),), forward, Transport.UDP, "forward")
    stubs = forwardconf.stub_domains(values.get("stub_domains"), forward, listen)
    zone_config = ZoneConfig(
        zones=zones,
        ttl_s=ttl_s,
        pods=pods,
        endpoint_pod_names=epn,
        ignore_empty_service=ignore_empty,
        noendpoints=noendpoints,
        namespaces=namespaces,
        dns_service=(ns_part, name_part),
        fallback_glue=glue,
        loadbalance=loadbalance,
        custom=custom_records(values, zones, ttl_s, hosts_ttl),
        rewrite=rewrite_rules(values),
    )
    return Config(
        zone=zone_config,
        listen=listen,
        manifests=tuple(strings("manifests", [])),
        max_udp_size=integer("max_udp_size", 1232, 512, 65535),
        tcp=tcp,
        log_level=log_level,
        upstream=upstream,
        resolv_conf=resolv_conf,
        kubeconfig=optional_paths["kubeconfig"],
        context=optional_paths["context"],
        health_listen=health_listen,
        metrics_listen=metrics_listen,
        log_format=log_format_of(values),
        query_log=query_log_of(values),
        startup_timeout_s=float(startup),
        transfer_to=transfer_networks(values.get("transfer")),
        forward_workers=integer("forward_workers", 32, 1, 4096),
        forward_max_pending=integer("forward_max_pending", 1024, 1, 1_000_000),
        forward_max_queue_wait_s=float(queue_wait),
        forward_max_refreshes=integer("forward_max_refreshes", 4, 0, 4096),
        forward=forward,
        stub_domains=stubs,
        kube_dns=kubedns.settings_of(values),
    )
