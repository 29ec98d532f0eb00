"""Forwarding settings as kdns's and nodecache's config files spell them, parsed once for both.

This module owns the parsing of what a forward needs: server lists, stub domains
(``{zone: [servers]}`` or ``{zone: {servers: [...], <forward options>}}``) and the CoreDNS
``forward`` options under their Corefile names (``policy``, ``force_tcp``, ``prefer_udp``,
``max_concurrent``, ``health_check``, ``expire``, ``except``, ``max_fails``), mapped onto
``UpstreamConfig`` fields. It also holds the value helpers both config builders share (durations
such as ``30s``, byte counts such as ``32Mi``, dataclass construction whose ``ValueError`` is
turned into a ``ConfigError`` naming the field as the user wrote it).

``kdns.config`` re-exports ``ConfigError``, ``string_list`` and ``parse_zone``; they live here so
the resolver side can raise them without importing the server's config module (which imports
this one).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, TypeVar

from kdns.dns.names import Labels as Name
from kdns.dns.names import text_to_labels as text_to_name
from kdns.resolver.config import Address, Policy, Transport, UpstreamConfig, parse_address

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is invalid; ``field`` names it as the user wrote it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


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


def parse_zone(value: str, field_name: str = "zone") -> Name:
    zone = text_to_name(value)
    if not zone:
        raise ConfigError(field_name, "the root zone cannot be served")
    for label in zone:
        if not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label):
            raise ConfigError(field_name, f"{value!r} is not a valid domain name")
    return zone


# --- values ------------------------------------------------------------------------------------


def section_items(raw: object, where: str, known: Iterable[str]) -> Iterator[tuple[str, Any, str]]:
    """(key, value, ``where.key``) of a nested settings mapping; a key not in ``known`` is an
    error naming it. None (unset) has no items."""
    names = tuple(known)
    if raw is None:
        return
    if not isinstance(raw, Mapping):
        raise ConfigError(where, f"expected a mapping with keys {', '.join(names)}")
    for key, value in raw.items():
        name = f"{where}.{key}"
        if str(key) not in names:
            raise ConfigError(name, f"unknown setting (known: {', '.join(names)})")
        yield str(key), value, name


_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_BYTES: Final = re.compile(r"^\s*(\d+)\s*(Ki|Mi|Gi|k|M|G)?B?\s*$")
_BYTES_UNITS: Final = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "k": 1000, "M": 10**6, "G": 10**9}


def number(value: object, where: str, kind: str) -> Any:
    """``value`` checked as ``kind``: "bool", "int", "float", "bytes" (also ``32Mi``), or
    "int_s"/"float_s" (seconds, also ``100ms``, ``30s``, ``5m``, ``1h``)."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(where, f"expected true or false, got {value!r}")
        return value
    if isinstance(value, bool):
        raise ConfigError(where, f"expected a number, got {value!r}")
    if kind == "bytes" and isinstance(value, str):
        match = _BYTES.match(value)
        if match is None:
            raise ConfigError(
                where, f"expected a byte count such as 33554432 or 32Mi, got {value!r}"
            )
        return int(match.group(1)) * _BYTES_UNITS.get(match.group(2) or "", 1)
    if kind.endswith("_s") and isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ConfigError(
                where, f"expected seconds or a duration such as 1h, 30s, 100ms, got {value!r}"
            )
        value = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if kind in ("int", "int_s", "bytes"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(where, f"expected a whole number, got {value!r}")
        return value
    if not isinstance(value, int | float):
        raise ConfigError(where, f"expected a number, got {value!r}")
    return float(value)


def make(where: str, cls: type[T], settings: Mapping[str, Any], **extra: Any) -> T:
    """``cls(**settings, **extra)`` (or ``replace(base, ...)``), with its ValueError turned into
    a ConfigError naming ``where.field`` when the message starts with a field name."""
    base = extra.pop("base", None)
    try:
        if base is not None:
            replaced: T = dataclasses.replace(base, **settings, **extra)
            return replaced
        return cls(**settings, **extra)
    except ValueError as error:
        message = str(error)
        first = message.split(" ", 1)[0]
        names = (
            {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        )
        if first in names:
            path = f"{where}.{first}" if where else first
            raise ConfigError(path, message.split(" ", 1)[1]) from None
        raise ConfigError(where or "config", message) from None


# --- servers -----------------------------------------------------------------------------------


def addresses(texts: list[str], field_name: str) -> tuple[Address, ...]:
    """``IP``, ``IP:PORT``, ``[V6]:PORT`` texts; a server must be an IP (DNS cannot find DNS)."""
    servers = []
    for text in texts:
        try:
            host, port = parse_address(text)
            ipaddress.ip_address(host)
        except ValueError as error:
            raise ConfigError(field_name, f"{text!r}: {error}") from None
        servers.append((host, port))
    if len(set(servers)) != len(servers):
        raise ConfigError(field_name, "a server is listed twice")
    return tuple(servers)


def is_own(server: Address, listen: tuple[Address, ...]) -> bool:
    """Whether ``server`` is one of our listeners: forwarding there would loop."""
    host, port = server
    for listen_host, listen_port in listen:
        if port != listen_port:
            continue
        if ipaddress.ip_address(host) == ipaddress.ip_address(listen_host):
            return True
        if (
            ipaddress.ip_address(listen_host).is_unspecified
            and ipaddress.ip_address(host).is_loopback
        ):
            return True
    return False


def no_loop(servers: tuple[Address, ...], listen: tuple[Address, ...], field_name: str) -> None:
    for server in servers:
        if is_own(server, listen):
            raise ConfigError(
                field_name,
                f"{server[0]}:{server[1]} is one of our own listen addresses (a forwarding loop; "
                "for the cluster DNS use a second Service such as kube-dns-upstream)",
            )


def transport_of(value: object, field_name: str) -> Transport:
    try:
        return Transport(str(value).lower())
    except ValueError:
        raise ConfigError(field_name, f"expected udp or tcp, got {value!r}") from None


def upstream_group(
    servers: tuple[Address, ...], options: Mapping[str, Any], transport: Transport, where: str
) -> UpstreamConfig:
    """One group; ``options`` (UpstreamConfig keyword arguments) win over ``transport``, the
    group's default, when they hold one (``force_tcp`` / ``prefer_udp``)."""
    return make(where, UpstreamConfig, {"transport": transport, **options}, servers=servers)


# --- CoreDNS forward options -------------------------------------------------------------------

FORWARD_KEYS: Final = (
    "policy", "force_tcp", "prefer_udp", "max_concurrent", "health_check", "expire", "except",
    "max_fails",
)  # fmt: skip
"""The CoreDNS ``forward`` options understood, under their Corefile names."""


def forward_options(raw: object, where: str = "forward") -> dict[str, Any]:
    """A ``forward:`` mapping → ``UpstreamConfig`` keyword arguments (only those it sets):

    * ``policy``: sequential | random | round_robin → ``policy``;
    * ``force_tcp: true`` → ``transport: tcp``; ``prefer_udp: true`` → ``transport: udp``
      (UDP, retried over TCP when truncated: our UDP transport never follows the client's
      protocol, so this is what CoreDNS's ``prefer_udp`` means); both at once is an error;
    * ``max_concurrent`` → ``max_concurrent`` (in-flight queries per group; over it SERVFAIL);
    * ``health_check`` (duration) → ``probe_interval_s``;
    * ``expire`` (duration) → ``tcp_idle_s``: a pooled upstream TCP connection unused this
      long is closed (CoreDNS's ``expire`` of cached connections);
    * ``except`` (zones) → ``except_zones``: names at or under them are not forwarded here;
    * ``max_fails`` → ``max_fails``.
    """
    out: dict[str, Any] = {}
    for key, value, name in section_items(raw, where, FORWARD_KEYS):
        if key == "policy":
            try:
                out["policy"] = Policy(str(value).lower())
            except ValueError:
                known = ", ".join(p.value for p in Policy)
                raise ConfigError(name, f"expected one of {known}, got {value!r}") from None
        elif key in ("force_tcp", "prefer_udp"):
            if number(value, name, "bool"):
                if "transport" in out:
                    raise ConfigError(name, "cannot be combined with force_tcp / prefer_udp")
                out["transport"] = Transport.TCP if key == "force_tcp" else Transport.UDP
        elif key in ("max_concurrent", "max_fails"):
            count = value if isinstance(value, int) and not isinstance(value, bool) else None
            if count is None or count <= 0:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
            out[key] = count
        elif key in ("health_check", "expire"):
            seconds = number(value, name, "float_s")
            if seconds <= 0:
                raise ConfigError(name, f"must be a positive duration, got {value!r}")
            out["probe_interval_s" if key == "health_check" else "tcp_idle_s"] = seconds
        else:
            texts = value.split() if isinstance(value, str) else string_list({name: value}, name)
            zones = []
            for text in texts:
                if text.strip(".") and parse_zone(text, name):
                    zones.append(text.lower().rstrip("."))
                else:
                    raise ConfigError(name, "the root zone cannot be excepted")
            out["except_zones"] = tuple(zones)
    return out


def stub_domains(
    raw: object,
    options: Mapping[str, Any],
    listen: tuple[Address, ...],
    where: str = "stub_domains",
) -> tuple[tuple[str, UpstreamConfig], ...]:
    """``{zone: [servers]}`` or ``{zone: {servers: [...], transport: udp|tcp, <forward
    option>: ...}}``; ``options`` (UpstreamConfig keyword arguments: the shared ``forward``
    section) apply to every zone, a zone's own forward options win. UDP by default, as
    NodeLocal's stubDomainBlock (``cache 30`` + a UDP ``forward``)."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "expected a mapping of zone to servers")
    stubs = []
    seen = set()
    for zone_name, spec in raw.items():
        here = f"{where}.{zone_name}"
        if not isinstance(zone_name, str):
            raise ConfigError(where, f"zone {zone_name!r} is not a string")
        parse_zone(zone_name, here)
        normalized = zone_name.lower().rstrip(".")
        if normalized in seen:
            raise ConfigError(here, "the zone is listed twice")
        seen.add(normalized)
        own: dict[str, Any] = {}
        if isinstance(spec, Mapping):
            extra = {k: v for k, v in spec.items() if k not in ("servers", "transport")}
            own = forward_options(extra, here)
            if "transport" in spec:
                # The zone's own word wins over the shared forward section's force_tcp.
                if "transport" in own:
                    raise ConfigError(f"{here}.transport", "cannot be combined with force_tcp")
                own["transport"] = transport_of(spec["transport"], f"{here}.transport")
            spec = spec.get("servers")
        texts = string_list({here: spec}, here)
        if not texts:
            raise ConfigError(here, "no servers")
        servers = addresses(texts, here)
        no_loop(servers, listen, here)
        group = upstream_group(servers, {**options, **own}, Transport.UDP, here)
        stubs.append((zone_name, group))
    return tuple(stubs)
