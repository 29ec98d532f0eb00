"""The answer decision: (Index, qname, qtype) -> Answer, for every rule R1-R13.

This is the slow, obviously-correct path. The answer table calls it once per (name, type) when
the cluster changes; the server calls it per query only for names the table does not hold.
Choices where the spec and CoreDNS disagree are explained in ``docs/decisions.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from kdns import wire
from kdns.names import (
    INVALID,
    POD,
    Name,
    Request,
    is_ipv4,
    looks_like_ip,
    parse_request,
    pod_label_to_ip,
    reverse_to_ip,
    split_zone,
    text_to_name,
)
from kdns.state import Index, ServiceView
from kdns.wire import RR, Answer, RRset

DNS_SCHEMA_VERSION: Final = "1.1.0"
DNS_VERSION_TTL: Final = 28800
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400
MAX_CNAME_CHAIN: Final = 8


@dataclass(frozen=True, slots=True)
class Target:
    """One candidate record of a lookup (CoreDNS ``msg.Service``)."""

    name: Name
    """Absolute name the address lives under (SRV target, additional owner)."""
    address: str = ""
    cname: Name = ()
    port: int = -1


def soa_record(index: Index, zone_index: int) -> RR:
    """The SOA of a served zone (R9.1, R9.3); reverse zones name the primary zone's server."""
    config = index.config
    zones = config.all_zones
    zone = zones[zone_index]
    home = zone if zone_index < len(config.zones) else config.primary_zone
    ttl = min(config.ttl_s, 300)
    data = (
        ("ns", "dns", *home),
        ("hostmaster", *home),
        index.serial,
        SOA_REFRESH,
        SOA_RETRY,
        SOA_EXPIRE,
        config.ttl_s,
    )
    return RR(zone, wire.SOA, ttl, data)


def negative(index: Index, zone_index: int, rcode: int) -> Answer:
    """NXDOMAIN or NODATA with the zone SOA in authority (R8.1, RFC 2308 3)."""
    if rcode == wire.NXDOMAIN and not index.synced:
        rcode = wire.SERVFAIL  # R8.2: not yet synced, the name may yet appear
    return Answer(rcode, authority=((soa_record(index, zone_index),),))


def resolve(index: Index, qname: Name, qtype: int, depth: int = 0) -> Answer | None:
    """Decide the answer; None means the name is not ours (REFUSED, or forwarded later).

    A custom record's name is answered from the config alone: it wins over the cluster's
    answer for that name (the collision is reported by ``custom_collisions``). A name above a
    custom name in a served zone exists, as an empty non-terminal: where the cluster would deny
    it, it is NODATA, because NXDOMAIN would deny the custom name below too (RFC 8020), and
    resolvers (nodecache's namespace cut among them) act on that.
    """
    custom = index.config.custom
    rrsets = custom.by_name.get(qname)
    if rrsets is not None:
        return _custom_answer(index, qname, qtype, rrsets, depth)
    answer = resolve_cluster(index, qname, qtype, depth)
    if answer is not None and answer.rcode == wire.NXDOMAIN and qname in custom.ancestors:
        found = split_zone(qname, index.config.all_zones)
        if found is not None:
            return negative(index, found[0], wire.NOERROR)
    return answer


