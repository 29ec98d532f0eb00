"""The search-path machinery of one nodecache process: built from its settings, started with
its resolver, stopped with it, and rendered into ``/metrics``.

``SearchPathService.build`` returns None when both mechanisms are off, so nodecache then runs
with no policy at all (every query may take the handler's cache-hit shortcut, exactly as
before). With autopath on it needs a way to know its clients: ``--autopath-clients`` ranges
and/or the node's Pod watch (``pods.PodWatch``, started only when there is a node name and a
cluster to ask); with neither, autopath cannot act for anyone and says so in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from kdns.names import name_to_text, text_to_name
from nodecache.searchpath.clients import ClientFilter, PodDirectory
from nodecache.searchpath.policy import LOCAL_MECHANISMS, OUTCOMES, PROBES, Asker, SearchPath
from nodecache.searchpath.settings import SearchPathConfig
from nodecache.searchpath.shape import unshaped_subtrees

logger = logging.getLogger(__name__)

Metric = Callable[[str, str, str, Iterable[tuple[str, float]]], None]


class SearchPathService:
    def __init__(
        self, policy: SearchPath, directory: PodDirectory | None, config: SearchPathConfig
    ) -> None:
        self.policy = policy
        self.directory = directory
        self.config = config
        self._watch: Any = None

    @classmethod
    def build(
        cls,
        config: SearchPathConfig,
        cluster_zones: Iterable[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> SearchPathService | None:
        if not config.autopath and not config.local_nxdomain:
            return None
        cluster_zones = tuple(cluster_zones)
        directory = PodDirectory(config.node_name) if config.watch_pods else None
        clients = ClientFilter(config.autopath_clients, directory, config.autopath_namespaces)
        policy = SearchPath(
            cluster_zones,
            clients,
            host_search=config.host_search,
            autopath_on=config.autopath,
            local_nxdomain=config.local_nxdomain,
            excluded=(*config.excluded_zones, *_unshaped(config, cluster_zones)),
            clock=clock,
        )
        return cls(policy, directory, config)

    def start(self, resolver: Asker) -> None:
        self.policy.bind(resolver)
        self.policy.start()
        config = self.config
        if config.autopath and not self.policy.clients.enabled:
            logger.warning(
                "autopath is on but no client can be trusted: give --autopath-clients, or "
                "--node-name with a cluster (--kubeconfig or in-cluster) for the Pod watch"
            )
        if self.directory is not None:
            # Imported here: only this path loads the kubernetes client.
            from nodecache.searchpath.pods import PodWatch

            self._watch = PodWatch(self.directory, kubeconfig=config.kubeconfig)
            self._watch.start()
        logger.info(
            "search path: autopath %s, local NXDOMAIN %s, host search domains %s",
            "on" if config.autopath else "off",
            "on" if config.local_nxdomain else "off",
            " ".join(config.host_search) or "(none)",
        )

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        self.policy.close()

    def render(self, metric: Metric) -> None:
        """The search-path series, through ``nodecache.metrics``'s ``metric`` writer."""
        stats = self.policy.stats
        metric(
            "nodecache_searchpath_local_answers_total",
            "counter",
            "Client queries answered NXDOMAIN on the node, by mechanism: shape (the zone's "
            "name grammar), cut (a namespace's RFC 8020 cut), name (a learned NXDOMAIN).",
            [(f'{{mechanism="{m}"}}', stats.local[m]) for m in LOCAL_MECHANISMS],
        )
        metric(
            "nodecache_searchpath_autopath_answers_total",
            "counter",
            "Client queries answered with an autopath CNAME.",
            [("", stats.autopath_answers)],
        )
        metric(
            "nodecache_searchpath_autopath_decisions_total",
            "counter",
            "Autopath walks, by outcome.",
            [(f'{{outcome="{o}"}}', stats.decisions[o]) for o in OUTCOMES],
        )
        metric(
            "nodecache_searchpath_client_queries_saved_total",
            "counter",
            "Search-path queries clients did not have to send (autopath).",
            [("", stats.client_queries_saved)],
        )
        metric(
            "nodecache_searchpath_walk_local_total",
            "counter",
            "Autopath candidates settled on the node without a query, by mechanism.",
            [(f'{{mechanism="{m}"}}', stats.walk_local[m]) for m in LOCAL_MECHANISMS],
        )
        metric(
            "nodecache_searchpath_probes_total",
            "counter",
            "The search path's own queries through the cache, by purpose.",
            [(f'{{purpose="{p}"}}', stats.probes[p]) for p in PROBES],
        )
        metric(
            "nodecache_searchpath_upstream_queries_avoided_total",
            "counter",
            "Queries that would have gone to kdns or an upstream and did not.",
            [("", stats.upstream_avoided)],
        )
        metric(
            "nodecache_searchpath_overflow_total",
            "counter",
            "Queries that took the plain path because too many names were being decided.",
            [("", stats.overflow)],
        )
        if self.directory is not None:
            metric(
                "nodecache_searchpath_pod_addresses",
                "gauge",
                "Pod addresses on this node known to the autopath client filter.",
                [("", len(self.directory))],
            )


def _unshaped(config: SearchPathConfig, cluster_zones: Iterable[str]) -> list[str]:
    """The subtrees kdns's custom names need kept from the shape (README "Local NXDOMAIN")."""
    zones = tuple(text_to_name(zone) for zone in cluster_zones)
    names = [text_to_name(name) for name in config.local_nxdomain_except]
    return [name_to_text(subtree) for subtree in unshaped_subtrees(names, zones)]
