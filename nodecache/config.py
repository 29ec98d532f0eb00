"""nodecache configuration: flags and the YAML config file merged into one frozen ``Config``.

This module owns the setting names, their validation and their mapping onto
``kdns.resolver.config.ResolverConfig`` (the resolver core never reads files or argv). Every
error is a ``kdns.config.ConfigError`` whose ``field`` names the setting as the user wrote it
(``serve_stale.verify_timeout_s``, ``stub_domains.corp.example``), so startup exits 2 with it and
a reload logs it and keeps the previous config.

Keys are the long flag names with ``_`` for ``-``; the file may also hold what has no flag
(``FILE_ONLY``). Flags win over the file. Defaults follow NodeLocal DNSCache's shipped Corefile
(../shared/docs/nodecache.md §1.3): cluster and reverse zones go to the cluster DNS over TCP
(``force_tcp``), everything else to the node's resolv.conf nameservers over UDP, success TTLs
capped at 30 s and cluster-zone denials at 5 s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from kdns import kubedns
from kdns.config import (
    QueryLogConfig,
    log_format_of,
    metrics_apart,
    optional_listen,
    parse_listen,
    parse_zone,
    query_log_of,
    string_list,
    tcp_limits,
)
from kdns.kubedns import KubeDnsSettings
from kdns.resolver import forwardconf, resolvconf
from kdns.resolver.config import (
    CLUSTER_TTL,
    OTHER_TTL,
    Address,
    CacheConfig,
    PrefetchConfig,
    ResolverConfig,
    StaleConfig,
    StaleMode,
    Transport,
    UpstreamConfig,
    ZoneTTL,
    parse_address,
)
from kdns.resolver.forwardconf import (
    ConfigError,
    addresses,
    forward_options,
    is_own,
    make,
    no_loop,
    transport_of,
    upstream_group,
)
from kdns.serve.tcplimits import TCPLimits
from nodecache.searchpath import settings as searchpath_settings
from nodecache.searchpath.settings import SearchPathConfig

T = TypeVar("T")

__all__ = [
    "Config",
    "ConfigError",
    "build_config",
    "load_file",
    "resolv_conf_nameservers",
    "show_address",
]

FLAG_SETTINGS: Final = (
    "listen", "cluster_zone", "cluster_upstream", "upstream", "host_resolv_conf",
    "health_listen", "metrics_listen", "max_udp_size", "log_level", "log_format",
    "tcp_max_connections", "tcp_max_per_client", *searchpath_settings.SETTINGS, *kubedns.SETTINGS,
    *("workers", "max_pending", "max_queue_wait_s", "max_refreshes"),
)  # fmt: skip
"""Settings that have a flag (``--cluster-zone`` is ``cluster_zone``)."""

FILE_ONLY: Final = (
    "stub_domains", "reverse_zones", "cluster_transport", "zone_ttls", "default_ttl", "cache",
    "prefetch", "serve_stale", "upstream_options", "forward",
    "tcp_idle_timeout_s", "tcp_write_timeout_s", "tcp_max_queued_bytes", "tcp_max_buffer_bytes",
    "tcp_socket_buffer_bytes", "drain_timeout_s", "query_log",
)  # fmt: skip
"""Settings only the config file holds."""

TCP_KEYS: Final = {
    "tcp_idle_timeout_s": ("idle_timeout_s", "float_s"),
    "tcp_write_timeout_s": ("write_timeout_s", "float_s"),
    "tcp_max_connections": ("max_connections", "int"),
    "tcp_max_per_client": ("max_per_client", "int"),
    "tcp_max_queued_bytes": ("max_queued_bytes", "bytes"),
    "tcp_max_buffer_bytes": ("max_buffer_bytes", "bytes"),
    "tcp_socket_buffer_bytes": ("socket_buffer_bytes", "bytes"),
}
"""nodecache's setting names for the client-side ``TCPLimits`` fields, and their kinds."""

