"""The shared forwarding parser (kdns.resolver.forwardconf) and ``except`` routing."""

from __future__ import annotations

from typing import Any

import pytest

from kdns.dns import names as zone
from kdns.resolver.config import Policy, ResolverConfig, Transport, UpstreamConfig
from kdns.resolver.core import Router
from kdns.resolver.forwardconf import ConfigError, forward_options, stub_domains

from .fakes import FakeUpstream

LISTEN = (("127.0.0.1", 53),)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"policy": "round_robin"}, {"policy": Policy.ROUND_ROBIN}),
        ({"force_tcp": True}, {"transport": Transport.TCP}),
        ({"prefer_udp": True}, {"transport": Transport.UDP}),
        ({"force_tcp": False}, {}),
        ({"max_concurrent": 1000}, {"max_concurrent": 1000}),
        ({"health_check": "100ms"}, {"probe_interval_s": 0.1}),
        ({"expire": "30s"}, {"tcp_idle_s": 30.0}),
        ({"expire": 5}, {"tcp_idle_s": 5.0}),
        ({"except": ["Corp.Example.", "lab.example"]}, {"except_zones": ("corp.example", "lab.example")}),
        ({"except": "a.example b.example"}, {"except_zones": ("a.example", "b.example")}),
        ({"max_fails": 3}, {"max_fails": 3}),
    ],
)  # fmt: skip
def test_forward_options_map_onto_upstream_config(raw: Any, expected: dict[str, Any]) -> None:
    options = forward_options(raw)
    assert options == expected
    UpstreamConfig((("192.0.2.1", 53),), **options)  # every mapped name is a real field


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ("fast", "forward", "expected a mapping"),
        ({"max_concurrent": 0}, "forward.max_concurrent", "must be a positive integer"),
        ({"max_concurrent": "lots"}, "forward.max_concurrent", "must be a positive integer"),
        ({"max_concurrent": True}, "forward.max_concurrent", "must be a positive integer"),
        ({"max_fails": -1}, "forward.max_fails", "must be a positive integer"),
        ({"policy": "fastest"}, "forward.policy", "expected one of sequential"),
        ({"force_tcp": "yes"}, "forward.force_tcp", "expected true or false"),
        ({"force_tcp": True, "prefer_udp": True}, "forward.prefer_udp", "cannot be combined"),
        ({"health_check": "0s"}, "forward.health_check", "must be a positive duration"),
        ({"health_check": "soon"}, "forward.health_check", "expected seconds or a duration"),
        ({"expire": -1}, "forward.expire", "must be a positive duration"),
        ({"except": ["bad..name"]}, "forward.except", "not a valid domain name"),
        ({"except": ["."]}, "forward.except", "root zone"),
        ({"except": 7}, "forward.except", "expected a string or a list"),
        ({"tls_servername": "x"}, "forward.tls_servername", "unknown setting"),
    ],
)  # fmt: skip
def test_forward_errors_name_the_field(raw: Any, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        forward_options(raw)
    assert caught.value.field == field
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (["corp.example"], "stub_domains", "expected a mapping"),
        ({"corp.example": []}, "stub_domains.corp.example", "no servers"),
        ({"corp.example": ["corp"]}, "stub_domains.corp.example", "IPv4 or IPv6 address"),
        ({"corp.example": ["127.0.0.1:53"]}, "stub_domains.corp.example", "forwarding loop"),
        ({"corp.example": ["192.0.2.1", "192.0.2.1:53"]}, "stub_domains.corp.example", "twice"),
        ({"corp.example": {"servers": ["192.0.2.1"], "max_concurrent": 0}},
         "stub_domains.corp.example.max_concurrent", "must be a positive integer"),
        ({"corp.example": {"servers": ["192.0.2.1"], "transport": "quic"}},
         "stub_domains.corp.example.transport", "expected udp or tcp"),
        ({"corp.example": {"servers": ["192.0.2.1"], "transport": "tcp", "force_tcp": True}},
         "stub_domains.corp.example.transport", "cannot be combined"),
        ({"bad..zone": ["192.0.2.1"]}, "stub_domains.bad..zone", "not a valid domain name"),
    ],
)  # fmt: skip
def test_stub_domain_errors_name_the_field(raw: Any, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        stub_domains(raw, {}, LISTEN)
    assert caught.value.field == field
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("shared", "spec", "transport", "max_concurrent"),
    [
        ({}, ["192.0.2.1"], Transport.UDP, 256),
        ({"transport": Transport.TCP}, ["192.0.2.1"], Transport.TCP, 256),
        ({"max_concurrent": 9}, {"servers": ["192.0.2.1"], "max_concurrent": 3}, Transport.UDP, 3),
        ({"transport": Transport.TCP}, {"servers": ["192.0.2.1"], "transport": "udp"},
         Transport.UDP, 256),
        ({}, {"servers": ["192.0.2.1"], "force_tcp": True}, Transport.TCP, 256),
    ],
)  # fmt: skip
def test_a_zones_own_options_win_over_the_shared_forward(
    shared: dict[str, Any], spec: Any, transport: Transport, max_concurrent: int
) -> None:
    ((name, group),) = stub_domains({"corp.example": spec}, shared, LISTEN)
    assert (name, group.transport, group.max_concurrent) == (
        "corp.example",
        transport,
        max_concurrent,
    )


GROUP = (("192.0.2.1", 53),)


@pytest.mark.parametrize(
    ("name", "route"),
    [
        ("www.example.org", "default"),
        ("x.corp.example", "stub:corp.example"),
        ("x.lab.corp.example", "default"),  # excepted from the stub: the next shorter route
        ("lab.corp.example", "default"),
        ("x.private.example", None),  # excepted from the default and no shorter route: REFUSED
        ("x.svc.cluster.local", "cluster:cluster.local"),
    ],
)
def test_except_falls_through_to_the_next_matching_route(name: str, route: str | None) -> None:
    config = ResolverConfig(
        cluster_upstream=UpstreamConfig(GROUP),
        upstream=UpstreamConfig(GROUP, except_zones=("private.example",)),
        stub_domains=(("corp.example", UpstreamConfig(GROUP, except_zones=("lab.corp.example",))),),
    )
    router = Router.from_config(config, lambda _c: FakeUpstream())
    found = router.route(zone.to_wire(name))
    assert (found.name if found else None) == route
