"""kdns's forwarding: the resolver core's routing built from kdns's ``Config``, and the kube-dns
ConfigMap followed into it without a restart.

Names outside the cluster zones go to the resolver core (``kdns.resolver``) through a
``Forwarder``: each stub domain (``stub_domains:``) to its own servers, everything else to
``upstream`` (or resolv.conf's nameservers), each group with the ``forward:`` options
(``kdns.resolver.forwardconf``). With ``kube_dns_configmap`` / ``kube_dns_configmap_dir`` set,
``KubeDnsForwarding`` follows the ConfigMap as nodecache does (``kdns.kubedns``): each valid edit
is merged under the file and flags (``kdns.resolver.kubedns.overlay``) and applied with
``Resolver.reconfigure``, which keeps the cache; an invalid one is logged and the last good one
stays. kdns has no other config reload, so only the forwarding routes follow the ConfigMap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Final

from kdns.config import Config
from kdns.kubedns import KubeDnsFollower
from kdns.kubedns_sources import Source, start_source
from kdns.resolver import resolvconf
from kdns.resolver.config import ResolverConfig, UpstreamConfig
from kdns.resolver.core import Resolver
from kdns.resolver.kubedns import KubeDns
from kdns.serve.forward import Forwarder

logger = logging.getLogger("kdns")

KUBE_DNS_STARTUP_WAIT_S: Final = 2.0
"""How long serving waits for the ConfigMap's first read (nodecache waits as long)."""


def forward_config(config: Config) -> ResolverConfig:
    """The resolver core's routing for kdns: the cluster zones are ours (never forwarded), each
    stub domain goes to its servers, everything else to ``upstream`` (or resolv.conf's). No
    routes at all when there is neither (``--upstream none`` and no stub domains)."""
    servers = config.upstream
    if servers is None:
        servers = tuple((ip, 53) for ip in resolvconf.read(config.resolv_conf).nameservers)
    # Forwarding to ourselves would loop until the timeout.
    own = {(host, port) for host, port in config.listen}
    kept = tuple(server for server in servers if server not in own)
    if len(kept) != len(servers):
        logger.warning("ignoring upstreams that are our own listen addresses: %s", own)
    return ResolverConfig(
        cluster_zones=tuple(".".join(zone) for zone in config.zone.zones),
        cluster_upstream=None,
        reverse_zones=(),
        stub_domains=config.stub_domains,
        upstream=UpstreamConfig(kept, **config.forward) if kept else None,
        workers=config.forward_workers,
        max_pending=config.forward_max_pending,
        max_queue_wait_s=config.forward_max_queue_wait_s,
        max_refreshes=config.forward_max_refreshes,
    )


def describe(routing: ResolverConfig) -> None:
    """Log where each forwarded name goes."""
    if routing.upstream is None and not routing.stub_domains:
        logger.info("forwarding disabled: names outside the zones are answered REFUSED")
    if routing.upstream is not None:
        servers = routing.upstream.servers
        logger.info("forwarding other names to %s", ", ".join(f"{h}:{p}" for h, p in servers))
    for name, group in routing.stub_domains:
        servers = group.servers
        logger.info("forwarding %s to %s", name, ", ".join(f"{h}:{p}" for h, p in servers))


def make_forwarder(config: Config) -> Forwarder | None:
    """The upstream path for names outside our zones, or None when nothing is forwarded and
    no kube-dns ConfigMap could add routes later."""
    routing = forward_config(config)
    describe(routing)
    if routing.upstream is None and not routing.stub_domains and not config.kube_dns.enabled:
        return None
    resolver = Resolver.from_config(routing)
    resolver.start()
    return Forwarder(resolver)


class KubeDnsForwarding:
    """Keeps a forwarder's routes in line with the kube-dns ConfigMap.

    ``load(kube_dns)`` builds kdns's whole config with the ConfigMap overlaid (raising
    ``ConfigError``), so an edit the rest of the config rejects is refused by name."""

    def __init__(self, load: Callable[[KubeDns], Config], forwarder: Forwarder) -> None:
        self.load = load
        self.forwarder = forwarder
        self.follower = KubeDnsFollower(lambda kube_dns: forward_config(load(kube_dns)), self.apply)
        self.source: Source | None = None

    def apply(self) -> None:
        routing = forward_config(self.load(self.follower.current))
        self.forwarder.resolver.reconfigure(routing)
        describe(routing)

    def start(self, config: Config, environ: Mapping[str, str] = os.environ) -> None:
        """Start the source the settings name; wait briefly for its first read, so serving
        starts with the ConfigMap if it comes quickly (else it applies when it does)."""
        self.source = start_source(config.kube_dns, self.follower, config.kubeconfig, environ)
        self.follower.seen.wait(KUBE_DNS_STARTUP_WAIT_S)

    def stop(self) -> None:
        if self.source is not None:
            self.source.stop()
