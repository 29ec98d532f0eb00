"""The cluster store: objects in, an immutable ``Index`` and the set of changed owners out.

Sources (snapshot files, the API watcher) call ``upsert``/``delete``/``replace_all`` from one
thread. The store keeps derived views up to date incrementally: a change touches only the
Service it belongs to, the IPs it claims for PTR, and the pods it names. ``publish`` copies the
views into a frozen ``Index`` for the answer code and hands back the dirty owners, so the answer
table rebuilds only their entries.

Owners are small tuples: ``("svc", ns, name)``, ``("ns", name)``, ``("ptr", ip)``,
``("pod", ns, ip)`` and ``("apex",)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from kdns.model import (
    ClusterState,
    EndpointPort,
    EndpointSlice,
    KubeObject,
    Namespace,
    ObjectKey,
    Pod,
    Service,
)
from kdns.names import Name, dashed_ip, looks_like_ip
from kdns.zoneconfig import ZoneConfig

Owner = tuple[str, ...]
APEX: Owner = ("apex",)


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    """One ready address of a Service, with the name it is served under (R4.4, R13.3)."""

    ip: str
    name: str
    ports: tuple[EndpointPort, ...]
    """The slice's ports; empty means none declared (A/AAAA only, no SRV: R4.7)."""


@dataclass(frozen=True, slots=True)
class ServiceView:
    """A Service joined with its ready endpoints from every slice (R5.1-R5.4)."""

    service: Service
    endpoints: tuple[EndpointRecord, ...] = ()

    @property
    def is_external(self) -> bool:
        return self.service.type == "ExternalName"


class PtrClaim(NamedTuple):
    """What one Service says an IP's PTR should point at."""

    cluster_ip: bool
    """True when the IP is the Service's own ClusterIP (it wins over endpoint claims)."""
    targets: tuple[Name, ...]


PtrClaims = tuple[ObjectKey, PtrClaim] | dict[ObjectKey, PtrClaim]
"""One Service's claim on an IP, or several Services' claims by Service key."""


@dataclass(frozen=True, slots=True)
class Index:
    """What the answer code reads: an immutable view of the cluster at one generation."""

    config: ZoneConfig
    serial: int
    synced: bool
    namespaces: frozenset[str]
    """Exposed namespaces: the Namespace exists and the ``namespaces`` option allows it (R1.5)."""
    services: Mapping[ObjectKey, ServiceView]
    reverse: Mapping[str, tuple[Name, ...]]
    """IP -> PTR targets relative to nothing (absolute names in the primary zone)."""
    pod_namespaces: Mapping[str, frozenset[str]]
    """IP -> namespaces of the Pods holding it (``--pods verified``)."""
    ns_name: Name
    """Relative to the zone: ``(svc, ns, "svc")`` of the DNS Service, or ``("ns", "dns")``."""
    glue: tuple[str, ...]

    def exposed(self, namespace: str) -> bool:
        return namespace in self.namespaces


def endpoint_name(config: ZoneConfig, hostname: str, target_pod: str, ip: str) -> str:
    if hostname:
        return hostname.lower()
    if config.endpoint_pod_names and target_pod and len(target_pod) < 64:
        return target_pod.lower()
    return dashed_ip(ip)


def build_view(
    config: ZoneConfig, service: Service, slices: Iterable[EndpointSlice]
) -> ServiceView:
    if config.noendpoints:
        return ServiceView(service)  # CoreDNS noendpoints: no endpoint is ever served
    records: list[EndpointRecord] = []
    seen: set[tuple[str, str, tuple[EndpointPort, ...]]] = set()
    for piece in sorted(slices, key=lambda s: s.name):
        if piece.address_type == "FQDN":
            continue
        for endpoint in piece.endpoints:
            ready = endpoint.ready is None or endpoint.ready or service.publish_not_ready_addresses
            if not ready:
                continue
            for ip in endpoint.addresses:
                name = endpoint_name(config, endpoint.hostname, endpoint.target_pod, ip)
                identity = (ip, name, piece.ports)
                if identity in seen:
                    continue
                seen.add(identity)
                records.append(EndpointRecord(ip, name, piece.ports))
    return ServiceView(service, tuple(records))


