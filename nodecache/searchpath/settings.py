"""The search-path settings: flags and config keys in, a validated ``SearchPathConfig`` out.

``nodecache.config.build_config`` calls ``searchpath_config`` with the merged settings (config
file overlaid by flags); errors are ``ConfigError``s naming the setting. The flags:

=========================  ===========  =========================================================
``--autopath on|off``      on           node-scoped autopath (``nodecache.searchpath.policy``)
``--local-nxdomain on|off`` on          NXDOMAIN on the node from the zone's shape and the
                                        namespace cuts
``--local-nxdomain-except`` none        kdns custom names in a cluster zone outside its grammar
                                        (``legacy.cluster.local``): passed to kdns (repeatable)
``--autopath-clients CIDR`` none        trust these source ranges as ClusterFirst pods (repeatable)
``--autopath-namespaces NS`` all        autopath only for these namespaces (repeatable)
``--node-name NAME``       $NODE_NAME   watch this node's Pods (with a cluster config)
``--kubeconfig PATH``      in-cluster   where the Pod watch's cluster is
=========================  ===========  =========================================================

The host search domains come from ``--host-resolv-conf`` (the node's resolv.conf, which the
kubelet appends to every ClusterFirst pod's search list).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from kdns.config import ConfigError, string_list
from kdns.custom import RecordError, parse_domain
from kdns.names import name_to_text
from nodecache.searchpath.clients import IPNetwork, parse_cidr

SETTINGS: Final = (
    "autopath", "local_nxdomain", "autopath_clients", "autopath_namespaces", "node_name",
    "kubeconfig", "local_nxdomain_except",
)  # fmt: skip
"""The setting names this module reads (all have flags)."""


@dataclass(frozen=True, slots=True)
class SearchPathConfig:
    autopath: bool = True
    local_nxdomain: bool = True
    autopath_clients: tuple[IPNetwork, ...] = ()
    autopath_namespaces: frozenset[str] | None = None
    node_name: str = ""
    kubeconfig: str | None = None
    host_search: tuple[str, ...] = ()
    """The node's search domains, in resolv.conf order."""
    excluded_zones: tuple[str, ...] = ()
    """Stub domains: names another route serves, where the cluster zone's shape says nothing
    (one may sit inside a cluster zone)."""
    local_nxdomain_except: tuple[str, ...] = ()
    """kdns custom record names the cluster zone's shape must not deny (``shape.unshaped_subtrees``
    turns them into the subtrees passed to kdns)."""
    watch_pods: bool = False
    """Whether the Pod watch runs: autopath on, a node name, and a cluster to ask (a
    kubeconfig or the in-cluster environment)."""


def _switch(values: Mapping[str, Any], key: str) -> bool:
    value = values.get(key)
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("on", "off", "true", "false"):
        return value.lower() in ("on", "true")
    raise ConfigError(key, f"expected on or off, got {value!r}")


def _strings(values: Mapping[str, Any], key: str) -> list[str]:
    return [v.strip() for v in string_list(values, key) if v.strip()]


def searchpath_config(
    values: Mapping[str, Any],
    host_search: tuple[str, ...],
    environ: Mapping[str, str] = os.environ,
    excluded_zones: tuple[str, ...] = (),
) -> SearchPathConfig:
    """Validate the search-path settings (see the module docstring)."""
    autopath = _switch(values, "autopath")
    local_nxdomain = _switch(values, "local_nxdomain")
    clients = []
    for text in _strings(values, "autopath_clients"):
        try:
            clients.append(parse_cidr(text))
        except ValueError:
            raise ConfigError("autopath_clients", f"{text!r} is not a CIDR") from None
    namespaces = _strings(values, "autopath_namespaces")
    custom_names = []
    for text in _strings(values, "local_nxdomain_except"):
        try:
            custom_names.append(name_to_text(parse_domain(text, "local_nxdomain_except")))
        except RecordError as error:
            raise ConfigError("local_nxdomain_except", error.message) from None
    node_name = values.get("node_name")
    if node_name is None:
        node_name = environ.get("NODE_NAME", "")
    if not isinstance(node_name, str):
        raise ConfigError("node_name", f"expected a node name, got {node_name!r}")
    kubeconfig = values.get("kubeconfig")
    if kubeconfig is not None and not isinstance(kubeconfig, str):
        raise ConfigError("kubeconfig", f"expected a path, got {kubeconfig!r}")
    has_cluster = bool(kubeconfig) or bool(environ.get("KUBERNETES_SERVICE_HOST"))
    if kubeconfig and not node_name.strip():
        raise ConfigError(
            "node_name",
            "required with --kubeconfig: the Pod watch is limited to this node's Pods "
            "(set --node-name or NODE_NAME from the downward API)",
        )
    return SearchPathConfig(
        autopath=autopath,
        local_nxdomain=local_nxdomain,
        autopath_clients=tuple(clients),
        autopath_namespaces=frozenset(namespaces) if namespaces else None,
        node_name=node_name.strip(),
        kubeconfig=kubeconfig or None,
        host_search=host_search,
        excluded_zones=excluded_zones,
        local_nxdomain_except=tuple(custom_names),
        watch_pods=autopath and bool(node_name.strip()) and has_cluster,
    )


def describe_searchpath(config: SearchPathConfig) -> list[str]:
    """Lines for ``nodecache check``."""
    if config.autopath_clients or config.watch_pods:
        sources = [str(network) for network in config.autopath_clients]
        if config.watch_pods:
            sources.append(f"pods on node {config.node_name}")
        clients = ", ".join(sources)
    else:
        clients = "none (autopath cannot act: no --autopath-clients and no Pod watch)"
    namespaces = ", ".join(sorted(config.autopath_namespaces or ())) or "all"
    excepted = " ".join(config.local_nxdomain_except)
    return [
        f"local NXDOMAIN (zone shape, namespace cuts): {'on' if config.local_nxdomain else 'off'}"
        + (f"; except {excepted}" if excepted else ""),
        f"autopath: {'on' if config.autopath else 'off'}; clients: {clients}; "
        f"namespaces: {namespaces}",
        f"host search domains: {' '.join(config.host_search) or '(none)'}",
    ]
