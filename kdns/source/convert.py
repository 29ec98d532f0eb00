"""Conversion of one raw Kubernetes object (a plain dict) into a ``kdns.model`` record.

This module owns the boundary between untrusted object data -- parsed from a manifest on disk
or from the API server's JSON -- and the slim model. It is pure: no I/O, no logging, no state.
Every field DNS reads is type-checked here, so nothing past this point has to distrust a record;
a bad field raises ``ConvertError`` naming its dotted path (``spec.ports[1].port``).

Only the kinds and API versions DNS serves from are converted (v1 Namespace, Service, Pod and
discovery.k8s.io/v1 EndpointSlice); anything else -- including an EndpointSlice of an older API
version -- yields ``None`` so the caller can count it as skipped rather than fail a whole
snapshot over an object it never needed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from kdns.model import (
    AddressType,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    KubeObject,
    Namespace,
    Pod,
    Service,
    ServicePort,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "SERVICE_NAME_LABEL",
    "USED_KINDS",
    "ConvertError",
    "convert",
]

SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
"""Label joining an EndpointSlice to its Service (R5.1)."""

DEFAULT_NAMESPACE: Final = "default"
SERVICE_TYPES: Final = frozenset({"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"})
PROTOCOLS: Final = ("TCP", "UDP", "SCTP")
ADDRESS_TYPES: Final[tuple[AddressType, ...]] = ("IPv4", "IPv6", "FQDN")


class ConvertError(ValueError):
    """A field of a Kubernetes object is missing or malformed.

    ``field`` is the dotted path inside the object (``spec.ports[0].port``, ``metadata.name``);
    ``str()`` is ``"<field>: <message>"`` so callers can prefix their own location.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- typed accessors -------------------------------------------------------------------------
# A null value is treated exactly like an absent key throughout: YAML writes `key:` for null and
# the API server omits empty fields, and both mean "unset".


