"""The search-path settings: flags and config keys to ``SearchPathConfig``; errors name the
setting (``nodecache serve`` exits 2 with it)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from kdns.config import ConfigError
from nodecache.config import build_config
from nodecache.searchpath.settings import searchpath_config

BASE = {"listen": ["127.0.0.1:53"], "cluster_upstream": ["10.96.0.11:53"], "upstream": "none"}


@pytest.mark.parametrize(
    ("values", "environ", "expected"),
    [
        pytest.param({}, {}, {"autopath": True, "local_nxdomain": True, "watch_pods": False},
                     id="defaults"),
        pytest.param({"autopath": "off", "local_nxdomain": False}, {},
                     {"autopath": False, "local_nxdomain": False}, id="off-as-text-and-bool"),
        pytest.param({"autopath_clients": ["10.244.0.0/16", "192.0.2.7"]}, {},
                     {"autopath_clients": (ipaddress.ip_network("10.244.0.0/16"),
                                           ipaddress.ip_network("192.0.2.7/32"))}, id="cidrs"),
        pytest.param({}, {"NODE_NAME": "node-a", "KUBERNETES_SERVICE_HOST": "10.96.0.1"},
                     {"node_name": "node-a", "watch_pods": True}, id="in-cluster-downward-api"),
        pytest.param({"node_name": "node-b", "kubeconfig": "/k"}, {},
                     {"node_name": "node-b", "kubeconfig": "/k", "watch_pods": True},
                     id="kubeconfig"),
        pytest.param({"autopath": "off"}, {"NODE_NAME": "n", "KUBERNETES_SERVICE_HOST": "x"},
                     {"watch_pods": False}, id="no-watch-without-autopath"),
        pytest.param({"local_nxdomain_except": ["Legacy.cluster.local", "x.cluster.local."]}, {},
                     {"local_nxdomain_except": ("legacy.cluster.local.", "x.cluster.local.")},
                     id="except-names-normalised"),
        pytest.param({"autopath_namespaces": ["shop", "data"]}, {},
                     {"autopath_namespaces": frozenset({"shop", "data"})}, id="namespaces"),
    ],
)  # fmt: skip
def test_settings(
    values: dict[str, Any], environ: dict[str, str], expected: dict[str, object]
) -> None:
    config = searchpath_config(values, ("corp.test",), environ)
    for key, value in expected.items():
        assert getattr(config, key) == value, key
    assert config.host_search == ("corp.test",)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        pytest.param({"autopath": "maybe"}, "autopath", id="autopath-not-on-off"),
        pytest.param({"local_nxdomain": 1}, "local_nxdomain", id="local-not-on-off"),
        pytest.param({"autopath_clients": ["10.0.0.0/33"]}, "autopath_clients", id="bad-cidr"),
        pytest.param({"autopath_clients": 7}, "autopath_clients", id="cidr-not-string"),
        pytest.param({"kubeconfig": "/k"}, "node_name", id="kubeconfig-needs-node-name"),
        pytest.param({"node_name": 3}, "node_name", id="node-name-not-string"),
        pytest.param(
            {"local_nxdomain_except": ["bad name!"]},
            "local_nxdomain_except",
            id="except-not-a-name",
        ),
    ],
)
def test_errors_name_the_setting(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        searchpath_config(values, (), {})
    assert raised.value.field == field


def test_host_search_domains_come_from_the_host_resolv_conf() -> None:
    text = "nameserver 192.0.2.1\nsearch corp.test lab.test.\noptions ndots:2\n"
    config = build_config({**BASE, "host_resolv_conf": "/x"}, read_text=lambda _path: text)
    assert config.searchpath.host_search == ("corp.test", "lab.test")