def resolve_cluster(index: Index, qname: Name, qtype: int, depth: int = 0) -> Answer | None:
    """The cluster's answer (R1-R13), custom records aside."""
    found = split_zone(qname, index.config.all_zones)
    if found is None:
        return None
    zone_index, relative = found
    if zone_index >= len(index.config.zones):
        return _reverse(index, zone_index, qname, qtype)
    zone = index.config.zones[zone_index]
    ttl = index.config.ttl_s

    if not relative:
        return _apex(index, zone_index, qname, qtype)
    if relative == ("dns-version",):
        if qtype in (wire.TXT, wire.ANY):
            rr = RR(qname, wire.TXT, DNS_VERSION_TTL, (DNS_SCHEMA_VERSION,))
            return Answer(wire.NOERROR, answer=((rr,),))
        return negative(index, zone_index, wire.NOERROR)
    if relative == ("ns", "dns"):
        return _addresses_answer(index, zone_index, qname, qtype, index.glue, ttl)
    if qtype == wire.SOA:
        return negative(index, zone_index, wire.NOERROR)  # R8: CoreDNS does no lookup off-apex

    request = parse_request(relative)
    if request == INVALID:
        return negative(index, zone_index, wire.NXDOMAIN)
    if not request.kind:
        return negative(index, zone_index, wire.NOERROR)  # svc.<zone>, pod.<zone>: R8 table

    if request.kind == POD:
        targets = _find_pods(index, request, zone)
    else:
        external = _external_service(index, request)
        if external is not None:
            return _external_answer(index, zone_index, qname, qtype, external, depth)
        targets = _find_services(index, request, zone)
    if targets is None:
        return negative(index, zone_index, wire.NXDOMAIN)

    if qtype in (wire.A, wire.AAAA):
        records = _address_records(qname, qtype, targets, ttl)
        if records:
            return Answer(wire.NOERROR, answer=(records,))
    elif qtype == wire.ANY:
        for family in (wire.A, wire.AAAA):
            records = _address_records(qname, family, targets, ttl)
            if records:
                return Answer(wire.NOERROR, answer=(records,))
    elif qtype == wire.SRV:
        srv, extra = _srv_records(qname, targets, ttl)
        if srv:
            return Answer(wire.NOERROR, answer=(srv,), additional=extra)
    return negative(index, zone_index, wire.NOERROR)


def _apex(index: Index, zone_index: int, qname: Name, qtype: int) -> Answer:
    zone = index.config.zones[zone_index]
    if qtype in (wire.SOA, wire.ANY):
        return Answer(wire.NOERROR, answer=((soa_record(index, zone_index),),))
    if qtype == wire.NS:
        ns_name = (*index.ns_name, *zone)
        ns = RR(qname, wire.NS, index.config.ttl_s, ns_name)
        glue = _glue_rrsets(ns_name, index.glue, index.config.ttl_s)
        return Answer(wire.NOERROR, answer=((ns,),), additional=glue)
    return negative(index, zone_index, wire.NOERROR)  # R10.2


def _glue_rrsets(owner: Name, addresses: tuple[str, ...], ttl: int) -> tuple[RRset, ...]:
    out: list[RRset] = []
    for family, check in ((wire.A, True), (wire.AAAA, False)):
        rrs = tuple(RR(owner, family, ttl, ip) for ip in addresses if is_ipv4(ip) == check)
        if rrs:
            out.append(rrs)
    return tuple(out)


def _addresses_answer(
    index: Index, zone_index: int, qname: Name, qtype: int, addresses: tuple[str, ...], ttl: int
) -> Answer:
    for family in (wire.A, wire.AAAA):
        if qtype in (family, wire.ANY):
            rrs = tuple(
                RR(qname, family, ttl, ip) for ip in addresses if is_ipv4(ip) == (family == wire.A)
            )
            if rrs:
                return Answer(wire.NOERROR, answer=(rrs,))
    return negative(index, zone_index, wire.NOERROR)


def _reverse(index: Index, zone_index: int, qname: Name, qtype: int) -> Answer | None:
    """PTR for Service and endpoint IPs (R3.8, R4.8); unknown addresses are not ours."""
    ip = reverse_to_ip(qname)
    targets = index.reverse.get(ip) if ip is not None else None
    if not targets:
        return None
    if qtype in (wire.PTR, wire.ANY):
        rrs = tuple(RR(qname, wire.PTR, index.config.ttl_s, target) for target in targets)
        return Answer(wire.NOERROR, answer=(rrs,))
    return negative(index, zone_index, wire.NOERROR)


def _external_service(index: Index, request: Request) -> ServiceView | None:
    """The ExternalName Service a bare service name refers to, if it is one."""
    if request.endpoint or request.protocol or not index.exposed(request.namespace):
        return None
    view = index.services.get((request.namespace, request.service))
    if view is None or not view.is_external:
        return None
    return view


