"""nodecache.node.settings and handover's pure parts: /proc/net/udp parsing, the flags, the
probe-address warning, ``nodecache check``'s node lines, turning on tcp_migrate_req."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kdns.config import ConfigError
from nodecache.config import Config, build_config
from nodecache.node.handover import ensure_tcp_migrate, parse_proc_udp
from nodecache.node.settings import (
    NodeSettings,
    add_guard_flags,
    add_node_flags,
    describe_node,
    node_settings,
    probe_note,
)

PROC_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  153: 0A00600A:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0
  154: 0100007F:1F90 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 0
"""  # the kernel's table, verbatim
PROC_UDP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
15037: 00000000000000000000000001000000:14EB 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 30162 2 000000005532ab16 0
"""  # ::1 port 5355, read on this x86-64 machine


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(PROC_UDP, [("10.96.0.10", 53, 4242), ("127.0.0.1", 8080, 4343)], id="ipv4"),
        pytest.param(PROC_UDP6, [("::1", 5355, 30162)], id="ipv6"),
    ],
)
def test_parse_proc_udp(text: str, expected: list[tuple[str, int, int]]) -> None:
    assert parse_proc_udp(text) == expected


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_node_flags(parser)
    add_guard_flags(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param([], NodeSettings(), id="defaults-as-nodelocal"),
        pytest.param(
            ["--no-setup-iptables", "--interface-name", "nodecache0", "--skip-teardown",
             "--sync-interval", "5", "--guard-failures", "2", "--guard-probe", "169.254.20.10:53"],
            NodeSettings(setup_iptables=False, interface_name="nodecache0", skip_teardown=True,
                         sync_interval_s=5.0, guard_failures=2,
                         guard_probe=("169.254.20.10", 53)),
            id="every-flag",
        ),
        pytest.param(["--guard-listen", "0.0.0.0:9254", "--guard-stall", "20"],
                     NodeSettings(guard_listen=("0.0.0.0", 9254), guard_stall_s=20.0),
                     id="guard-liveness"),
        pytest.param(["--guard-listen", "none"], NodeSettings(), id="guard-liveness-off"),
    ],
)  # fmt: skip
def test_flags(argv: list[str], expected: NodeSettings) -> None:
    assert node_settings(parse(argv)) == expected


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        pytest.param(["--interface-name", "way-too-long-name0"], "interface_name", id="ifname"),
        pytest.param(["--sync-interval", "0"], "sync_interval", id="sync-zero"),
        pytest.param(["--guard-failures", "0"], "guard_failures", id="failures-zero"),
        pytest.param(["--guard-timeout", "2"], "guard_timeout", id="timeout-over-interval"),
        pytest.param(["--guard-probe", "localhost:53"], "guard_probe", id="probe-not-ip"),
        pytest.param(["--guard-listen", "localhost:9254"], "guard_listen", id="listen-not-ip"),
        pytest.param(["--guard-stall", "1"], "guard_stall", id="stall-not-over-interval"),
        pytest.param(
            ["--guard-interval", "5", "--guard-stall", "4"],
            "guard_stall",
            id="stall-under-interval",
        ),
    ],
)
def test_bad_flags_name_the_field(argv: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        node_settings(parse(argv))
    assert caught.value.field == field


def config_for(*listen: str) -> Config:
    values = {"listen": list(listen), "cluster_upstream": ["10.96.0.11:53"], "upstream": ["none"]}
    return build_config(values)


@pytest.mark.parametrize(
    ("listen", "argv", "warned"),
    [
        pytest.param(["169.254.20.10:53", "10.96.0.10:53"], [], False, id="link-local-first"),
        pytest.param(["10.96.0.10:53", "169.254.20.10:53"], [], True, id="service-ip-first"),
        pytest.param(["10.96.0.10:53"], ["--guard-probe", "169.254.20.10:53"], False,
                     id="explicit-probe"),
        pytest.param(["[fd00::a]:53"], [], False, id="ula"),
        pytest.param(["10.96.0.10:53"], ["--no-setup-iptables", "--no-setup-interface"], False,
                     id="no-plumbing"),
        pytest.param(["127.0.0.1:0"], [], False, id="loopback-test-setup"),
    ],
)  # fmt: skip
def test_probe_note(listen: list[str], argv: list[str], warned: bool) -> None:
    node = node_settings(parse(argv))
    assert (probe_note(config_for(*listen), node) is not None) == warned


def test_check_prints_every_rule_and_the_guard() -> None:
    text = describe_node(config_for("169.254.20.10:53", "10.96.0.10:53"), NodeSettings())
    lines = text.splitlines()
    assert lines[0] == "interface: nodelocaldns (dummy) holding 169.254.20.10, 10.96.0.10"
    assert sum(line.startswith("  iptables -t ") for line in lines) == 24
    assert lines[-1] == "guard: probes 169.254.20.10:53 every 1 s; 3 failures remove the plumbing"


def test_check_prints_the_guard_liveness_when_on() -> None:
    node = NodeSettings(guard_listen=("0.0.0.0", 9254), guard_stall_s=30.0)
    text = describe_node(config_for("169.254.20.10:53"), node)
    assert text.splitlines()[-1] == (
        "guard liveness: /health on 0.0.0.0:9254, failing after 30 s without a probe step"
    )


@pytest.mark.parametrize(
    ("content", "writable", "result", "after"),
    [
        pytest.param("0\n", True, "set", "1\n", id="off-turned-on"),
        pytest.param("1\n", True, "on", "1\n", id="already-on"),
        pytest.param("0\n", False, "read-only", "0\n", id="read-only-proc-sys"),
        pytest.param(None, True, "absent", None, id="old-kernel"),
    ],
)
def test_tcp_migrate_req(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: str | None,
    writable: bool,
    result: str,
    after: str | None,
) -> None:
    path = tmp_path / "tcp_migrate_req"
    if content is not None:
        path.write_text(content)
    if not writable:  # a container's /proc/sys is mounted read-only (root or not)

        def read_only(self: Path, data: str) -> int:
            raise OSError(30, "Read-only file system")

        monkeypatch.setattr(Path, "write_text", read_only)
    assert ensure_tcp_migrate(path) == result
    if after is not None:
        assert path.read_text() == after
