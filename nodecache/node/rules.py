"""The iptables rules nodecache installs, as data: a pure function of (IPs, ports).

NodeLocal DNSCache's rules (``cmd/node-cache/app/cache_app.go`` ``initIptables``,
../shared/docs/nodecache.md §1.2), per listen IP and for UDP and TCP:

1. ``raw PREROUTING -d IP --dport 53 -j NOTRACK``: pod queries skip conntrack, so kube-proxy's
   DNAT (nat table) never sees them and routing delivers them to our local IP;
2. ``filter INPUT -d IP --dport 53 -j ACCEPT``: NOTRACKed packets match no ESTABLISHED rule;
3. ``raw OUTPUT -s IP --sport 53 -j NOTRACK`` and ``filter OUTPUT -s IP --sport 53 -j ACCEPT``:
   our replies;
4. ``raw OUTPUT -d IP --dport 53 -j NOTRACK``: queries from the host itself (hostNetwork pods);

plus, for the health port, ``raw OUTPUT -p tcp -s IP --sport H`` and ``-d IP --dport H``
NOTRACK (the kubelet's liveness probe): 12 rules per IP. Every rule carries a comment naming
nodecache, which is how ``plumbing`` tells our rules from everyone else's.

Each rule's ``args`` are written exactly as ``iptables-save`` prints them (``-d`` before ``-p``,
``-m udp``, a /32 or /128), so a rule can be found in ``iptables-save`` output by comparing
tokens, without trusting ``iptables -C`` (kubernetes/dns#568: with iptables-nft 1.8.7 ``-C``
flaked, and the rules piled up).
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

SKIP_CONNTRACK: Final = "nodecache: skip conntrack"
ALLOW_DNS: Final = "nodecache: allow DNS traffic"
COMMENTS: Final = (SKIP_CONNTRACK, ALLOW_DNS)
"""Our comments: a rule with one of these is ours."""

TABLES: Final = ("raw", "filter")
LOCK_WAIT: Final = ("-w", "5")
"""Wait up to 5 s for the xtables lock (/run/xtables.lock, shared with kube-proxy), not forever."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: ``iptables -t TABLE -I CHAIN ARGS`` (``ip6tables`` when ``ipv6``)."""

    ipv6: bool
    table: str
    chain: str
    args: tuple[str, ...]

    @property
    def command(self) -> str:
        return "ip6tables" if self.ipv6 else "iptables"

    def insert(self) -> list[str]:
        """Prepended, as NodeLocal does, so it runs before any other rule (kube-proxy's)."""
        return [self.command, *LOCK_WAIT, "-t", self.table, "-I", self.chain, *self.args]

    def delete(self) -> list[str]:
        return [self.command, *LOCK_WAIT, "-t", self.table, "-D", self.chain, *self.args]

    def restore_line(self, op: str) -> str:
        """``-I CHAIN ARGS`` or ``-D CHAIN ARGS`` for ``iptables-restore --noflush``, quoted as
        iptables-save quotes (double quotes around a token with spaces)."""
        return f"{op} {self.chain} " + " ".join(_restore_quote(token) for token in self.args)

    def __str__(self) -> str:
        """The rule as a shell command line (the comment quoted)."""
        return f"{self.command} -t {self.table} -A {self.chain} {shlex.join(self.args)}"


def _restore_quote(token: str) -> str:
    if token and not any(c in token for c in " \"'\\\t"):
        return token
    escaped = token.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _match(direction: str, ip: str, proto: str, port: int) -> tuple[str, ...]:
    """``-d IP/32 -p udp -m udp --dport 53`` (or ``-s ... --sport``), in iptables-save order."""
    prefix = 128 if ipaddress.ip_address(ip).version == 6 else 32
    addr_flag, port_flag = ("-d", "--dport") if direction == "dst" else ("-s", "--sport")
    return (addr_flag, f"{ip}/{prefix}", "-p", proto, "-m", proto, port_flag, str(port))


def _rule(ip: str, table: str, chain: str, match: tuple[str, ...], comment: str) -> Rule:
    target = "NOTRACK" if table == "raw" else "ACCEPT"
    return Rule(
        ipv6=ipaddress.ip_address(ip).version == 6,
        table=table,
        chain=chain,
        args=(*match, "-m", "comment", "--comment", comment, "-j", target),
    )


def node_rules(listen: Iterable[tuple[str, int]], health_port: int | None) -> list[Rule]:
    """Every rule for the listen addresses (``(ip, dns_port)``) and the health port (None: no
    health rules), in a fixed order, without duplicates."""
    rules: list[Rule] = []
    ips: list[str] = []
    for ip, port in listen:
        if ip not in ips:
            ips.append(ip)
        for proto in ("udp", "tcp"):
            to_us, from_us = _match("dst", ip, proto, port), _match("src", ip, proto, port)
            rules += [
                _rule(ip, "raw", "PREROUTING", to_us, SKIP_CONNTRACK),
                _rule(ip, "filter", "INPUT", to_us, ALLOW_DNS),
                _rule(ip, "raw", "OUTPUT", from_us, SKIP_CONNTRACK),
                _rule(ip, "filter", "OUTPUT", from_us, ALLOW_DNS),
                _rule(ip, "raw", "OUTPUT", to_us, SKIP_CONNTRACK),
            ]
    if health_port is not None:
        for ip in ips:
            rules += [
                _rule(ip, "raw", "OUTPUT", _match("src", ip, "tcp", health_port), SKIP_CONNTRACK),
                _rule(ip, "raw", "OUTPUT", _match("dst", ip, "tcp", health_port), SKIP_CONNTRACK),
            ]
    unique: list[Rule] = []
    for rule in rules:
        if rule not in unique:
            unique.append(rule)
    return unique


def node_ips(listen: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """The listen addresses that get plumbing: not loopback, not the wildcard (a test's
    ``127.0.0.1:0`` needs no interface and no rules)."""
    chosen = []
    for host, port in listen:
        address = ipaddress.ip_address(host)
        if address.is_loopback or address.is_unspecified:
            continue
        chosen.append((str(address), port))
    return chosen