DEFAULT_RESOLV_CONF: Final = "/etc/resolv.conf"
DEFAULT_HEALTH_LISTEN: Final = "0.0.0.0:8080"  # NodeLocal's health port (nodecache.md §1.1)
DEFAULT_METRICS_LISTEN: Final = "0.0.0.0:9253"  # NodeLocal's metrics port
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
RESTART_ONLY: Final = (
    "listen", "health_listen", "metrics_listen", "max_udp_size", "tcp", "log_format",
    "cache.max_entries", "cache.max_bytes", "workers", "searchpath", "kube_dns",
)  # fmt: skip
"""Settings a reload cannot change (bound sockets, the cache's capacity, the pool size): a
reload that changes them logs a warning and keeps the running values."""

# Per section: key -> kind. "int"/"float" are plain numbers; "int_s"/"float_s" are durations in
# seconds that may also be written "100ms", "30s", "5m", "1h"; "bytes" also takes "32Mi".
_TTL_KEYS: Final = {
    "success_min_s": "int_s",
    "success_max_s": "int_s",
    "denial_min_s": "int_s",
    "denial_max_s": "int_s",
}
_CACHE_KEYS: Final = {"max_entries": "int", "max_bytes": "bytes", "servfail_s": "int_s"}
_PREFETCH_KEYS: Final = {
    "enabled": "bool",
    "min_hits": "int",
    "lead_percent": "int",
    "keep_warm_ttls": "int",
    "min_ttl_s": "int_s",
}
_STALE_KEYS: Final = {
    "mode": "mode",
    "max_stale_s": "float_s",
    "ttl_s": "int_s",
    "verify_timeout_s": "float_s",
    "recheck_s": "float_s",
    "prefer_positive": "bool",
}
_UPSTREAM_KEYS: Final = {
    "try_timeout_s": "float_s",
    "overall_timeout_s": "float_s",
    "max_fails": "int",
    "probe_interval_s": "float_s",
    "max_concurrent": "int",
    "tcp_idle_s": "float_s",
    "udp_size": "int",
}

_ROUTE_LIMITS: Final = {
    "workers": "int",
    "max_pending": "int",
    "max_queue_wait_s": "float_s",
    "max_refreshes": "int",
}
"""``ResolverConfig``'s per-route capacity settings (top-level keys and flags)."""


@dataclass(frozen=True, slots=True)
class Config:
    """The whole nodecache configuration: the edges (listeners, health, logging) plus the
    resolver core's ``ResolverConfig``."""

    resolver: ResolverConfig
    """Routing, cache, prefetch, serve-stale and upstream knobs, as the core takes them."""
    listen: tuple[Address, ...]
    """UDP and TCP addresses served (production: 169.254.20.10:53 and the kube-dns ClusterIP)."""
    health_listen: Address | None = ("0.0.0.0", 8080)
    """``/health``, ``/ready``, ``/metrics``; None (``none``) turns the endpoint off."""
    metrics_listen: Address | None = ("0.0.0.0", 9253)
    """``/metrics`` alone, on NodeLocal's port; None (``none``) turns it off."""
    max_udp_size: int = 1232
    """Ceiling on the EDNS payload honoured for clients (DNS flag day 2020)."""
    tcp: TCPLimits = dataclasses.field(default_factory=TCPLimits)
    """Client TCP connections: idle and write timeouts, per-client and global caps, buffers."""
    drain_timeout_s: float = 5.0
    """On SIGTERM, how long queries already waiting for an upstream may take to finish."""
    log_level: str = "INFO"
    log_format: str = "text"
    """text | json (kdns.logs); restart-only."""
    query_log: QueryLogConfig = dataclasses.field(default_factory=QueryLogConfig)
    """The query log (kdns.querylog); a reload applies it, as does ``POST /querylog``."""
    config_file: str | None = None
    """The YAML file the settings came from; watched for changes."""
    host_resolv_conf: str = DEFAULT_RESOLV_CONF
    upstream_source: str = "flags"
    """Where ``resolver.upstream`` came from: flags, config, ``resolv.conf PATH`` or none."""
    notes: tuple[str, ...] = ()
    """Warnings found while building (e.g. resolv.conf entries skipped), for the log."""
    searchpath: SearchPathConfig = dataclasses.field(default_factory=SearchPathConfig)
    """ndots absorption: autopath and local NXDOMAIN (``nodecache.searchpath``)."""
    kube_dns: KubeDnsSettings = dataclasses.field(default_factory=KubeDnsSettings)
    """Which kube-dns ConfigMap to follow (``kdns.kubedns``); restart-only."""

    def restart_only_changes(self, new: Config) -> list[str]:
        """The restart-only settings that differ in ``new``."""
        changed = []
        for name in RESTART_ONLY:
            if _get(self, name) != _get(new, name):
                changed.append(name)
        return changed

    def keeping_restart_only(self, new: Config) -> Config:
        """``new`` with this config's restart-only settings: what a reload really applies."""
        cache = dataclasses.replace(
            new.resolver.cache,
            max_entries=self.resolver.cache.max_entries,
            max_bytes=self.resolver.cache.max_bytes,
        )
        resolver = dataclasses.replace(new.resolver, cache=cache, workers=self.resolver.workers)
        return dataclasses.replace(
            new,
            resolver=resolver,
            listen=self.listen,
            health_listen=self.health_listen,
            metrics_listen=self.metrics_listen,
            log_format=self.log_format,
            max_udp_size=self.max_udp_size,
            tcp=self.tcp,
            searchpath=self.searchpath,
            kube_dns=self.kube_dns,
        )