def _external_answer(
    index: Index, zone_index: int, qname: Name, qtype: int, view: ServiceView, depth: int
) -> Answer:
    """CNAME to the external name (R6.1); in-zone targets are chased (R6.2), IP-like ones are
    not served (R6.4), and every qtype gets the CNAME, as RFC 1034 3.6.2 says (A5)."""
    target_text = view.service.external_name
    if not target_text or looks_like_ip(target_text):
        return negative(index, zone_index, wire.NXDOMAIN)
    target = text_to_name(target_text)
    if target == qname:
        return negative(index, zone_index, wire.NOERROR)  # x CNAME x is a loop; serve nothing
    return _alias_answer(index, qtype, RR(qname, wire.CNAME, index.config.ttl_s, target), depth)


def _alias_answer(index: Index, qtype: int, cname: RR, depth: int) -> Answer:
    """The CNAME, then the target's answer when the target is ours (chased, as a resolver
    would); the rcode is the last name's (RFC 6604)."""
    target = cname.data
    assert isinstance(target, tuple)
    if qtype == wire.CNAME or depth >= MAX_CNAME_CHAIN:
        return Answer(wire.NOERROR, answer=((cname,),))
    chased = resolve(index, target, qtype, depth + 1)
    if chased is None:
        return Answer(wire.NOERROR, answer=((cname,),))  # out of zone: the client's resolver chases
    return Answer(
        chased.rcode,
        answer=((cname,), *chased.answer),
        authority=chased.authority,
        additional=chased.additional,
    )


def _custom_answer(
    index: Index, qname: Name, qtype: int, rrsets: Mapping[int, RRset], depth: int
) -> Answer:
    """A custom name: its RRset for the type, the CNAME for every type, or NODATA. NODATA
    carries the zone's SOA inside a served zone; outside, kdns is the authority for the name
    only, so there is no SOA to give (as CoreDNS's ``hosts`` plugin answers)."""
    cname = rrsets.get(wire.CNAME)
    if cname is not None:
        return _alias_answer(index, qtype, cname[0], depth)
    if qtype == wire.ANY:
        rrset = next(iter(rrsets.values()))
    else:
        found = rrsets.get(qtype)
        if found is None:
            zone = split_zone(qname, index.config.all_zones)
            if zone is None:
                return Answer(wire.NOERROR)
            return negative(index, zone[0], wire.NOERROR)
        rrset = found
    return Answer(wire.NOERROR, answer=(rrset,), additional=_custom_glue(index, rrset))


def _custom_glue(index: Index, rrset: RRset) -> tuple[RRset, ...]:
    """Addresses of SRV and MX targets that are custom names themselves."""
    out: list[RRset] = []
    for rr in rrset:
        if rr.rtype not in (wire.SRV, wire.MX):
            continue
        target = rr.data[-1] if isinstance(rr.data, tuple) else ()
        for family in (wire.A, wire.AAAA):
            found = index.config.custom.by_name.get(target, {}).get(family)
            if found is not None and found not in out:
                out.append(found)
    return tuple(out)


def custom_collisions(index: Index) -> list[Name]:
    """Custom names the cluster also defines (the custom records win; the log says so)."""
    out: list[Name] = []
    zones = index.config.all_zones
    for name in index.config.custom.by_name:
        if split_zone(name, zones) is None:
            continue  # outside every served zone: the cluster cannot define it
        answer = resolve_cluster(index, name, wire.A)
        if answer is not None and answer.rcode == wire.NOERROR:
            out.append(name)
    return out


def custom_names_off_grammar(index: Index) -> list[Name]:
    """Custom names in a cluster zone that the cluster grammar calls impossible
    (``legacy.cluster.local``): kdns answers them, but a nodecache in front denies them by the
    zone's shape unless its ``local_nxdomain_except`` lists them (``kdns check`` says so)."""
    out: list[Name] = []
    for name in index.config.custom.by_name:
        found = split_zone(name, index.config.zones)
        if found is not None and found[1] and parse_request(found[1]) == INVALID:
            out.append(name)
    return out


