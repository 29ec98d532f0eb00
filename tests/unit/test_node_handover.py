"""nodecache.node.handover and settings: /proc/net/udp parsing, successor detection, flags,
the probe-address warning, `nodecache check` output."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Iterator

import pytest

from kdns.config import ConfigError
from kdns.serve.udp import UDPServer, bind_udp
from nodecache.config import Config, build_config
from nodecache.node.handover import parse_proc_udp, successor_bound
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


@pytest.fixture
def server() -> Iterator[UDPServer]:
    sock = bind_udp("127.0.0.1", 0, reuse_port=True)
    yield UDPServer(sock, answer=lambda packet: None)
    sock.close()


def test_successor_bound_sees_only_a_foreign_socket(server: UDPServer) -> None:
    host, port = server.address
    mine = os.fstat(server.sock.fileno()).st_ino
    assert not successor_bound([server], lambda: [(host, port, mine)])
    assert not successor_bound([server], lambda: [(host, port + 1, mine + 1)])
    assert successor_bound([server], lambda: [(host, port, mine), (host, port, mine + 1)])
    assert not successor_bound([server])  # the real table: we are alone on our port
    with bind_udp(host, port, reuse_port=True):
        assert successor_bound([server])


def test_step_aside_keeps_the_queue_and_sends_new_datagrams_to_the_peer(
    server: UDPServer,
) -> None:
    """The kernel behaviour the handover rests on (Linux >= 5.x reuseport selection)."""
    host, port = server.address
    with bind_udp(host, port, reuse_port=True) as peer:
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(40)]
        try:
            for client in clients:
                client.sendto(b"before", (host, port))
            server.stop_receiving()
            for client in clients:
                client.sendto(b"after", (host, port))
            got: dict[str, list[bytes]] = {"old": [], "new": []}
            for name, sock in (("old", server.sock), ("new", peer)):
                sock.setblocking(False)
                while True:
                    try:
                        got[name].append(sock.recv(64))
                    except BlockingIOError:
                        break
        finally:
            for client in clients:
                client.close()
    assert b"after" not in got["old"]
    assert got["new"].count(b"after") == 40
    assert got["old"].count(b"before") + got["new"].count(b"before") == 40
    assert got["old"], "with 40 flows, the hash gives the old socket some before stepping aside"


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