def _get(config: Config, name: str) -> object:
    if name.startswith("cache."):
        return getattr(config.resolver.cache, name.removeprefix("cache."))
    if name == "workers":
        return config.resolver.workers
    return getattr(config, name)


def show_address(host: str, port: int) -> str:
    """``127.0.0.1:53`` or ``[fd00::a]:53``, as logs and /ready print addresses."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- files -------------------------------------------------------------------------------------


def load_file(path: str) -> dict[str, Any]:
    """The settings in a YAML config file (keys with ``-`` read as ``_``)."""
    import yaml  # only needed with --config

    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ConfigError("config", f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError("config", f"{path} is not valid YAML: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("config", f"{path} must hold a mapping of settings")
    return {str(key).replace("-", "_"): value for key, value in loaded.items()}


def resolv_conf_nameservers(text: str) -> tuple[list[str], list[str]]:
    """(nameserver addresses, skipped entries with why) from resolv.conf text, in file order;
    the parsing is kdns's (``kdns.resolver.resolvconf``), shared with kdns forwarding."""
    conf = resolvconf.parse(text)
    return list(conf.nameservers), list(conf.skipped)


# --- building -----------------------------------------------------------------------------------


def build_config(
    values: Mapping[str, Any],
    *,
    config_file: str | None = None,
    read_text: Callable[[str], str] = lambda path: Path(path).read_text(),
) -> Config:
    """Validate merged settings (the config file overlaid by the flags) into a ``Config``.

    ``read_text`` reads the host resolv.conf (injected for tests)."""
    for key in values:
        if key not in FLAG_SETTINGS and key not in FILE_ONLY:
            raise ConfigError(key, "unknown setting")
    notes: list[str] = []

    listen_texts = string_list(values, "listen")
    if not listen_texts:
        raise ConfigError(
            "listen",
            "at least one IP:PORT is required (in production 169.254.20.10:53 and the kube-dns "
            "ClusterIP)",
        )
    listen = tuple(parse_listen(text, "listen") for text in listen_texts)
    if len(set(listen)) != len(listen):
        raise ConfigError("listen", "an address is listed twice")

    health = optional_listen(values, "health_listen", DEFAULT_HEALTH_LISTEN)
    # deploy/nodecache puts health on 9253, NodeLocal's metrics port: one listener serves both.
    metrics_listen = metrics_apart(
        optional_listen(values, "metrics_listen", DEFAULT_METRICS_LISTEN), health
    )

    cluster_zones = tuple(string_list(values, "cluster_zone") or ["cluster.local"])
    for text in cluster_zones:
        parse_zone(text, "cluster_zone")
    if len({z.lower().rstrip(".") for z in cluster_zones}) != len(cluster_zones):
        raise ConfigError("cluster_zone", "a zone is listed twice")
    reverse_zones = None
    if values.get("reverse_zones") is not None:
        reverse_zones = tuple(string_list(values, "reverse_zones"))
        for text in reverse_zones:
            parse_zone(text, "reverse_zones")

    options = _section(values, "upstream_options", _UPSTREAM_KEYS)
    # Checked once here, so an error names upstream_options rather than the first group.
    make("upstream_options", UpstreamConfig, options, servers=(("127.0.0.1", 53),))
    cluster_transport = transport_of(values.get("cluster_transport", "tcp"), "cluster_transport")
    # CoreDNS forward options (kdns.resolver.forwardconf), for the "." and stub-domain blocks;
    # the cluster block keeps cluster_transport and upstream_options, as NodeLocal's Corefile.
    forward = {**options, **forward_options(values.get("forward"))}

    cluster_texts = string_list(values, "cluster_upstream")
    if not cluster_texts:
        raise ConfigError(
            "cluster_upstream",
            "required: the cluster DNS (kdns) as HOST:PORT, e.g. the kube-dns-upstream ClusterIP",
        )
    cluster_servers = addresses(cluster_texts, "cluster_upstream")
    no_loop(cluster_servers, listen, "cluster_upstream")
    cluster = upstream_group(cluster_servers, options, cluster_transport, "cluster_upstream")

    resolv_path = values.get("host_resolv_conf", DEFAULT_RESOLV_CONF) or DEFAULT_RESOLV_CONF
    if not isinstance(resolv_path, str):
        raise ConfigError("host_resolv_conf", f"expected a path, got {resolv_path!r}")
    # Read once: its nameservers are the default upstreams, its search domains autopath's.
    try:
        host_conf: resolvconf.ResolvConf | OSError = resolvconf.parse(read_text(resolv_path))
    except OSError as error:
        host_conf = error
    upstream_texts = string_list(values, "upstream")
    upstream: UpstreamConfig | None
    if [t.lower() for t in upstream_texts] == ["none"]:
        upstream, source = None, "none"
    elif upstream_texts:
        servers = addresses(upstream_texts, "upstream")
        no_loop(servers, listen, "upstream")
        upstream = upstream_group(servers, forward, Transport.UDP, "upstream")
        source = "flags or config"
    else:
        upstream, source = _from_resolv_conf(resolv_path, host_conf, listen, forward, notes)

    stub_domains = forwardconf.stub_domains(values.get("stub_domains"), forward, listen)
    zone_ttls, default_ttl = _ttls(values, cluster_zones)
    cache_values = _section(values, "cache", _CACHE_KEYS)
    prefetch_values = _section(values, "prefetch", _PREFETCH_KEYS)
    stale_values = _section(values, "serve_stale", _STALE_KEYS)
    cache = make("cache", CacheConfig, cache_values, zone_ttls=zone_ttls, default_ttl=default_ttl)
    prefetch = make("prefetch", PrefetchConfig, prefetch_values)
    stale = make("serve_stale", StaleConfig, stale_values)

    resolver_options: dict[str, Any] = {
        "cluster_zones": cluster_zones,
        "cluster_upstream": cluster,
        "stub_domains": stub_domains,
        "upstream": upstream,
        "cache": cache,
        "prefetch": prefetch,
        "stale": stale,
    }
    if reverse_zones is not None:
        resolver_options["reverse_zones"] = reverse_zones
    # Per-route capacity (kdns.resolver.lanes): each route gets its own of each.
    for key, kind in _ROUTE_LIMITS.items():
        if values.get(key) is not None:
            resolver_options[key] = _number(values[key], key, kind)
    resolver = make("", ResolverConfig, resolver_options)

    log_level = str(values.get("log_level") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            "log_level", f"unknown level {log_level!r} (one of {', '.join(LOG_LEVELS)})"
        )
    max_udp_size = _number(values.get("max_udp_size", 1232), "max_udp_size", "int")
    if not 512 <= max_udp_size <= 65535:
        raise ConfigError("max_udp_size", f"must be between 512 and 65535, got {max_udp_size}")
    tcp = tcp_limits(
        {
            key: _number(values[key], key, kind)
            for key, (_field, kind) in TCP_KEYS.items()
            if values.get(key) is not None
        },
        {key: name for key, (name, _kind) in TCP_KEYS.items()},
    )
    drain = _positive(values, "drain_timeout_s", 5.0)
    searchpath = searchpath_settings.searchpath_config(
        values,
        _host_search(resolv_path, host_conf, notes),
        excluded_zones=tuple(name for name, _group in stub_domains),
    )
    return Config(
        resolver=resolver,
        listen=listen,
        health_listen=health,
        metrics_listen=metrics_listen,
        max_udp_size=int(max_udp_size),
        tcp=tcp,
        drain_timeout_s=drain,
        log_level=log_level,
        log_format=log_format_of(values),
        query_log=query_log_of(values),
        config_file=config_file,
        host_resolv_conf=resolv_path,
        upstream_source=source,
        notes=tuple(notes),
        searchpath=searchpath,
        kube_dns=kubedns.settings_of(values),
    )