def _find_services(index: Index, request: Request, zone: Name) -> list[Target] | None:
    """Candidates for a svc-kind request (CoreDNS ``findServices``); None means NXDOMAIN."""
    if not index.exposed(request.namespace):
        return None
    if not request.service:
        return []  # <ns>.svc.<zone>: exists, no data (R8 table)
    view = index.services.get((request.namespace, request.service))
    if view is None or view.is_external:
        return None  # names below an ExternalName do not exist (R6.3)
    if service_is_empty(index, view):
        return None
    service = view.service
    base: Name = (service.name, service.namespace, "svc", *zone)
    targets: list[Target] = []
    if service.headless or request.endpoint:
        for record in view.endpoints:
            if request.endpoint and request.endpoint != record.name:
                continue
            owner = (record.name, *base)
            if not record.ports and not request.protocol:
                targets.append(Target(owner, address=record.ip))  # no ports: A only (R4.7)
            for endpoint_port in record.ports:
                if _port_matches(request, endpoint_port.name, endpoint_port.protocol):
                    number = endpoint_port.port if endpoint_port.port is not None else -1
                    targets.append(Target(owner, address=record.ip, port=number))
        return targets or None
    if not service.cluster_ips:
        return None
    if not service.ports and not request.protocol:
        return [Target(base, address=ip) for ip in service.cluster_ips]
    for port in service.ports:
        if _port_matches(request, port.name, port.protocol):
            targets.extend(Target(base, address=ip, port=port.port) for ip in service.cluster_ips)
    return targets or None


def service_is_empty(index: Index, view: ServiceView) -> bool:
    """CoreDNS ``ignore empty_service``: a ClusterIP Service without a ready endpoint, and every
    name below it, is NXDOMAIN (its ClusterIP still has its PTR, as in CoreDNS)."""
    return (
        index.config.ignore_empty_service
        and not view.service.headless
        and not view.is_external
        and not view.endpoints
    )


def _port_matches(request: Request, name: str, protocol: str) -> bool:
    if not request.protocol:
        return True
    return request.port == name.lower() and request.protocol == protocol.lower()


def _find_pods(index: Index, request: Request, zone: Name) -> list[Target] | None:
    """Pod A/AAAA records (R7); None means NXDOMAIN."""
    mode = index.config.pods
    if mode == "disabled" or not index.exposed(request.namespace):
        return None
    if not request.service:
        return []  # <ns>.pod.<zone>: NODATA (R7.3)
    ip = pod_label_to_ip(request.service)
    if ip is None:
        return None
    if mode == "verified" and request.namespace not in index.pod_namespaces.get(ip, frozenset()):
        return None
    return [Target((request.service, request.namespace, POD, *zone), address=ip)]


def _address_records(qname: Name, qtype: int, targets: list[Target], ttl: int) -> RRset:
    want_v4 = qtype == wire.A
    seen: set[str] = set()
    out: list[RR] = []
    for target in targets:
        if target.address and is_ipv4(target.address) == want_v4 and target.address not in seen:
            seen.add(target.address)
            out.append(RR(qname, qtype, ttl, target.address))
    return tuple(out)


def _srv_records(qname: Name, targets: list[Target], ttl: int) -> tuple[RRset, tuple[RRset, ...]]:
    """SRV plus additional addresses (R3.4-R3.6, R4.5-R4.7): weight floor(100/candidates)."""
    weight = max(1, 100 // len(targets)) if targets else 0
    srv: list[RR] = []
    seen_srv: set[tuple[Name, int]] = set()
    extra: dict[tuple[Name, int], list[RR]] = {}
    seen_extra: set[tuple[Name, str]] = set()
    for target in targets:
        if target.port < 0:
            continue
        if (target.name, target.port) not in seen_srv:
            seen_srv.add((target.name, target.port))
            srv.append(RR(qname, wire.SRV, ttl, (0, weight, target.port, target.name)))
        if (target.name, target.address) not in seen_extra:
            seen_extra.add((target.name, target.address))
            family = wire.A if is_ipv4(target.address) else wire.AAAA
            extra.setdefault((target.name, family), []).append(
                RR(target.name, family, ttl, target.address)
            )
    return tuple(srv), tuple(tuple(rrs) for rrs in extra.values())
