"""The slim cluster model: frozen records holding only the fields DNS needs.

Every source (a snapshot on disk, the live API watcher) converts Kubernetes objects into these
records at its edge; nothing past the source ever sees a raw object. ``ClusterState`` is an
immutable snapshot of all of them, keyed by (namespace, name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

ObjectKey = tuple[str, str]
"""(namespace, name); for Namespaces the namespace part is the empty string."""

AddressType = Literal["IPv4", "IPv6", "FQDN"]


@dataclass(frozen=True, slots=True)
class Namespace:
    """A v1 Namespace: only its existence matters (R1.5)."""

    name: str

    @property
    def key(self) -> ObjectKey:
        return ("", self.name)


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One entry of ``spec.ports``; ``name`` is empty for an unnamed port."""

    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class Service:
    """A v1 Service.

    ``cluster_ips`` holds ``spec.clusterIPs`` (or ``spec.clusterIP``) without ``None``;
    ``headless`` is true when the ClusterIP is ``None``.
    """

    namespace: str
    name: str
    type: str = "ClusterIP"
    cluster_ips: tuple[str, ...] = ()
    headless: bool = False
    external_name: str = ""
    ports: tuple[ServicePort, ...] = ()
    publish_not_ready_addresses: bool = False

    @property
    def key(self) -> ObjectKey:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class EndpointPort:
    """One entry of an EndpointSlice's ``ports``; ``port`` is None when unset."""

    name: str
    port: int | None
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of a slice. ``ready`` is None when the condition is unset (ready, R5.2)."""

    addresses: tuple[str, ...]
    ready: bool | None = None
    hostname: str = ""
    target_pod: str = ""
    """``targetRef.name`` when ``targetRef.kind`` is Pod; used by ``--endpoint-pod-names``."""


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """A discovery.k8s.io/v1 EndpointSlice, joined to its Service by ``service_name`` (R5.1)."""

    namespace: str
    name: str
    service_name: str
    address_type: AddressType = "IPv4"
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()
    changed_at: float | None = None
    """``endpoints.kubernetes.io/last-change-trigger-time`` in Unix seconds (set by the
    EndpointSlice controller for Services with a selector); None without it or unparseable."""

    @property
    def key(self) -> ObjectKey:
        return (self.namespace, self.name)

    @property
    def service_key(self) -> ObjectKey:
        return (self.namespace, self.service_name)


@dataclass(frozen=True, slots=True)
class Pod:
    """A v1 Pod: its IPs, for ``--pods verified`` (R7.2), and how it resolves names (the
    search path nodecache's autopath must match: ``nodecache.searchpath.clients``)."""

    namespace: str
    name: str
    ips: tuple[str, ...] = ()
    dns_policy: str = "ClusterFirst"
    """``spec.dnsPolicy`` (the API's default is ClusterFirst)."""
    host_network: bool = False
    dns_searches: tuple[str, ...] = ()
    """``spec.dnsConfig.searches``: extra search domains, which change the pod's search path."""
    node_name: str = ""
    finished: bool = False
    """``status.phase`` is Succeeded or Failed: its IP may already belong to another pod."""

    @property
    def key(self) -> ObjectKey:
        return (self.namespace, self.name)


KubeObject = Namespace | Service | EndpointSlice | Pod
"""Every IP address in these records is in canonical text form (``str(ip_address(x))``):
sources convert at their edge (kdns/source/convert.py), so lookups by address need no parsing."""


@dataclass(frozen=True, slots=True)
class ClusterState:
    """An immutable snapshot of every object kdns serves from, keyed by ``ObjectKey``."""

    namespaces: Mapping[ObjectKey, Namespace] = field(default_factory=dict)
    services: Mapping[ObjectKey, Service] = field(default_factory=dict)
    slices: Mapping[ObjectKey, EndpointSlice] = field(default_factory=dict)
    pods: Mapping[ObjectKey, Pod] = field(default_factory=dict)

    @classmethod
    def from_objects(cls, objects: Iterable[KubeObject]) -> ClusterState:
        namespaces: dict[ObjectKey, Namespace] = {}
        services: dict[ObjectKey, Service] = {}
        slices: dict[ObjectKey, EndpointSlice] = {}
        pods: dict[ObjectKey, Pod] = {}
        for obj in objects:
            if isinstance(obj, Namespace):
                namespaces[obj.key] = obj
            elif isinstance(obj, Service):
                services[obj.key] = obj
            elif isinstance(obj, EndpointSlice):
                slices[obj.key] = obj
            else:
                pods[obj.key] = obj
        return cls(namespaces, services, slices, pods)

    def objects(self) -> list[KubeObject]:
        out: list[KubeObject] = []
        out.extend(self.namespaces.values())
        out.extend(self.services.values())
        out.extend(self.slices.values())
        out.extend(self.pods.values())
        return out
