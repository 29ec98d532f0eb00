"""An offline nodecache: the real resolver core and search-path policy, with kdns answering
from a snapshot instead of over the network, for ``nodecache explain``.

``OfflineNode`` is the ``kdns.admin.lookup.Answerer`` of a pod on a node running nodecache. It
builds exactly what ``nodecache serve`` builds (``kdns.resolver.core.Resolver`` with its
``Cache`` and ``Router``, ``nodecache.searchpath.policy.SearchPath`` in front), with three
substitutions at the edges: the cluster upstream is kdns's own ``Responder`` over the snapshot
(``kdns.admin.snapshot.ClusterDNS``), the default upstream is ``kdns.admin.outside.Outside``,
and the executors run each task inline on a clock that only moves when told. Each upstream
records what it was asked, so every query that would leave the node is listed.

Each query goes through nodecache's own ``QueryHandler`` (the search path's memo, the
cache-hit shortcut, the resolver). How it was answered is read from the counters the real code
keeps (``SearchPathStats``, ``ResolverStats``) around it: an autopath answer, a local NXDOMAIN
by ``shape``, ``cut`` or ``name``, a ``cache`` hit, or the reply of ``kdns``/``upstream``.

The pod: with absorption on, the client is trusted as a ClusterFirst pod exactly when its
resolv.conf has the kubelet's ClusterFirst shape (``<ns>.svc.<zone> svc.<zone> <zone>`` first),
as the node's Pod watch would find; its node's search domains are the rest of the list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from kdns import dns
from kdns.admin.lookup import Answered, observe
from kdns.admin.snapshot import DEFAULT_LATENCY, QTYPE_TEXT, ClusterDNS, Latency
from kdns.dns import names as zone
from kdns.resolver import message
from kdns.resolver.cache import Cache
from kdns.resolver.config import ResolverConfig, Transport, UpstreamConfig, cluster_upstream
from kdns.resolver.core import Resolver, Router, ttl_policy_for
from kdns.resolver.upstream import Reply, Result, Upstream
from nodecache.handler import QueryHandler
from nodecache.searchpath.clients import ClientFilter
from nodecache.searchpath.policy import SearchPath

POD_IP: Final = "10.244.0.99"
"""The pod's address inside the offline node (only the node's client filter sees it)."""
STEP_S: Final = 0.001
"""How far the clock moves per query: a lookup's queries are a few milliseconds apart."""
_PLACEHOLDER: Final = (("192.0.2.1", 53),)
"""Upstream addresses the config needs; never contacted (the upstreams are substituted)."""

T = TypeVar("T")


class _Clock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class _Inline(Executor):
    """Runs each task at once, in the caller's thread (no threads, deterministic)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # delivered through the future, as a pool would
            future.set_exception(error)
        return future


@dataclass
class _Recording:
    """An upstream that answers from a function and records each question."""

    label: str
    answer: Callable[[str, int], bytes]
    asked: list[str]

    def query(
        self, qname: bytes, qtype: int, qclass: int, *, do: bool = False, cd: bool = False
    ) -> Result:
        text = ".".join(dns.parse_name(qname, 0)[0]) + "."
        self.asked.append(f"{self.label} {text} {QTYPE_TEXT.get(qtype, str(qtype))}")
        packet = self.answer(text, qtype)
        return Reply(packet, message.inspect(packet), _PLACEHOLDER[0], Transport.UDP)


def cluster_first_namespace(search: Sequence[str], zones: Sequence[str]) -> str | None:
    """The pod's namespace if ``search`` starts the kubelet's ClusterFirst way, else None."""
    for zone_name in zones:
        suffix = f".svc.{zone_name}"
        if (
            len(search) >= 3
            and search[0].endswith(suffix)
            and search[0].count(".") == suffix.count(".")
            and search[1:3] == (f"svc.{zone_name}", zone_name)
        ):
            return search[0][: -len(suffix)]
    return None


def host_search(search: Sequence[str], zones: Sequence[str]) -> tuple[str, ...]:
    """The node's search domains: a ClusterFirst list after its three cluster domains."""
    if cluster_first_namespace(search, zones) is None:
        return tuple(search)
    return tuple(search[3:])