# --- helpers ------------------------------------------------------------------------------------


def _from_resolv_conf(
    path: str,
    conf: resolvconf.ResolvConf | OSError,
    listen: tuple[Address, ...],
    options: dict[str, Any],
    notes: list[str],
) -> tuple[UpstreamConfig, str]:
    if isinstance(conf, OSError):
        raise ConfigError(
            "upstream",
            f"none given and {path} cannot be read ({conf.strerror}); pass --upstream HOST:PORT, "
            "--upstream none, or --host-resolv-conf PATH",
        )
    found, skipped = conf.nameservers, conf.skipped
    notes.extend(f"{path}: skipped nameserver {entry}" for entry in skipped)
    servers = []
    for address in found:
        server = parse_address(address)
        if is_own(server, listen):
            # The node may already point at us (kubelet --cluster-dns on the host): skip it.
            notes.append(f"{path}: skipped nameserver {address}: it is our own listen address")
        elif server not in servers:
            servers.append(server)
    if not servers:
        raise ConfigError(
            "upstream",
            f"none given and {path} lists no usable nameserver; pass --upstream HOST:PORT or "
            "--upstream none (external names are then REFUSED)",
        )
    return upstream_group(tuple(servers), options, Transport.UDP, "upstream"), f"resolv.conf {path}"


