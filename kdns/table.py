"""The answer table: every name the cluster defines, compiled to wire bytes, rebuilt per owner.

``AnswerTable`` is immutable once published and is read without locks by the serving threads:

* ``records``: lower-case question bytes (name + type + class) -> ``wire.Compiled``, for every
  (name, type) whose answer is not a plain NODATA;
* ``names``: lower-case name bytes -> a negative key, for names that exist, so any other type is
  answered NODATA from ``negative_entry`` (the SOA carries the serial, which changes every
  generation; keeping it out of per-name entries is what lets a rebuild touch only changed
  owners);
* ``memo``: a bounded cache of slow-path answers for names the table does not hold, thrown away
  with the table.

``TableBuilder`` is single-writer: ``publish(index, dirty)`` copies the dicts, replaces the
entries of the dirty owners, and returns a new table. The reference swap is the atomic publish.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from kdns import wire
from kdns.names import (
    Name,
    dashed_ip,
    looks_like_ip,
    name_to_text,
    pod_label_to_ip,
    reverse_name,
    split_zone,
    text_to_name,
)
from kdns.rewrite import turn_back
from kdns.state import APEX, Index, Owner
from kdns.synth.resolve import negative, resolve, service_is_empty

# Types compiled per kind of name. Other types are NODATA through ``names``; ANY (a meta type,
# rare, and RFC 8482 makes it cheap) and names outside the table go through the memo.
SERVICE_TYPES = (wire.A, wire.AAAA, wire.SRV)
EXTERNAL_TYPES = (wire.A, wire.AAAA, wire.CNAME, wire.SRV, wire.TXT, wire.MX)
ADDRESS_TYPES = (wire.A, wire.AAAA)
APEX_TYPES = (wire.SOA, wire.NS)
PTR_TYPES = (wire.PTR,)
CUSTOM: Owner = ("custom",)
"""The owner of every custom record (the config's ``records``/``hosts``): compiled with the
first table, and again with every table when a custom CNAME's answer follows the cluster."""
LAZY_OWNERS = frozenset({"ptr", "pod"})
"""Owners all of whose names are answered through the memo (see ``NameSpec.compiled``)."""
MEMO_SIZE = 65536


class Memo:
    """A bounded FIFO map over one plain dict, ``entries``, which readers use without a lock.

    Why a plain dict: the C loop (kdns/serve/_fastpath.c) looks keys up in it directly, as it
    does in ``records``. Writers hold the table's ``memo_lock`` against each other; a reader
    needs none, because every write is one dict operation made while holding the GIL (an insert
    at the end, or a delete of the oldest key, which is the first in the dict's insertion
    order), so a reader holding the GIL sees the dict between two operations, never inside one.
    Reading never reorders anything (FIFO, not LRU). Replacing a key moves it to the end, and
    the oldest keys go first when full: what cachetools' FIFOCache did.
    """

    __slots__ = ("entries", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.entries: dict[bytes, wire.Compiled | None] = {}
        self.maxsize = maxsize

    def __getitem__(self, key: bytes) -> wire.Compiled | None:
        return self.entries[key]

    def __setitem__(self, key: bytes, value: wire.Compiled | None) -> None:
        """Only with the table's ``memo_lock`` held."""
        entries = self.entries
        entries.pop(key, None)
        while len(entries) >= self.maxsize:
            del entries[next(iter(entries))]
        entries[key] = value

    def __len__(self) -> int:
        return len(self.entries)


def question_key(name: Name, qtype: int) -> bytes:
    return wire.name_wire(name) + struct.pack(">HH", qtype, wire.CLASS_IN)


@dataclass(frozen=True, slots=True)
class NameSpec:
    """One name an owner defines, the types to compile, and whether other types are NODATA."""

    name: Name
    types: tuple[int, ...]
    exists: bool = True
    chase: Name | None = None
    """An out-of-zone ExternalName target the server chases through its forwarder."""
    compiled: bool = True
    """False for the per-endpoint and per-IP names (endpoint hostnames, PTR, verified pods):
    they are most of a big cluster's names but a small part of its queries, so they are answered
    through the memo (once per generation) instead of being compiled into every table. This
    keeps a table's size, build time and copy-on-publish cost proportional to the Services."""


def owner_names(index: Index, owner: Owner, chase: bool = False) -> Iterator[NameSpec]:
    """Every name ``owner`` defines, in every served zone.

    With ``chase``, ExternalName names whose target lies outside our zones compile nothing: the
    server answers them through its forwarder (CNAME plus the target's records).
    """
    config = index.config
    kind = owner[0]
    if kind == "custom":
        yield from _custom_names(index, chase)
    elif kind == "apex":
        for zone in config.zones:
            yield NameSpec(zone, APEX_TYPES)
            yield NameSpec(("dns-version", *zone), (wire.TXT,))
            # Not NODATA-by-name: its SOA's MNAME would compress against the name itself.
            yield NameSpec(("ns", "dns", *zone), ADDRESS_TYPES, exists=False)
            yield NameSpec(("svc", *zone), ())
            yield NameSpec(("pod", *zone), ())
    elif kind == "ns":
        namespace = owner[1]
        if index.exposed(namespace):
            for zone in config.zones:
                yield NameSpec((namespace, "svc", *zone), ())
                if config.pods != "disabled":
                    yield NameSpec((namespace, "pod", *zone), ())
    elif kind == "svc":
        yield from _service_names(index, (owner[1], owner[2]), chase)
    elif kind == "ptr":
        if owner[1] in index.reverse:
            yield NameSpec(reverse_name(owner[1]), PTR_TYPES, compiled=False)
    elif kind == "pod":
        namespace, ip = owner[1], owner[2]
        label = dashed_ip(ip)
        if (
            config.pods == "verified"
            and index.exposed(namespace)
            and namespace in index.pod_namespaces.get(ip, frozenset())
            and pod_label_to_ip(label) == ip
        ):
            for zone in config.zones:
                yield NameSpec((label, namespace, "pod", *zone), ADDRESS_TYPES, compiled=False)


def _service_names(index: Index, key: tuple[str, str], chase: bool) -> Iterator[NameSpec]:
    view = index.services.get(key)
    if view is None or not index.exposed(key[0]):
        return
    service = view.service
    for zone in index.config.zones:
        base: Name = (service.name, service.namespace, "svc", *zone)
        if view.is_external:
            target = _outside_target(index, service.external_name) if chase else None
            if target is not None:
                yield NameSpec(base, (), exists=False, chase=target)
            else:
                yield NameSpec(base, EXTERNAL_TYPES, exists=False)
            continue
        # A headless Service with no ready endpoints, or a ClusterIP one still without an IP
        # (or, with ignore_empty_service, without a ready endpoint), is NXDOMAIN (R4.2): left
        # to the slow path. Endpoint names below it still resolve.
        if service_is_empty(index, view):
            continue
        if view.endpoints if service.headless else service.cluster_ips:
            yield NameSpec(base, SERVICE_TYPES)
            # Headless SRV comes from the slices' ports (R4.6), ClusterIP SRV from the Service's.
            declared = (
                [p for record in view.endpoints for p in record.ports]
                if service.headless
                else list(service.ports)
            )
            ports = {(p.name.lower(), p.protocol.lower()) for p in declared if p.name}
            for port_name, protocol in sorted(ports):
                yield NameSpec(("_" + port_name, "_" + protocol, *base), SERVICE_TYPES)
        for endpoint_name in sorted({record.name for record in view.endpoints}):
            # SRV too: the endpoint's ports answer it.
            yield NameSpec((endpoint_name, *base), SERVICE_TYPES, compiled=False)


def _custom_names(index: Index, chase: bool) -> Iterator[NameSpec]:
    """Custom names compile their own types. Inside a served zone a custom name exists (other
    types are NODATA by name); outside, it has no SOA, so A and AAAA NODATA are compiled too."""
    custom = index.config.custom
    for name, rrsets in custom.by_name.items():
        alias = custom.alias(name)
        if alias is not None:
            target = _outside_target(index, name_to_text(alias)) if chase else None
            if target is not None:
                yield NameSpec(name, (), exists=False, chase=target)
            else:
                yield NameSpec(name, EXTERNAL_TYPES, exists=False)
        elif split_zone(name, index.config.all_zones) is not None:
            yield NameSpec(name, tuple(rrsets))
        else:
            yield NameSpec(name, tuple(dict.fromkeys((*rrsets, *ADDRESS_TYPES))), exists=False)


def _outside_target(index: Index, external_name: str) -> Name | None:
    """The ExternalName target as a Name when it is a name outside every served zone (and not
    a custom name, which kdns answers itself)."""
    if not external_name or looks_like_ip(external_name):
        return None
    target = text_to_name(external_name)
    if not target or split_zone(target, index.config.all_zones) is not None:
        return None
    if target in index.config.custom.by_name:
        return None
    return target


def _is_plain_nodata(answer: wire.Answer) -> bool:
    return answer.rcode == wire.NOERROR and not answer.answer


@dataclass
class AnswerTable:
    """One published generation of compiled answers. Never mutated after ``publish``."""

    index: Index
    records: dict[bytes, wire.Compiled]
    names: dict[bytes, int]
    chase: dict[bytes, Name] = field(default_factory=dict)
    """Lower-case name bytes -> the out-of-zone target a forwarding server chases."""
    # FIFO, not LRU: a hit must not reorder anything, so the serving threads (and the C loop,
    # which reads ``memo.entries`` directly) read it without the lock.
    memo: Memo = field(default_factory=lambda: Memo(MEMO_SIZE))
    negatives: dict[int, wire.Compiled] = field(default_factory=dict)
    memo_lock: threading.Lock = field(default_factory=threading.Lock)
    rewritten_types: frozenset[int] = frozenset()
    """Query types a ``rewrite type`` rule changes: never answered NODATA-by-name."""

    @property
    def generation(self) -> int:
        return self.index.serial

    def negative_entry(self, negative_key: int) -> wire.Compiled:
        """NODATA for a name of length ``negative_key & 0xFF`` in zone ``negative_key >> 8``."""
        entry = self.negatives.get(negative_key)
        if entry is None:
            zone_index, name_length = negative_key >> 8, negative_key & 0xFF
            zone = self.index.config.all_zones[zone_index]
            # Any name of that length in that zone compresses the SOA owner the same way.
            filler = ("x" * max(0, name_length - len(wire.name_wire(zone)) - 1),)
            qname = (filler if filler[0] else ()) + zone
            entry = wire.compile_answer(qname, negative(self.index, zone_index, wire.NOERROR))
            self.negatives[negative_key] = entry
        return entry

    def cached(self, key: bytes) -> wire.Compiled | None:
        """A NODATA-by-name or memoized answer for a question key, without resolving."""
        if (
            key[-4] == 0
            and key[-3] <= 127
            and key[-2:] == b"\x00\x01"
            and key[-3] not in self.rewritten_types
        ):
            negative_key = self.names.get(key[:-4])
            if negative_key is not None:
                return self.negative_entry(negative_key)
        try:
            return self.memo[key]
        except KeyError:
            return None

    def slow_lookup(self, key: bytes, qname: Name, qtype: int) -> wire.Compiled | None:
        """Answer a name the table does not hold, through ``resolve``; memoized per table."""
        try:
            return self.memo[key]
        except KeyError:
            pass
        answer = self.decide(qname, qtype)
        compiled = (
            wire.compile_answer(qname, answer, self.index.config.rotate)
            if answer is not None
            else None
        )
        if qtype != wire.CNAME and key[:-4] in self.chase:
            # The server answers these with our CNAME plus the upstream's records; the memo
            # holds only answers that depend on the table alone (the fast path serves it).
            return compiled
        with self.memo_lock:
            self.memo[key] = compiled
        return compiled

    def decide(self, qname: Name, qtype: int) -> wire.Answer | None:
        """``resolve``, after the rewrite rules (whose names and types the table never holds)."""
        rules = self.index.config.rewrite
        rewritten = rules.apply(qname, qtype) if rules else None
        if rewritten is None:
            return resolve(self.index, qname, qtype)
        answer = resolve(self.index, rewritten.name, rewritten.qtype)
        return turn_back(answer, rewritten.reverses) if answer is not None else None

    def lookup(self, key: bytes, qname: Name, qtype: int) -> wire.Compiled | None:
        """The compiled answer for a parsed question; None when the name is not ours."""
        found = self.records.get(key)
        if found is not None:
            return found
        # Meta types (ANY; AXFR and IXFR never reach here) go to the memo.
        if qtype < 128 and qtype not in self.rewritten_types:
            negative_key = self.names.get(key[:-4])
            if negative_key is not None:
                return self.negative_entry(negative_key)
        return self.slow_lookup(key, qname, qtype)


def negative_key(index: Index, name: Name) -> int:
    found = split_zone(name, index.config.all_zones)
    assert found is not None, name_to_text(name)
    return (found[0] << 8) | len(wire.name_wire(name))


@dataclass
class TableBuilder:
    """Single-writer: turns (Index, dirty owners) into successive ``AnswerTable``s."""

    table: AnswerTable | None = None
    chase_external: bool = False
    """Set when the server forwards: out-of-zone ExternalName targets are chased, not compiled."""
    owned_records: dict[Owner, list[bytes]] = field(default_factory=dict)
    owned_names: dict[Owner, list[bytes]] = field(default_factory=dict)

    def publish(
        self, index: Index, dirty: set[Owner], always: set[Owner] | None = None
    ) -> AnswerTable:
        """Rebuild the entries of ``dirty`` (and ``always``) owners; return the new table."""
        records = dict(self.table.records) if self.table else {}
        names = dict(self.table.names) if self.table else {}
        chase = dict(self.table.chase) if self.table else {}
        every_time = (always or set()) | {APEX}
        custom = index.config.custom
        custom_keys = custom.name_keys
        if custom.has_aliases:
            every_time.add(CUSTOM)
        rules = index.config.rewrite
        rewritten_types = rules.rewritten_types
        for owner in dirty | every_time:
            if owner[0] in LAZY_OWNERS:
                continue  # they compile nothing (NameSpec.compiled)
            for key in self.owned_records.pop(owner, ()):
                records.pop(key, None)
            for key in self.owned_names.pop(owner, ()):
                names.pop(key, None)
                chase.pop(key, None)
            owner_records: list[bytes] = []
            owner_name_keys: list[bytes] = []
            for spec in owner_names(index, owner, self.chase_external):
                if not spec.compiled:
                    continue
                name_key = wire.name_wire(spec.name)
                if name_key in custom_keys and owner != CUSTOM:
                    continue  # a custom record wins over the cluster's name (resolve agrees)
                if rules and rules.touches(spec.name):
                    continue  # rewritten: answered through ``decide`` and the memo
                if spec.exists:
                    names[name_key] = negative_key(index, spec.name)
                if spec.chase is not None:
                    chase[name_key] = spec.chase
                if spec.exists or spec.chase is not None:
                    owner_name_keys.append(name_key)
                for qtype in spec.types:
                    if qtype in rewritten_types:
                        continue
                    answer = resolve(index, spec.name, qtype)
                    if answer is None or (spec.exists and _is_plain_nodata(answer)):
                        continue
                    if answer.authority and owner not in every_time:
                        continue  # it carries the SOA serial; the memo serves it per generation
                    key = name_key + struct.pack(">HH", qtype, wire.CLASS_IN)
                    records[key] = wire.compile_answer(spec.name, answer, index.config.rotate)
                    owner_records.append(key)
            if owner_records:
                self.owned_records[owner] = owner_records
            if owner_name_keys:
                self.owned_names[owner] = owner_name_keys
        self.table = AnswerTable(index, records, names, chase, rewritten_types=rewritten_types)
        return self.table

    def all_owners(self, index: Index) -> set[Owner]:
        owners: set[Owner] = {APEX}
        if index.config.custom:
            owners.add(CUSTOM)
        owners.update(("ns", n) for n in index.namespaces)
        owners.update(("svc", k[0], k[1]) for k in index.services)
        owners.update(("ptr", ip) for ip in index.reverse)
        for ip, namespaces in index.pod_namespaces.items():
            owners.update(("pod", n, ip) for n in namespaces)
        return owners
