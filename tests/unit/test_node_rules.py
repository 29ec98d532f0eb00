"""nodecache.node.rules: the exact iptables rules, as data (NodeLocal's 12 per IP)."""

from __future__ import annotations

import pytest

from nodecache.node.rules import ALLOW_DNS, SKIP_CONNTRACK, Rule, node_ips, node_rules

S = f"'{SKIP_CONNTRACK}'"  # as str(rule) prints them: quoted for a shell
A = f"'{ALLOW_DNS}'"


def line(rule: Rule) -> str:
    return str(rule)


def expected_dns(ip: str, port: int, cmd: str = "iptables", prefix: int = 32) -> list[str]:
    out = []
    for p in ("udp", "tcp"):
        to = f"-d {ip}/{prefix} -p {p} -m {p} --dport {port}"
        fr = f"-s {ip}/{prefix} -p {p} -m {p} --sport {port}"
        out += [
            f"{cmd} -t raw -A PREROUTING {to} -m comment --comment {S} -j NOTRACK",
            f"{cmd} -t filter -A INPUT {to} -m comment --comment {A} -j ACCEPT",
            f"{cmd} -t raw -A OUTPUT {fr} -m comment --comment {S} -j NOTRACK",
            f"{cmd} -t filter -A OUTPUT {fr} -m comment --comment {A} -j ACCEPT",
            f"{cmd} -t raw -A OUTPUT {to} -m comment --comment {S} -j NOTRACK",
        ]
    return out


def expected_health(ip: str, port: int, cmd: str = "iptables", prefix: int = 32) -> list[str]:
    return [
        f"{cmd} -t raw -A OUTPUT -s {ip}/{prefix} -p tcp -m tcp --sport {port} "
        f"-m comment --comment {S} -j NOTRACK",
        f"{cmd} -t raw -A OUTPUT -d {ip}/{prefix} -p tcp -m tcp --dport {port} "
        f"-m comment --comment {S} -j NOTRACK",
    ]


CASES = [
    pytest.param(
        [("169.254.20.10", 53)],
        8080,
        expected_dns("169.254.20.10", 53) + expected_health("169.254.20.10", 8080),
        id="one-ip-12-rules",
    ),
    pytest.param(
        [("169.254.20.10", 53), ("10.96.0.10", 53)],
        8080,
        expected_dns("169.254.20.10", 53)
        + expected_dns("10.96.0.10", 53)
        + expected_health("169.254.20.10", 8080)
        + expected_health("10.96.0.10", 8080),
        id="link-local-and-kube-dns-24-rules",
    ),
    pytest.param(
        [("10.96.0.10", 53)], None, expected_dns("10.96.0.10", 53), id="health-off-10-rules"
    ),
    pytest.param(
        [("fd00::a", 53)],
        9053,
        expected_dns("fd00::a", 53, "ip6tables", 128)
        + expected_health("fd00::a", 9053, "ip6tables", 128),
        id="ipv6-ip6tables-128",
    ),
    pytest.param(
        [("10.96.0.10", 53), ("10.96.0.10", 53)],
        8080,
        expected_dns("10.96.0.10", 53) + expected_health("10.96.0.10", 8080),
        id="duplicate-address-once",
    ),
    pytest.param([], 8080, [], id="no-address-no-rules"),
]


@pytest.mark.parametrize(("listen", "health", "expected"), CASES)
def test_exact_rules(
    listen: list[tuple[str, int]], health: int | None, expected: list[str]
) -> None:
    got = [line(rule) for rule in node_rules(listen, health)]
    assert got == expected
    assert len(got) == len(set(got))


@pytest.mark.parametrize(
    ("rule_index", "argv"),
    [
        pytest.param(
            0,
            ["iptables", "-w", "5", "-t", "raw", "-I", "PREROUTING", "-d", "10.96.0.10/32",
             "-p", "udp", "-m", "udp", "--dport", "53", "-m", "comment", "--comment", SKIP_CONNTRACK,
             "-j", "NOTRACK"],
            id="insert-prepends-with-lock-wait",
        ),
    ],
)  # fmt: skip
def test_insert_argv(rule_index: int, argv: list[str]) -> None:
    rule = node_rules([("10.96.0.10", 53)], None)[rule_index]
    assert rule.insert() == argv
    assert rule.delete() == [*argv[:5], "-D", *argv[6:]]


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        pytest.param([("127.0.0.1", 0)], [], id="loopback-skipped"),
        pytest.param([("0.0.0.0", 53), ("::", 53)], [], id="wildcards-skipped"),
        pytest.param(
            [("169.254.20.10", 53), ("::1", 53), ("FD00::A", 53)],
            [("169.254.20.10", 53), ("fd00::a", 53)],
            id="normalized",
        ),
    ],
)
def test_node_ips(listen: list[tuple[str, int]], expected: list[tuple[str, int]]) -> None:
    assert node_ips(listen) == expected


@pytest.mark.parametrize(
    ("args", "line"),
    [
        pytest.param(
            node_rules([("10.96.0.10", 53)], None)[0].args,
            '-I PREROUTING -d 10.96.0.10/32 -p udp -m udp --dport 53 -m comment '
            '--comment "nodecache: skip conntrack" -j NOTRACK',
            id="comment-double-quoted-as-iptables-save",
        ),
        pytest.param(("--comment", 'say "hi"'), '-I PREROUTING --comment "say \\"hi\\""',
                     id="quote-escaped"),
        pytest.param(("--comment", ""), '-I PREROUTING --comment ""', id="empty-token"),
    ],
)  # fmt: skip
def test_restore_line(args: tuple[str, ...], line: str) -> None:
    assert Rule(False, "raw", "PREROUTING", args).restore_line("-I") == line
