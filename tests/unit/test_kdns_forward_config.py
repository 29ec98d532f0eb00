"""kdns's ``forward:`` and ``stub_domains:`` settings: what they build, errors naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from kdns.config import ConfigError, build_config
from kdns.forwarding import forward_config
from kdns.resolver.config import Policy, Transport


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"forward": {"max_concurrent": 0}}, "forward.max_concurrent", "must be a positive integer"),
        ({"forward": {"policy": "fastest"}}, "forward.policy", "expected one of"),
        ({"forward": {"expire": "never"}}, "forward.expire", "expected seconds or a duration"),
        ({"forward": {"health_check": 0}}, "forward.health_check", "must be a positive duration"),
        ({"forward": {"force_tcp": True, "prefer_udp": True}}, "forward.prefer_udp", "cannot be combined"),
        ({"forward": {"except": ["a..b"]}}, "forward.except", "not a valid domain name"),
        ({"forward": {"tls": "x"}}, "forward.tls", "unknown setting"),
        ({"stub_domains": {"corp.example": []}}, "stub_domains.corp.example", "no servers"),
        ({"stub_domains": {"corp.example": ["127.0.0.1:53"]}}, "stub_domains.corp.example", "loop"),
        ({"stub_domains": {"corp.example": {"servers": ["192.0.2.1"], "expire": -1}}},
         "stub_domains.corp.example.expire", "must be a positive duration"),
        ({"kube_dns_configmap": "kube-dns"}, "kube_dns_configmap", "expected NAMESPACE/NAME"),
        ({"kube_dns_configmap": "kube-system/kube-dns", "kube_dns_configmap_dir": "/etc/kube-dns"},
         "kube_dns_configmap", "not both"),
    ],
)  # fmt: skip
def test_errors_name_the_field(values: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"listen": ["127.0.0.1:53"], **values})
    assert caught.value.field == field
    assert message in str(caught.value)


def test_forward_options_reach_the_default_upstream_and_the_stub_domains() -> None:
    config = build_config(
        {
            "listen": ["127.0.0.1:53"],
            "upstream": ["192.0.2.1"],
            "forward": {"policy": "round_robin", "force_tcp": True, "expire": "30s"},
            "stub_domains": {
                "corp.example": ["192.0.2.53:5353"],
                "lab.example": {"servers": ["192.0.2.54"], "transport": "udp"},
            },
        }
    )
    resolver = forward_config(config)
    assert resolver is not None
    assert resolver.upstream is not None
    groups = [resolver.upstream, *(group for _zone, group in resolver.stub_domains)]
    summary = [(g.servers, g.transport, g.policy, g.tcp_idle_s) for g in groups]
    assert summary == [
        ((("192.0.2.1", 53),), Transport.TCP, Policy.ROUND_ROBIN, 30.0),
        ((("192.0.2.53", 5353),), Transport.TCP, Policy.ROUND_ROBIN, 30.0),
        ((("192.0.2.54", 53),), Transport.UDP, Policy.ROUND_ROBIN, 30.0),
    ]


def test_stub_domains_alone_still_forward() -> None:
    config = build_config(
        {
            "listen": ["127.0.0.1:53"],
            "upstream": "none",
            "stub_domains": {"corp.example": ["192.0.2.53"]},
        }
    )
    resolver = forward_config(config)
    assert resolver is not None
    assert resolver.upstream is None
    assert [zone for zone, _group in resolver.stub_domains] == ["corp.example"]
