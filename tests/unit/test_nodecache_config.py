"""nodecache settings: every flag and config-file key lands in its field, defaults follow
NodeLocal DNSCache, flags win over the file, and every error names the field.

No sockets, no serving: ``nodecache.cli.load_config`` and ``main`` up to the config step
(``check`` prints the effective settings and exits).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from kdns.config import ConfigError
from kdns.resolver.config import CLUSTER_TTL, OTHER_TTL, Policy, StaleMode, Transport, ZoneTTL
from kdns.serve.tcplimits import TCPLimits
from nodecache import cli
from nodecache.config import Config, build_config, resolv_conf_nameservers

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "nodecache.yaml"
README = ROOT / "nodecache" / "README.md"
REQUIRED = ["--listen", "127.0.0.1:53", "--cluster-upstream", "10.96.0.11:53"]


@pytest.fixture(name="resolv")
def _resolv(tmp_path: Path) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text("search default.svc.cluster.local\nnameserver 192.0.2.1\noptions ndots:5\n")
    return path


def load(*flags: str, config: str | None = None) -> Config:
    argv = ["serve", *flags]
    if config is not None:
        argv += ["--config", config]
    return cli.load_config(cli.make_parser().parse_args(argv))


# --- flags -> fields -----------------------------------------------------------------------------


FLAG_CASES = [
    (["--listen", "169.254.20.10:53", "--listen", "10.96.0.10:53"], lambda c: c.listen,
     (("169.254.20.10", 53), ("10.96.0.10", 53))),
    (["--listen", "[fd00::a]:53"], lambda c: c.listen, (("fd00::a", 53),)),
    (["--cluster-zone", "cluster.local", "--cluster-zone", "corp.internal"],
     lambda c: c.resolver.cluster_zones, ("cluster.local", "corp.internal")),
    (["--cluster-upstream", "10.96.0.11:53"], lambda c: c.resolver.cluster_upstream.servers,
     (("10.96.0.11", 53),)),
    (["--cluster-upstream", "10.96.0.11"], lambda c: c.resolver.cluster_upstream.transport,
     Transport.TCP),
    (["--upstream", "192.0.2.53", "--upstream", "192.0.2.54:5353"],
     lambda c: c.resolver.upstream.servers, (("192.0.2.53", 53), ("192.0.2.54", 5353))),
    (["--upstream", "192.0.2.53"], lambda c: c.resolver.upstream.transport, Transport.UDP),
    (["--upstream", "none"], lambda c: (c.resolver.upstream, c.upstream_source), (None, "none")),
    (["--health-listen", "127.0.0.1:9253"], lambda c: c.health_listen, ("127.0.0.1", 9253)),
    (["--health-listen", "none"], lambda c: c.health_listen, None),
    (["--max-udp-size", "4096"], lambda c: c.max_udp_size, 4096),
    (["--log-level", "debug"], lambda c: c.log_level, "DEBUG"),
    ([], lambda c: c.metrics_listen, ("0.0.0.0", 9253)),  # NodeLocal's metrics port
    (["--metrics-listen", "127.0.0.1:9300"], lambda c: c.metrics_listen, ("127.0.0.1", 9300)),
    (["--metrics-listen", "none"], lambda c: c.metrics_listen, None),
    # deploy/nodecache: health on 9253 already serves /metrics; no second listener to clash.
    (["--health-listen", "0.0.0.0:9253"], lambda c: c.metrics_listen, None),
    (["--health-listen", "10.0.0.1:9253", "--metrics-listen", "10.0.0.2:9253"],
     lambda c: c.metrics_listen, ("10.0.0.2", 9253)),
    ([], lambda c: c.log_format, "text"),
    (["--log-format", "json"], lambda c: c.log_format, "json"),
    (["--tcp-max-connections", "256"], lambda c: c.tcp.max_connections, 256),
    (["--tcp-max-per-client", "8"], lambda c: c.tcp.max_per_client, 8),
    (["--workers", "8"], lambda c: c.resolver.workers, 8),
    (["--max-pending", "100"], lambda c: c.resolver.max_pending, 100),
    (["--max-queue-wait-s", "500ms"], lambda c: c.resolver.max_queue_wait_s, 0.5),
    (["--max-queue-wait-s", "3"], lambda c: c.resolver.max_queue_wait_s, 3.0),
    (["--max-refreshes", "0"], lambda c: c.resolver.max_refreshes, 0),
]  # fmt: skip


@pytest.mark.parametrize(("flags", "read", "value"), FLAG_CASES)
def test_flag_sets_field(flags: list[str], read: Any, value: object, resolv: Path) -> None:
    base = {"--listen": "127.0.0.1:53", "--cluster-upstream": "10.96.0.11:53"}
    for flag in flags[::2]:
        base.pop(flag, None)
    argv = [*flags, *(x for pair in base.items() for x in pair), "--host-resolv-conf", str(resolv)]
    assert read(load(*argv)) == value


def test_defaults_follow_nodelocal(resolv: Path) -> None:
    config = load(*REQUIRED, "--host-resolv-conf", str(resolv))
    resolver = config.resolver
    assert resolver.cluster_zones == ("cluster.local",)
    assert resolver.reverse_zones == ("in-addr.arpa", "ip6.arpa")
    assert resolver.cluster_upstream is not None
    assert resolver.cluster_upstream.transport is Transport.TCP  # force_tcp
    assert resolver.upstream is not None
    assert resolver.upstream.servers == (("192.0.2.1", 53),)  # from resolv.conf
    assert resolver.upstream.transport is Transport.UDP
    assert config.upstream_source == f"resolv.conf {resolv}"
    assert dict(resolver.zone_ttls())["cluster.local"] == CLUSTER_TTL
    assert resolver.cache.default_ttl == OTHER_TTL
    assert resolver.stale.mode is StaleMode.VERIFY
    assert (
        resolver.cluster_upstream.try_timeout_s,
        resolver.cluster_upstream.overall_timeout_s,
    ) == (2.0, 5.0)
    assert config.health_listen == ("0.0.0.0", 8080)
    assert config.max_udp_size == 1232


def test_resolv_conf_parsing() -> None:
    text = (
        "# generated\n"
        "nameserver 10.0.0.2   # primary\n"
        "nameserver fd00::53\n"
        "nameserver fe80::1%eth0\n"
        "nameserver resolver.example\n"
        "search a.example b.example\n"
        "options ndots:5 timeout:2\n"
    )
    servers, skipped = resolv_conf_nameservers(text)
    assert servers == ["10.0.0.2", "fd00::53"]
    assert [entry.split()[0] for entry in skipped] == ["fe80::1%eth0", "resolver.example"]


def test_resolv_conf_entry_that_is_our_own_address_is_skipped(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 169.254.20.10\nnameserver 192.0.2.1\n")
    config = load("--listen", "169.254.20.10:53", "--cluster-upstream", "10.96.0.11",
                  "--host-resolv-conf", str(resolv))  # fmt: skip
    assert config.resolver.upstream is not None
    assert config.resolver.upstream.servers == (("192.0.2.1", 53),)
    assert any("our own listen address" in note for note in config.notes)


# --- the config file -----------------------------------------------------------------------------


def test_example_config_file_loads_into_every_field(resolv: Path) -> None:
    config = load("--host-resolv-conf", str(resolv), config=str(EXAMPLE))
    resolver = config.resolver
    assert config.listen == (("169.254.20.10", 53), ("10.96.0.10", 53))
    assert config.health_listen == ("169.254.20.10", 8080)
    assert resolver.cluster_upstream is not None
    assert resolver.cluster_upstream.servers == (("10.96.0.11", 53),)
    assert resolver.cluster_upstream.transport is Transport.TCP
    stubs = dict(resolver.stub_domains)
    assert stubs["corp.example"].servers == (("10.0.0.53", 53), ("10.0.0.54", 5353))
    assert stubs["corp.example"].transport is Transport.UDP
    assert stubs["acme.internal"].transport is Transport.TCP
    ttls = dict(resolver.zone_ttls())
    assert ttls["corp.example"] == ZoneTTL(
        success_min_s=5, success_max_s=300, denial_min_s=5, denial_max_s=30
    )
    assert ttls["cluster.local"] == CLUSTER_TTL
    assert resolver.cache.max_bytes == 32 * 1024 * 1024
    assert resolver.cache.servfail_s == 5
    assert resolver.prefetch.keep_warm_ttls == 2
    assert resolver.stale.max_stale_s == 3600.0
    assert resolver.stale.verify_timeout_s == 1.8
    assert stubs["acme.internal"].max_concurrent == 256
    assert resolver.workers == 32
    assert (resolver.max_pending, resolver.max_queue_wait_s, resolver.max_refreshes) == (1024, 2, 4)
    assert config.drain_timeout_s == 5.0
    assert config.config_file == str(EXAMPLE)


def test_readme_shows_the_example_file_verbatim() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert EXAMPLE.read_text() in blocks


def test_file_keys_and_units(tmp_path: Path, resolv: Path) -> None:
    path = tmp_path / "nodecache.yaml"
    path.write_text(
        "listen: 127.0.0.1:5353\n"
        "cluster-upstream: 10.96.0.11\n"  # dashes read as underscores
        "cluster_transport: udp\n"
        "upstream: [192.0.2.9]\n"
        "reverse_zones: [in-addr.arpa]\n"
        "zone_ttls:\n"
        "  shop.example: {success_max_s: 5m, denial_max_s: 60}\n"
        "  cluster.local: {denial_max_s: 10}\n"  # the rest from NodeLocal's cluster block
        "default_ttl: {success_max_s: 60}\n"
        "cache: {max_entries: 1000, max_bytes: 1Mi, servfail_s: 0}\n"
        "prefetch: {enabled: false}\n"
        "serve_stale: {mode: immediate, max_stale_s: 1h, verify_timeout_s: 100ms}\n"
        "upstream_options: {try_timeout_s: 500ms, overall_timeout_s: 1, max_concurrent: 64}\n"
        "max_pending: 100\n"
        "drain_timeout_s: 2s\n"
    )
    config = load("--host-resolv-conf", str(resolv), config=str(path))
    resolver = config.resolver
    assert resolver.cluster_upstream is not None
    assert resolver.cluster_upstream.transport is Transport.UDP
    assert resolver.cluster_upstream.try_timeout_s == 0.5
    assert resolver.upstream is not None
    assert resolver.upstream.max_concurrent == 64
    assert resolver.reverse_zones == ("in-addr.arpa",)
    ttls = dict(resolver.zone_ttls())
    assert ttls["shop.example"].success_max_s == 300
    assert ttls["shop.example"].success_min_s == 5
    assert ttls["cluster.local"] == ZoneTTL(5, 30, 5, 10)
    assert resolver.cache.default_ttl.success_max_s == 60
    assert (resolver.cache.max_entries, resolver.cache.max_bytes, resolver.cache.servfail_s) == (
        1000,
        1 << 20,
        0,
    )
    assert resolver.prefetch.enabled is False
    assert resolver.stale.mode is StaleMode.IMMEDIATE
    assert resolver.stale.verify_timeout_s == pytest.approx(0.1)
    assert resolver.max_pending == 100
    assert config.drain_timeout_s == 2.0


def test_flags_win_over_the_file(tmp_path: Path, resolv: Path) -> None:
    path = tmp_path / "nodecache.yaml"
    path.write_text(
        "listen: [127.0.0.1:5353]\ncluster_upstream: 10.96.0.11\nupstream: 192.0.2.9\n"
        "log_level: ERROR\nmax_udp_size: 4096\n"
    )
    config = load("--listen", "127.0.0.2:53", "--upstream", "192.0.2.10", "--log-level", "INFO",
                  config=str(path))  # fmt: skip
    assert config.listen == (("127.0.0.2", 53),)
    assert config.resolver.upstream is not None
    assert config.resolver.upstream.servers == (("192.0.2.10", 53),)
    assert config.log_level == "INFO"
    assert config.max_udp_size == 4096  # not given as a flag: the file's


def test_tcp_limits_from_the_file_with_units(resolv: Path) -> None:
    config = build_config({
        "listen": "127.0.0.1:53", "cluster_upstream": "10.96.0.11", "host_resolv_conf": str(resolv),
        "tcp_idle_timeout_s": "30s", "tcp_write_timeout_s": "500ms", "tcp_max_connections": 512,
        "tcp_max_per_client": 16, "tcp_max_queued_bytes": "32Ki", "tcp_max_buffer_bytes": "8Mi",
        "tcp_socket_buffer_bytes": "16Ki",
    })  # fmt: skip
    assert config.tcp == TCPLimits(
        max_connections=512,
        max_per_client=16,
        idle_timeout_s=30.0,
        write_timeout_s=0.5,
        max_queued_bytes=32 * 1024,
        max_buffer_bytes=8 * 1024 * 1024,
        socket_buffer_bytes=16 * 1024,
    )


def test_reload_keeps_restart_only_settings(resolv: Path) -> None:
    common = {"cluster_upstream": "10.96.0.11", "host_resolv_conf": str(resolv)}
    old = build_config({**common, "listen": "127.0.0.1:53", "cache": {"max_entries": 100}})
    new = build_config({
        **common, "listen": "127.0.0.1:54", "cache": {"max_entries": 200, "servfail_s": 1},
        "serve_stale": {"mode": "off"}, "tcp_max_per_client": 8,
    })  # fmt: skip
    assert old.restart_only_changes(new) == ["listen", "tcp", "cache.max_entries"]
    applied = old.keeping_restart_only(new)
    assert applied.listen == old.listen
    assert applied.tcp == old.tcp
    assert applied.resolver.cache.max_entries == 100
    assert applied.resolver.cache.servfail_s == 1  # not restart-only: applied
    assert applied.resolver.stale.mode is StaleMode.OFF


# --- errors name the field -----------------------------------------------------------------------

ERROR_CASES = [
    ({"listen": None}, "listen"),
    ({"listen": "localhost:53"}, "listen"),
    ({"listen": "127.0.0.1"}, "listen"),
    ({"listen": ["127.0.0.1:53", "127.0.0.1:53"]}, "listen"),
    ({"cluster_upstream": None}, "cluster_upstream"),
    ({"cluster_upstream": "kube-dns.kube-system"}, "cluster_upstream"),
    ({"cluster_upstream": "127.0.0.1:53"}, "cluster_upstream"),  # ourselves: a loop
    ({"upstream": "10.0.0.1:99999"}, "upstream"),
    ({"upstream": ["127.0.0.1:53"]}, "upstream"),
    ({"upstream": 53}, "upstream"),
    ({"cluster_zone": "bad zone"}, "cluster_zone"),
    ({"cluster_zone": ["a.local", "A.local."]}, "cluster_zone"),
    ({"reverse_zones": ["in-addr..arpa"]}, "reverse_zones"),
    ({"cluster_transport": "quic"}, "cluster_transport"),
    ({"health_listen": "8080"}, "health_listen"),
    ({"max_udp_size": 100}, "max_udp_size"),
    ({"max_udp_size": "big"}, "max_udp_size"),
    ({"log_level": "LOUD"}, "log_level"),
    ({"colour": "blue"}, "colour"),
    ({"stub_domains": ["corp.example"]}, "stub_domains"),
    ({"stub_domains": {"corp.example": []}}, "stub_domains.corp.example"),
    ({"stub_domains": {"corp.example": ["corp-dns"]}}, "stub_domains.corp.example"),
    ({"stub_domains": {"corp.example": {"servers": ["10.0.0.1"], "transport": "x"}}},
     "stub_domains.corp.example.transport"),
    ({"stub_domains": {"corp.example": {"server": ["10.0.0.1"]}}},
     "stub_domains.corp.example.server"),
    ({"zone_ttls": {"x.example": {"success_min_s": 60, "success_max_s": 30}}},
     "zone_ttls.x.example.success_min_s"),
    ({"zone_ttls": {"x.example": {"success_max": 30}}}, "zone_ttls.x.example.success_max"),
    ({"zone_ttls": {"x.example": {"denial_max_s": -1}}}, "zone_ttls.x.example.denial_max_s"),
    ({"default_ttl": {"success_max_s": "forever"}}, "default_ttl.success_max_s"),
    ({"cache": {"max_entries": 0}}, "cache.max_entries"),
    ({"cache": {"max_bytes": "lots"}}, "cache.max_bytes"),
    ({"cache": {"servfail_s": 600}}, "cache.servfail_s"),
    ({"cache": 5}, "cache"),
    ({"prefetch": {"lead_percent": 5}}, "prefetch.lead_percent"),
    ({"prefetch": {"enabled": "yes"}}, "prefetch.enabled"),
    ({"serve_stale": {"mode": "sometimes"}}, "serve_stale.mode"),
    ({"serve_stale": {"verify_timeout_s": -1}}, "serve_stale.verify_timeout_s"),
    ({"serve_stale": {"ttl_s": 0}}, "serve_stale.ttl_s"),
    ({"upstream_options": {"try_timeout_s": 6}}, "upstream_options.overall_timeout_s"),
    ({"upstream_options": {"max_concurrent": 0}}, "upstream_options.max_concurrent"),
    ({"upstream_options": {"udp_size": 100}}, "upstream_options.udp_size"),
    ({"forward": {"max_concurrent": 0}}, "forward.max_concurrent"),
    ({"forward": {"policy": "fastest"}}, "forward.policy"),
    ({"forward": {"force_tcp": True, "prefer_udp": True}}, "forward.prefer_udp"),
    ({"forward": {"health_check": "0s"}}, "forward.health_check"),
    ({"forward": {"expire": "never"}}, "forward.expire"),
    ({"forward": {"except": ["."]}}, "forward.except"),
    ({"stub_domains": {"corp.example": {"servers": ["10.0.0.53"], "max_concurrent": -1}}},
     "stub_domains.corp.example.max_concurrent"),
    ({"workers": 0}, "workers"),
    ({"max_pending": 0}, "max_pending"),
    ({"max_pending": "many"}, "max_pending"),
    ({"max_queue_wait_s": 0}, "max_queue_wait_s"),
    ({"max_queue_wait_s": "soon"}, "max_queue_wait_s"),
    ({"max_refreshes": -1}, "max_refreshes"),
    ({"drain_timeout_s": 0}, "drain_timeout_s"),
    ({"metrics_listen": "9253"}, "metrics_listen"),
    ({"metrics_listen": 9253}, "metrics_listen"),
    ({"log_format": "xml"}, "log_format"),
    ({"tcp_idle_timeout_s": 0}, "tcp_idle_timeout_s"),
    ({"tcp_write_timeout_s": "soon"}, "tcp_write_timeout_s"),
    ({"tcp_max_connections": 0}, "tcp_max_connections"),
    ({"tcp_max_per_client": 2000}, "tcp_max_per_client"),  # over the 1024 cap
    ({"tcp_max_per_client": 1.5}, "tcp_max_per_client"),
    ({"tcp_max_queued_bytes": "lots"}, "tcp_max_queued_bytes"),
    ({"tcp_max_buffer_bytes": "64Ki"}, "tcp_max_buffer_bytes"),  # under one connection's bound
    ({"tcp_socket_buffer_bytes": "1Ki"}, "tcp_socket_buffer_bytes"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "field"), ERROR_CASES, ids=[c[1] for c in ERROR_CASES])
def test_errors_name_the_field(change: dict[str, Any], field: str, resolv: Path) -> None:
    values: dict[str, Any] = {
        "listen": "127.0.0.1:53",
        "cluster_upstream": "10.96.0.11",
        "host_resolv_conf": str(resolv),
        **change,
    }
    with pytest.raises(ConfigError) as caught:
        build_config({k: v for k, v in values.items() if v is not None})
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_no_upstream_anywhere_names_upstream(tmp_path: Path) -> None:
    empty = tmp_path / "resolv.conf"
    empty.write_text("search example\n")
    for path in (empty, tmp_path / "missing.conf"):
        with pytest.raises(ConfigError) as caught:
            build_config({"listen": "127.0.0.1:53", "cluster_upstream": "10.96.0.11",
                          "host_resolv_conf": str(path)})  # fmt: skip
        assert caught.value.field == "upstream"


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["serve", "--cluster-upstream", "10.96.0.11"], "listen"),
        (["serve", *REQUIRED, "--max-udp-size", "x"], "--max-udp-size"),
        (["serve", *REQUIRED, "--bogus"], "--bogus"),
        (["serve", *REQUIRED, "--config", "/nonexistent/nodecache.yaml"], "config"),
        (["serve", "--listen", "127.0.0.1:53"], "cluster_upstream"),
    ],
)
def test_main_exits_2_naming_the_field(
    argv: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nodecache: error: ")
    assert field in err


def test_config_file_errors_exit_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for text, field in [
        ("listen: [", "config"),  # not YAML
        ("- a\n- b\n", "config"),  # not a mapping
        ("serve_stale: {mode: sometimes}\n", "serve_stale.mode"),
    ]:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        assert cli.main(["serve", *REQUIRED, "--config", str(path)]) == 2
        assert f"nodecache: error: {field}: " in capsys.readouterr().err


def test_check_prints_the_effective_settings(
    resolv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", *REQUIRED, "--host-resolv-conf", str(resolv)]) == 0
    out = capsys.readouterr().out
    assert "cluster upstream: 10.96.0.11:53 (tcp)" in out
    assert f"upstream: 192.0.2.1:53 (udp) from resolv.conf {resolv}" in out
    assert "ttl cluster.local: success 5-30 s, denial 5-5 s" in out
    assert (
        "tcp clients: 1024 connections (64 per address), idle 10 s, write 5 s, "
        "16384 bytes queued each, 8388608 bytes in all"
    ) in out


def test_forward_options_apply_to_the_default_upstream_and_stub_domains(resolv: Path) -> None:
    config = build_config(
        {
            "listen": "127.0.0.1:53",
            "cluster_upstream": "10.96.0.11",
            "host_resolv_conf": str(resolv),
            "upstream_options": {"max_concurrent": 100},
            "forward": {"force_tcp": True, "policy": "random", "health_check": "1s",
                        "expire": "30s", "except": ["private.example"], "max_concurrent": 50},
            "stub_domains": {"corp.example": {"servers": ["10.0.0.53"], "prefer_udp": True}},
        }
    )  # fmt: skip
    resolver = config.resolver
    assert resolver.upstream is not None
    assert resolver.cluster_upstream is not None
    groups = {"upstream": resolver.upstream, **dict(resolver.stub_domains)}
    seen = {
        name: (g.transport, g.policy, g.probe_interval_s, g.tcp_idle_s, g.except_zones,
               g.max_concurrent)
        for name, g in groups.items()
    }  # fmt: skip
    assert seen == {
        "upstream": (Transport.TCP, Policy.RANDOM, 1.0, 30.0, ("private.example",), 50),
        "corp.example": (Transport.UDP, Policy.RANDOM, 1.0, 30.0, ("private.example",), 50),
    }
    # The cluster block keeps its own settings (cluster_transport, upstream_options).
    cluster = resolver.cluster_upstream
    assert (cluster.transport, cluster.policy, cluster.max_concurrent) == (
        Transport.TCP,
        Policy.SEQUENTIAL,
        100,
    )