def _host_search(
    path: str, conf: resolvconf.ResolvConf | OSError, notes: list[str]
) -> tuple[str, ...]:
    """The node's search domains (the kubelet appends them to every ClusterFirst pod's list)."""
    if isinstance(conf, OSError):
        notes.append(f"{path}: cannot read the host search domains ({conf.strerror})")
        return ()
    return conf.search


def _ttls(
    values: Mapping[str, Any], cluster_zones: tuple[str, ...]
) -> tuple[tuple[tuple[str, ZoneTTL], ...], ZoneTTL]:
    """Per-zone TTL floors and caps; an entry only names what it changes from the zone's
    default (``CLUSTER_TTL`` for a cluster zone, else ``default_ttl``)."""
    default = make(
        "default_ttl",
        ZoneTTL,
        _section(values, "default_ttl", _TTL_KEYS),
        base=OTHER_TTL,
    )
    raw = values.get("zone_ttls")
    if raw is None:
        return (), default
    if not isinstance(raw, dict):
        raise ConfigError("zone_ttls", "expected a mapping of zone to TTL settings")
    clusters = {z.lower().rstrip(".") for z in cluster_zones}
    table = []
    for zone_name, spec in raw.items():
        where = f"zone_ttls.{zone_name}"
        if not isinstance(zone_name, str):
            raise ConfigError("zone_ttls", f"zone {zone_name!r} is not a string")
        if zone_name.strip(".") != "":
            parse_zone(zone_name, where)
        settings = _section({where: spec}, where, _TTL_KEYS)
        base = CLUSTER_TTL if zone_name.lower().rstrip(".") in clusters else default
        table.append((zone_name, make(where, ZoneTTL, settings, base=base)))
    return tuple(table), default


def _section(values: Mapping[str, Any], key: str, kinds: Mapping[str, str]) -> dict[str, Any]:
    """A nested mapping, each value type-checked (ranges are the dataclasses' job)."""
    return {
        name: _number(value, where, kinds[name])
        for name, value, where in forwardconf.section_items(values.get(key), key, kinds)
    }


def _number(value: object, where: str, kind: str) -> Any:
    if kind == "mode":
        try:
            return StaleMode(str(value).lower())
        except ValueError:
            modes = ", ".join(mode.value for mode in StaleMode)
            raise ConfigError(where, f"expected one of {modes}, got {value!r}") from None
    return forwardconf.number(value, where, kind)


def _positive(values: Mapping[str, Any], key: str, default: float) -> float:
    raw = values.get(key)
    seconds = default if raw is None else float(_number(raw, key, "float_s"))
    if seconds <= 0:
        raise ConfigError(key, f"must be > 0, got {seconds:g}")
    return seconds