def _describe(value: Any) -> str:
    if value is None or isinstance(value, str | int | float | bool):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _mapping(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    """The mapping at ``key``, or an empty one when unset."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConvertError(path, f"expected a mapping, got {_describe(value)}")
    return value


def _list(
    parent: Mapping[str, Any], key: str, path: str, *, required: bool = False
) -> Sequence[Any]:
    value = parent.get(key)
    if value is None:
        if required:
            raise ConvertError(path, "required field is missing")
        return ()
    if not isinstance(value, list | tuple):
        raise ConvertError(path, f"expected a list, got {_describe(value)}")
    return value


def _item_mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConvertError(path, f"expected a mapping, got {_describe(value)}")
    return value


def _str(parent: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
    value = parent.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConvertError(path, f"expected a string, got {_describe(value)}")
    return value


def _required_str(parent: Mapping[str, Any], key: str, path: str) -> str:
    value = parent.get(key)
    if value is None:
        raise ConvertError(path, "required field is missing")
    if not isinstance(value, str) or not value:
        raise ConvertError(path, f"expected a non-empty string, got {_describe(value)}")
    return value


def _bool(parent: Mapping[str, Any], key: str, path: str) -> bool | None:
    value = parent.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise ConvertError(path, f"expected a boolean, got {_describe(value)}")


def _port(value: Any, path: str) -> int:
    # bool is an int subclass; `port: true` is a typo, not port 1.
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    raise ConvertError(path, f"expected an integer 1-65535, got {_describe(value)}")


def _protocol(parent: Mapping[str, Any], path: str) -> str:
    value = _str(parent, "protocol", path, "TCP")
    # The API server rejects other spellings, so "tcp" here means a hand-edited file is wrong.
    if value not in PROTOCOLS:
        raise ConvertError(path, f"expected one of {', '.join(PROTOCOLS)}, got {value!r}")
    return value


def _ip(value: Any, path: str, family: AddressType | None = None) -> str:
    """Validate an IP address and return its canonical text.

    Canonical form matters downstream: the same address spelled two ways (``fd00::0:20`` and
    ``fd00::20``) must join pods to endpoints and collapse duplicate records.
    """
    if not isinstance(value, str):
        raise ConvertError(path, f"expected an IP address string, got {_describe(value)}")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ConvertError(path, f"expected an IP address, got {value!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        raise ConvertError(path, f"expected an IP address without a zone index, got {value!r}")
    if family == "IPv4" and addr.version != 4:
        raise ConvertError(path, f"expected an IPv4 address, got {value!r}")
    if family == "IPv6" and addr.version != 6:
        raise ConvertError(path, f"expected an IPv6 address, got {value!r}")
    return str(addr)


def _metadata(obj: Mapping[str, Any], *, namespaced: bool) -> tuple[str, str]:
    """(namespace, name); namespace is "" for cluster-scoped kinds."""
    if obj.get("metadata") is None:
        raise ConvertError("metadata", "required field is missing")
    meta = _mapping(obj, "metadata", "metadata")
    name = _required_str(meta, "name", "metadata.name")
    if not namespaced:
        return "", name
    # kubectl and the API server put an object without a namespace into the request's
    # namespace; for a snapshot on disk that is "default".
    namespace = _str(meta, "namespace", "metadata.namespace") or DEFAULT_NAMESPACE
    return namespace, name


# --- kinds -----------------------------------------------------------------------------------


def _namespace(obj: Mapping[str, Any]) -> Namespace:
    _, name = _metadata(obj, namespaced=False)
    return Namespace(name)


def _service_port(value: Any, path: str) -> ServicePort:
    entry = _item_mapping(value, path)
    if entry.get("port") is None:
        raise ConvertError(f"{path}.port", "required field is missing")
    return ServicePort(
        name=_str(entry, "name", f"{path}.name"),
        port=_port(entry["port"], f"{path}.port"),
        protocol=_protocol(entry, f"{path}.protocol"),
    )


def _cluster_ips(spec: Mapping[str, Any]) -> tuple[tuple[str, ...], bool]:
    """(cluster_ips, headless) from ``spec.clusterIPs``, falling back to ``spec.clusterIP``."""
    raw: Sequence[Any] = _list(spec, "clusterIPs", "spec.clusterIPs")
    if raw:
        paths = [f"spec.clusterIPs[{i}]" for i in range(len(raw))]
    else:
        single = spec.get("clusterIP")
        # Unset or "" is a Service the API server has not allocated an IP for yet: it is a
        # ClusterIP service with no address, not a headless one.
        if single is None or single == "":
            return (), False
        raw, paths = [single], ["spec.clusterIP"]
    if any(ip == "None" for ip in raw):
        if len(raw) > 1:
            raise ConvertError(
                "spec.clusterIPs", f'"None" must be the only entry, got {list(raw)!r}'
            )
        return (), True
    ips = tuple(_ip(ip, path) for ip, path in zip(raw, paths, strict=True))
    return tuple(dict.fromkeys(ips)), False


def _service(obj: Mapping[str, Any]) -> Service:
    namespace, name = _metadata(obj, namespaced=True)
    spec = _mapping(obj, "spec", "spec")
    svc_type = _str(spec, "type", "spec.type", "ClusterIP")
    if svc_type not in SERVICE_TYPES:
        raise ConvertError(
            "spec.type", f"expected one of {', '.join(sorted(SERVICE_TYPES))}, got {svc_type!r}"
        )
    ports = tuple(
        _service_port(p, f"spec.ports[{i}]")
        for i, p in enumerate(_list(spec, "ports", "spec.ports"))
    )
    publish = bool(_bool(spec, "publishNotReadyAddresses", "spec.publishNotReadyAddresses"))
    if svc_type == "ExternalName":
        # The API server clears clusterIP(s) for ExternalName services, so they are not read.
        return Service(
            namespace=namespace,
            name=name,
            type=svc_type,
            external_name=_required_str(spec, "externalName", "spec.externalName"),
            ports=ports,
            publish_not_ready_addresses=publish,
        )
    cluster_ips, headless = _cluster_ips(spec)
    return Service(
        namespace=namespace,
        name=name,
        type=svc_type,
        cluster_ips=cluster_ips,
        headless=headless,
        ports=ports,
        publish_not_ready_addresses=publish,
    )


def _endpoint(value: Any, path: str, address_type: AddressType) -> Endpoint:
    entry = _item_mapping(value, path)
    addresses: list[str] = []
    for i, addr in enumerate(_list(entry, "addresses", f"{path}.addresses", required=True)):
        addr_path = f"{path}.addresses[{i}]"
        if address_type == "FQDN":
            # FQDN slices are deprecated and ignored by the DNS layer (R5.4); only their shape
            # is checked so a malformed one still points at the right field.
            if not isinstance(addr, str) or not addr:
                raise ConvertError(addr_path, f"expected a non-empty string, got {_describe(addr)}")
            addresses.append(addr)
        else:
            addresses.append(_ip(addr, addr_path, address_type))
    conditions = _mapping(entry, "conditions", f"{path}.conditions")
    target = _mapping(entry, "targetRef", f"{path}.targetRef")
    target_pod = ""
    if _str(target, "kind", f"{path}.targetRef.kind") == "Pod":
        target_pod = _str(target, "name", f"{path}.targetRef.name")
    return Endpoint(
        addresses=tuple(addresses),
        ready=_bool(conditions, "ready", f"{path}.conditions.ready"),
        hostname=_str(entry, "hostname", f"{path}.hostname"),
        target_pod=target_pod,
    )


def _endpoint_port(value: Any, path: str) -> EndpointPort:
    entry = _item_mapping(value, path)
    raw_port = entry.get("port")
    return EndpointPort(
        name=_str(entry, "name", f"{path}.name"),
        # An unset port means "all ports" in the API; the DNS layer decides what that yields.
        port=None if raw_port is None else _port(raw_port, f"{path}.port"),
        protocol=_protocol(entry, f"{path}.protocol"),
    )


def _endpoint_slice(obj: Mapping[str, Any]) -> EndpointSlice:
    namespace, name = _metadata(obj, namespaced=True)
    labels = _mapping(obj["metadata"], "labels", "metadata.labels")
    # A slice without the label is legal (hand-made, or not yet adopted); it joins no Service.
    service_name = _str(labels, SERVICE_NAME_LABEL, f'metadata.labels["{SERVICE_NAME_LABEL}"]')
    raw_type = obj.get("addressType")
    if raw_type is None:
        raise ConvertError("addressType", "required field is missing")
    address_type = next((t for t in ADDRESS_TYPES if t == raw_type), None)
    if address_type is None:
        raise ConvertError(
            "addressType", f"expected one of {', '.join(ADDRESS_TYPES)}, got {_describe(raw_type)}"
        )
    endpoints = tuple(
        _endpoint(e, f"endpoints[{i}]", address_type)
        for i, e in enumerate(_list(obj, "endpoints", "endpoints"))
    )
    ports = tuple(
        _endpoint_port(p, f"ports[{i}]") for i, p in enumerate(_list(obj, "ports", "ports"))
    )
    return EndpointSlice(
        namespace=namespace,
        name=name,
        service_name=service_name,
        address_type=address_type,
        endpoints=endpoints,
        ports=ports,
        changed_at=_trigger_time(obj["metadata"]),
    )


TRIGGER_TIME_ANNOTATION: Final = "endpoints.kubernetes.io/last-change-trigger-time"


def _trigger_time(meta: Mapping[str, Any]) -> float | None:
    """The RFC 3339 trigger time in Unix seconds; None when absent or unreadable (CoreDNS only
    warns and skips the measurement: it is a metric, not a reason to refuse the slice)."""
    annotations = meta.get("annotations")
    if not isinstance(annotations, Mapping):
        return None
    text = annotations.get(TRIGGER_TIME_ANNOTATION)
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def _pod(obj: Mapping[str, Any]) -> Pod:
    namespace, name = _metadata(obj, namespaced=True)
    status = _mapping(obj, "status", "status")
    ips: list[str] = []
    pod_ips = _list(status, "podIPs", "status.podIPs")
    if pod_ips:
        for i, entry in enumerate(pod_ips):
            path = f"status.podIPs[{i}]"
            ips.append(
                _ip(_required_str(_item_mapping(entry, path), "ip", f"{path}.ip"), f"{path}.ip")
            )
    else:
        single = _str(status, "podIP", "status.podIP")
        # Pending pods have no IP yet; that is normal, not an error.
        if single:
            ips.append(_ip(single, "status.podIP"))
    spec = _mapping(obj, "spec", "spec")
    dns_config = _mapping(spec, "dnsConfig", "spec.dnsConfig")
    searches = _list(dns_config, "searches", "spec.dnsConfig.searches")
    for i, search in enumerate(searches):
        if not isinstance(search, str):
            raise ConvertError(
                f"spec.dnsConfig.searches[{i}]", f"expected a string, got {_describe(search)}"
            )
    return Pod(
        namespace=namespace,
        name=name,
        ips=tuple(dict.fromkeys(ips)),
        dns_policy=_str(spec, "dnsPolicy", "spec.dnsPolicy", "ClusterFirst"),
        host_network=bool(_bool(spec, "hostNetwork", "spec.hostNetwork")),
        dns_searches=tuple(searches),
        node_name=_str(spec, "nodeName", "spec.nodeName"),
        finished=_str(status, "phase", "status.phase") in ("Succeeded", "Failed"),
    )


_CONVERTERS: Final[Mapping[tuple[str, str], Callable[[Mapping[str, Any]], KubeObject]]] = {
    ("v1", "Namespace"): _namespace,
    ("v1", "Service"): _service,
    ("discovery.k8s.io/v1", "EndpointSlice"): _endpoint_slice,
    ("v1", "Pod"): _pod,
}

USED_KINDS: Final = frozenset(_CONVERTERS)
"""(apiVersion, kind) pairs that ``convert`` turns into records."""


def convert(obj: Mapping[str, Any]) -> KubeObject | None:
    """Convert one Kubernetes object into a model record.

    Returns None for a (apiVersion, kind) the DNS server does not use; raises ``ConvertError``
    when ``kind``/``apiVersion`` are missing or a used object has a malformed field.
    """
    if not isinstance(obj, Mapping):
        raise ConvertError("<object>", f"expected a mapping, got {_describe(obj)}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ConvertError("kind", f"expected a non-empty string, got {_describe(kind)}")
    api_version = obj.get("apiVersion")
    if not isinstance(api_version, str) or not api_version:
        raise ConvertError(
            "apiVersion", f"expected a non-empty string, got {_describe(api_version)}"
        )
    converter = _CONVERTERS.get((api_version, kind))
    return None if converter is None else converter(obj)