@dataclass
class Store:
    """The mutable, single-writer cluster store."""

    config: ZoneConfig
    clock: Callable[[], float] = time.time
    namespace_objects: dict[str, Namespace] = field(default_factory=dict)
    services: dict[ObjectKey, Service] = field(default_factory=dict)
    slices: dict[ObjectKey, EndpointSlice] = field(default_factory=dict)
    pods: dict[ObjectKey, Pod] = field(default_factory=dict)
    synced: bool = True
    _slices_by_service: dict[ObjectKey, set[ObjectKey]] = field(default_factory=dict)
    _views: dict[ObjectKey, ServiceView] = field(default_factory=dict)
    _ptr_claims: dict[str, PtrClaims] = field(default_factory=dict)
    _reverse: dict[str, tuple[Name, ...]] = field(default_factory=dict)
    _pod_namespaces: dict[str, dict[ObjectKey, str]] = field(default_factory=dict)
    _chasing: set[Owner] = field(default_factory=set)
    _dirty_services: set[ObjectKey] = field(default_factory=set)
    _dirty_owners: set[Owner] = field(default_factory=set)
    _serial: int = 0
    _changed: bool = True
    triggered: list[tuple[ObjectKey, float]] = field(default_factory=list)
    """(Service, trigger time) of each changed EndpointSlice that carried one, until
    ``take_programmed``."""

    # -- writes -------------------------------------------------------------------------------

    def upsert(self, obj: KubeObject) -> None:
        if isinstance(obj, Namespace):
            if self.namespace_objects.get(obj.name) != obj:
                self.namespace_objects[obj.name] = obj
                self._namespace_changed(obj.name)
        elif isinstance(obj, Service):
            if self.services.get(obj.key) != obj:
                self.services[obj.key] = obj
                self._dirty_services.add(obj.key)
        elif isinstance(obj, EndpointSlice):
            old = self.slices.get(obj.key)
            if old != obj:
                if old is not None:
                    self._unlink_slice(old)
                self.slices[obj.key] = obj
                self._slices_by_service.setdefault(obj.service_key, set()).add(obj.key)
                self._dirty_services.add(obj.service_key)
                if obj.changed_at is not None:
                    self.triggered.append((obj.service_key, obj.changed_at))
        else:
            old_pod = self.pods.get(obj.key)
            if old_pod != obj:
                if old_pod is not None:
                    self._unlink_pod(old_pod)
                self.pods[obj.key] = obj
                for ip in obj.ips:
                    self._pod_namespaces.setdefault(ip, {})[obj.key] = obj.namespace
                    self._dirty_owners.add(("pod", obj.namespace, ip))
                self._changed = True

    def delete(self, kind: str, key: ObjectKey) -> None:
        """Remove an object; ``kind`` is Namespace, Service, EndpointSlice or Pod."""
        if kind == "Namespace":
            if self.namespace_objects.pop(key[1], None) is not None:
                self._namespace_changed(key[1])
        elif kind == "Service":
            if self.services.pop(key, None) is not None:
                self._dirty_services.add(key)
        elif kind == "EndpointSlice":
            old = self.slices.pop(key, None)
            if old is not None:
                self._unlink_slice(old)
                self._dirty_services.add(old.service_key)
        elif kind == "Pod":
            old_pod = self.pods.pop(key, None)
            if old_pod is not None:
                self._unlink_pod(old_pod)
                self._changed = True
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def replace_all(
        self,
        objects: Iterable[KubeObject],
        kinds: Iterable[str] | None = None,
        namespace: str | None = None,
    ) -> None:
        """Make the store hold exactly ``objects``: a relist.

        Only objects of ``kinds`` (default: all four) and, when ``namespace`` is given, only
        objects in that namespace are compared, so one list call's result replaces exactly
        what that call covers.
        """
        wanted = ClusterState.from_objects(objects)
        selected = (
            set(kinds) if kinds is not None else {"Namespace", "Service", "EndpointSlice", "Pod"}
        )
        current: list[tuple[str, Mapping[ObjectKey, object], Mapping[ObjectKey, object]]] = [
            (
                "Namespace",
                {("", n): o for n, o in self.namespace_objects.items()},
                wanted.namespaces,
            ),
            ("Service", self.services, wanted.services),
            ("EndpointSlice", self.slices, wanted.slices),
            ("Pod", self.pods, wanted.pods),
        ]
        for kind, have, want in current:
            if kind not in selected:
                continue
            for key in [k for k in have if k not in want]:
                if namespace is None or key[0] == namespace:
                    self.delete(kind, key)
            for obj in want.values():
                assert isinstance(obj, Namespace | Service | EndpointSlice | Pod)
                self.upsert(obj)

    def take_programmed(self, now: float) -> list[tuple[str, float]]:
        """(service kind, seconds since the trigger time) of the slices changed since the last
        call, as CoreDNS measures DNS programming latency: only a headless Service's slices
        (its selector is implied by the controller's annotation): ``headless_with_selector``."""
        taken, self.triggered = self.triggered, []
        measured = []
        for service_key, changed_at in taken:
            service = self.services.get(service_key)
            if service is not None and service.headless and service.type != "ExternalName":
                measured.append(("headless_with_selector", max(0.0, now - changed_at)))
        return measured

    def mark_synced(self, synced: bool) -> None:
        if synced != self.synced:
            self.synced = synced
            self._changed = True

    # -- bookkeeping ----------------------------------------------------------------------------

    def _namespace_changed(self, namespace: str) -> None:
        self._dirty_owners.add(("ns", namespace))
        self._dirty_services.update(k for k in self.services if k[0] == namespace)
        self._dirty_services.update(k for k in self._views if k[0] == namespace)
        for ip, holders in self._pod_namespaces.items():
            if namespace in holders.values():
                self._dirty_owners.add(("pod", namespace, ip))
        self._changed = True

    def _unlink_slice(self, old: EndpointSlice) -> None:
        members = self._slices_by_service.get(old.service_key)
        if members is not None:
            members.discard(old.key)
            if not members:
                del self._slices_by_service[old.service_key]

    def _unlink_pod(self, old: Pod) -> None:
        for ip in old.ips:
            holders = self._pod_namespaces.get(ip)
            if holders is not None:
                holders.pop(old.key, None)
                if not holders:
                    del self._pod_namespaces[ip]
            self._dirty_owners.add(("pod", old.namespace, ip))

    def _allowed(self, namespace: str) -> bool:
        allowed = self.config.namespaces
        return namespace in self.namespace_objects and (allowed is None or namespace in allowed)

    def _refresh_service(self, key: ObjectKey) -> None:
        """Recompute one Service's view and its PTR claims."""
        self._dirty_owners.add(("svc", key[0], key[1]))
        old_view = self._views.pop(key, None)
        service = self.services.get(key)
        if service is not None:
            members = self._slices_by_service.get(key, set())
            view = build_view(self.config, service, (self.slices[k] for k in members))
            self._views[key] = view
        else:
            view = None
        owner: Owner = ("svc", key[0], key[1])
        if self._targets_our_zone(view):
            self._chasing.add(owner)
        else:
            self._chasing.discard(owner)
        old_ips = set(self._claims_of(old_view))
        new_claims = self._claims_of(view) if view and self._allowed(key[0]) else {}
        for ip in old_ips - set(new_claims):
            self._set_claim(ip, key, None)
        for ip, claim in new_claims.items():
            self._set_claim(ip, key, claim)

    def _claims_of(self, view: ServiceView | None) -> dict[str, PtrClaim]:
        """PTR targets this Service claims per IP (R3.8, R3.9d, R4.8)."""
        if view is None or view.is_external:
            return {}
        service = view.service
        base: Name = (service.name, service.namespace, "svc", *self.config.primary_zone)
        claims: dict[str, PtrClaim] = {ip: PtrClaim(True, (base,)) for ip in service.cluster_ips}
        for record in view.endpoints:
            claim = claims.get(record.ip)
            if claim is not None and claim.cluster_ip:
                continue  # the Service's own ClusterIP names the address, not its endpoint
            target = (record.name, *base)
            targets = claim.targets if claim is not None else ()
            if target not in targets:
                claims[record.ip] = PtrClaim(False, (*targets, target))
        return claims

    def _set_claim(self, ip: str, key: ObjectKey, claim: PtrClaim | None) -> None:
        # Almost every IP is claimed by one Service: keep that as a (key, claim) pair and only
        # use a dict when several Services claim it (100k endpoints: ~28 MB of small dicts).
        current = self._ptr_claims.get(ip)
        claims = dict([current] if isinstance(current, tuple) else (current or {}).items())
        if claim is None:
            claims.pop(key, None)
        else:
            claims[key] = claim
        if not claims:
            self._ptr_claims.pop(ip, None)
        elif len(claims) == 1:
            self._ptr_claims[ip] = next(iter(claims.items()))
        else:
            self._ptr_claims[ip] = claims
        self._dirty_owners.add(("ptr", ip))

    def _resolve_reverse(self, ip: str) -> None:
        current = self._ptr_claims.get(ip)
        if not current:
            self._reverse.pop(ip, None)
            return
        if isinstance(current, tuple):
            self._reverse[ip] = current[1].targets  # shared with the claim, not copied
            return
        # A ClusterIP wins over endpoints, and the first Service (by key) wins among ClusterIPs.
        ordered = [current[key] for key in sorted(current)]
        for claim in ordered:
            if claim.cluster_ip:
                self._reverse[ip] = claim.targets
                return
        self._reverse[ip] = tuple(target for claim in ordered for target in claim.targets)

    # -- reads -----------------------------------------------------------------------------------

    def publish(self) -> tuple[Index, set[Owner]] | None:
        """Fold pending changes into a new ``Index``; None when nothing changed."""
        for key in self._dirty_services:
            self._refresh_service(key)
        self._dirty_services.clear()
        if not self._dirty_owners and not self._changed:
            return None
        for owner in self._dirty_owners:
            if owner[0] == "ptr":
                self._resolve_reverse(owner[1])
        dirty = self._dirty_owners | {APEX}
        self._dirty_owners = set()
        self._changed = False
        self._serial = max(int(self.clock()), self._serial + 1)
        allowed = frozenset(n for n in self.namespace_objects if self._allowed(n))
        ns_name, glue = self._dns_service_identity(allowed)
        index = Index(
            config=self.config,
            serial=self._serial & 0xFFFFFFFF,
            synced=self.synced,
            namespaces=allowed,
            services=MappingProxyType(dict(self._views)),
            reverse=MappingProxyType(dict(self._reverse)),
            pod_namespaces=MappingProxyType(
                {ip: frozenset(h.values()) for ip, h in self._pod_namespaces.items()}
            ),
            ns_name=ns_name,
            glue=glue,
        )
        return index, dirty

    def publish_all(self) -> tuple[Index, set[Owner]]:
        """Publish even when nothing changed (the first table of an empty cluster)."""
        self._changed = True
        result = self.publish()
        assert result is not None
        return result

    def _dns_service_identity(self, allowed: frozenset[str]) -> tuple[Name, tuple[str, ...]]:
        namespace, name = self.config.dns_service
        service = self.services.get((namespace, name))
        if service is not None and namespace in allowed and service.cluster_ips:
            return (name, namespace, "svc"), tuple(service.cluster_ips)
        return ("ns", "dns"), self.config.fallback_glue

    def external_name_owners(self) -> set[Owner]:
        """ExternalName Services whose target is in a served zone: their answers chase it, so
        they are rebuilt with every generation. Kept up to date by ``_refresh_service``."""
        return set(self._chasing)

    def _targets_our_zone(self, view: ServiceView | None) -> bool:
        if view is None or not view.is_external:
            return False
        target = view.service.external_name.lower().rstrip(".")
        if looks_like_ip(target):
            return False
        return any(
            target == ".".join(zone) or target.endswith("." + ".".join(zone))
            for zone in self.config.zones
        )
