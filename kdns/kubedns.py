"""Following the kube-dns ConfigMap: which one to follow, and when a new one is applied.

Shared by nodecache and kdns. NodeLocal DNSCache reads ``stubDomains`` and
``upstreamNameservers`` from the kube-dns ConfigMap, mounted at ``/etc/kube-dns`` and polled
every 10 s (``-kubednscm``; ../shared/docs/nodecache.md §1.1 and §1.3). Both servers do the
same from either source:

* ``kube_dns_configmap_dir: PATH`` (``--kube-dns-configmap-dir``): the mounted ConfigMap, a
  directory with one file per key, polled every ``POLL_INTERVAL_S`` (``kdns.kubedns_sources``);
* ``kube_dns_configmap: NS/NAME`` (``--kube-dns-configmap``): followed through the API with a
  list+watch of that one ConfigMap (``kdns.watch.configmap``), so an edit applies in about a
  second; it needs get/list/watch on configmaps in NS.

Off unless one is set. What the ConfigMap says is merged under the config file and the flags
(``kdns.resolver.kubedns.overlay``: the file's own stub zones and ``upstream`` win) and applied
by the ordinary reload (nodecache) or ``Resolver.reconfigure`` of the forwarder (kdns, which
has no other reload), both of which keep the cache. ``KubeDnsFollower`` keeps the last good
ConfigMap: one that does not parse, or whose servers the rest of the config rejects (a stub
pointing at our own listen address, say), is logged with the field and counted, and the
previous one stays in force.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kdns.resolver.forwardconf import ConfigError
from kdns.resolver.kubedns import KubeDns, KubeDnsError, parse

logger = logging.getLogger(__name__)

SETTINGS: Final = ("kube_dns_configmap", "kube_dns_configmap_dir")
POLL_INTERVAL_S: Final = 10.0
"""How often the mounted directory is read (NodeLocal's ``DefaultConfigSyncPeriod``)."""


@dataclass(frozen=True, slots=True)
class KubeDnsSettings:
    configmap: tuple[str, str] | None = None
    """(namespace, name) followed through the API."""
    directory: str | None = None
    """A mounted ConfigMap (one file per key)."""

    @property
    def enabled(self) -> bool:
        return self.configmap is not None or self.directory is not None


def settings_of(values: Mapping[str, Any]) -> KubeDnsSettings:
    """The two settings, validated; errors name the field."""
    configmap = None
    text = values.get("kube_dns_configmap")
    if text is not None and text != "":
        if not isinstance(text, str) or text.count("/") != 1 or "" in text.split("/"):
            raise ConfigError("kube_dns_configmap", f"expected NAMESPACE/NAME, got {text!r}")
        namespace, name = text.split("/")
        configmap = (namespace, name)
    directory = values.get("kube_dns_configmap_dir")
    if directory is not None and (not isinstance(directory, str) or not directory):
        raise ConfigError("kube_dns_configmap_dir", f"expected a directory, got {directory!r}")
    if configmap is not None and directory:
        raise ConfigError(
            "kube_dns_configmap", "set kube_dns_configmap or kube_dns_configmap_dir, not both"
        )
    return KubeDnsSettings(configmap, directory or None)


class KubeDnsFollower:
    """The ConfigMap in force. ``offer`` is called by a source with each new ``data``.

    ``validate(kube_dns)`` builds the whole config with it (raising ``ConfigError``);
    ``changed()`` asks the server to reload, which reads ``current``.
    """

    def __init__(self, validate: Callable[[KubeDns], object], changed: Callable[[], None]) -> None:
        self.validate = validate
        self.changed = changed
        self.current = KubeDns()
        self.applied = 0
        self.rejected = 0
        self.seen = threading.Event()
        """Set once a source has reported (the ConfigMap or its absence)."""
        self._lock = threading.Lock()

    def offer(self, data: Mapping[str, str] | None, where: str) -> bool:
        """Take ``data`` if it is valid and differs from ``current``; True if it was taken."""
        with self._lock:
            try:
                candidate = parse(data)
                self.validate(candidate)
            except (KubeDnsError, ConfigError) as error:
                self.rejected += 1
                logger.error(
                    "kube-dns ConfigMap %s rejected (%s); keeping the previous one", where, error
                )
                self.seen.set()
                return False
            if candidate == self.current:
                self.seen.set()
                return False
            self.current = candidate
            self.applied += 1
        logger.info(
            "kube-dns ConfigMap %s: %d stub domain(s)%s",
            where,
            len(candidate.stub_domains),
            f", upstream nameservers {', '.join(candidate.upstream_nameservers)}"
            if candidate.upstream_nameservers
            else "",
        )
        self.seen.set()
        self.changed()
        return True