class OfflineNode:
    """See the module docstring."""

    def __init__(
        self,
        dns: ClusterDNS,
        search: Sequence[str],
        *,
        absorb: bool = True,
        latency: Latency = DEFAULT_LATENCY,
    ) -> None:
        zones = tuple(".".join(z) for z in dns.config.zones)
        self.latency = latency
        self.clock = _Clock()
        self.asked: list[str] = []
        config = ResolverConfig(
            cluster_zones=zones,
            cluster_upstream=cluster_upstream(_PLACEHOLDER),
            upstream=UpstreamConfig(_PLACEHOLDER),
        )
        cluster = _Recording("kdns", lambda q, t: dns.reply(q, t)[0], self.asked)
        outside = _Recording("upstream", lambda q, t: dns.outside.reply(q, t).packet, self.asked)

        def make(upstream: UpstreamConfig) -> Upstream:
            return cluster if upstream is config.cluster_upstream else outside

        self._served = dns.served
        self._outside = dns.outside
        cache = Cache(
            config.cache,
            prefetch=config.prefetch,
            stale=config.stale,
            ttl_policy=ttl_policy_for(config),
            clock=self.clock,
        )
        namespace = cluster_first_namespace(tuple(search), zones)
        trusted = [ipaddress.ip_network(POD_IP)] if absorb and namespace is not None else []
        self.policy = SearchPath(
            zones,
            ClientFilter(trusted),
            host_search=host_search(tuple(search), zones),
            autopath_on=absorb,
            local_nxdomain=absorb,
            clock=self.clock,
            executor=_Inline(),
        )
        self.resolver = Resolver(
            cache,
            Router.from_config(config, make),
            policy=self.policy if absorb else None,
            executor=_Inline(),
            clock=self.clock,
        )
        self.handler = QueryHandler(self.resolver)
        if absorb:
            self.policy.bind(self.resolver)
            self.policy.start()  # learns the zone SOAs, as at startup: not part of a lookup
        self.asked.clear()
        self._ids = iter(range(1, 65536))

    def _handle(self, packet: bytes) -> bytes:
        """nodecache's own per-query path (``QueryHandler``: the search path's memo, the
        cache-hit shortcut, then the resolver), over TCP so no reply is truncated."""
        handled = self.handler.tcp(packet, (POD_IP, 40000))
        if isinstance(handled, bytes):
            return handled
        box: list[bytes] = []
        assert handled is not None, "nodecache dropped a well-formed query"
        handled(box.append)  # the inline executors have already settled it
        return box[0]

    def ask(self, qname: str, qtype: int) -> Answered:
        stats = self.policy.stats
        autopath_before = stats.autopath_answers
        local_before = dict(stats.local)
        hits_before = self.resolver.stats.hits
        mark = len(self.asked)
        packet = message.make_query(
            next(self._ids), zone.to_wire(qname), qtype, dns.CLASS_IN, udp_size=None
        )
        reply = self._handle(packet)
        self.clock.now += STEP_S
        left = tuple(self.asked[mark:])
        seen = observe(reply, qtype)
        if stats.autopath_answers > autopath_before:
            how = "autopath"
        elif any(stats.local[m] > local_before[m] for m in stats.local):
            how = next(m for m in stats.local if stats.local[m] > local_before[m])
        elif self.resolver.stats.hits > hits_before and not left:
            how = "cache"
        else:
            how = "kdns" if self._served(qname) else "upstream"
        latency = self.latency.node_ms + sum(
            self.latency.kdns_ms if item.startswith("kdns ") else self.latency.upstream_ms
            for item in left
        )
        assumed = self._outside.any_assumed((qname, *seen.chain))
        return Answered(
            qname, qtype, seen.rcode, seen.reply, seen.ttl, seen.addresses, how, left, latency,
            seen.cname, assumed, len(reply),
        )  # fmt: skip
