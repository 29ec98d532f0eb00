"""The node-plumbing and guard flags, shared by ``nodecache serve`` and ``nodecache guard``.

Flag names follow NodeLocal DNSCache's (``-setupinterface``, ``-interfacename``,
``-setupiptables``, ``-syncinterval``, ``-skipteardown``; ../shared/docs/nodecache.md §1.1) in
this project's ``--kebab-case``. The guard is given the same flags as the cache (the DaemonSet
passes one argument list to both containers), so it derives what to remove from the same data
the cache installed from, not from state a dead process held.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from kdns.config import ConfigError, parse_listen
from kdns.resolver.config import Address
from nodecache.config import Config
from nodecache.node.commands import Result, Run
from nodecache.node.plumbing import Plumbing
from nodecache.node.rules import node_ips

DEFAULT_INTERFACE: Final = "nodelocaldns"
INTERFACE_TYPES: Final = ("dummy", "ifb", "bridge")
"""Link types that hold addresses without carrying traffic anywhere. ``dummy`` is NodeLocal's;
the others are for kernels built without the dummy driver (some microVM kernels): an ``ifb``
or a port-less ``bridge`` holds local addresses the same way."""
_INTERFACE_NAME: Final = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # IFNAMSIZ - 1, no / or space


@dataclass(frozen=True, slots=True)
class NodeSettings:
    setup_interface: bool = True
    """Create the dummy interface holding the listen IPs (NodeLocal ``-setupinterface``)."""
    interface_name: str = DEFAULT_INTERFACE
    interface_type: str = "dummy"
    setup_iptables: bool = True
    """Install the NOTRACK/ACCEPT rules once the listener answers (``-setupiptables``)."""
    sync_interval_s: float = 60.0
    """How often the cache re-ensures the interface and rules (``-syncinterval``)."""
    skip_teardown: bool = False
    """Leave the rules and interface in place on SIGTERM (``-skipteardown``)."""
    guard_failures: int = 3
    """Consecutive failed probes after which the guard removes the plumbing."""
    guard_interval_s: float = 1.0
    guard_timeout_s: float = 0.5
    guard_probe: Address | None = None
    """What the guard asks; None: the first ``--listen`` address."""
    guard_listen: Address | None = None
    """The guard's own ``/health`` and ``/metrics`` (nodecache.node.liveness); None: off."""
    guard_stall_s: float = 60.0
    """``/health`` fails once the probe loop has made no progress for this long."""


def add_node_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    bool_flag = argparse.BooleanOptionalAction
    add(
        "--setup-interface",
        action=bool_flag,
        default=None,
        help="create the dummy interface holding the listen IPs (default on)",
    )
    add("--interface-name", metavar="NAME", help=f"its name (default {DEFAULT_INTERFACE})")
    add(
        "--interface-type",
        metavar="TYPE",
        help="its link type: dummy (default), or ifb or bridge on kernels without the dummy driver",
    )
    add(
        "--setup-iptables",
        action=bool_flag,
        default=None,
        help="install the NOTRACK/ACCEPT rules once the listener answers (default on)",
    )
    add(
        "--sync-interval",
        type=float,
        metavar="SECONDS",
        help="how often the interface and rules are re-ensured (default 60)",
    )
    add(
        "--skip-teardown",
        action=bool_flag,
        default=None,
        help="leave the rules and interface in place on exit (default off)",
    )


def add_guard_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--guard-failures",
        type=int,
        metavar="N",
        help="consecutive failed probes before the plumbing is removed (default 3)",
    )
    add("--guard-interval", type=float, metavar="SECONDS", help="probe period (default 1)")
    add(
        "--guard-timeout",
        type=float,
        metavar="SECONDS",
        help="how long one probe waits for its reply (default 0.5)",
    )
    add(
        "--guard-probe",
        metavar="IP:PORT",
        help="address probed (default: the first --listen; put the link-local one first)",
    )
    add(
        "--guard-listen",
        metavar="IP:PORT",
        help="the guard's /health (200 while its probe loop runs) and /metrics; none (the "
        "default) turns it off",
    )
    add(
        "--guard-stall",
        type=float,
        metavar="SECONDS",
        help="the guard's /health fails once its probe loop has made no progress this long "
        "(default 60; more than --guard-interval)",
    )


def node_settings(args: argparse.Namespace) -> NodeSettings:
    """The settings from parsed flags; a bad value is a ConfigError naming the flag."""
    base = NodeSettings()

    def given(name: str, default: object) -> object:
        value = getattr(args, name, None)
        return default if value is None else value

    interface = str(given("interface_name", base.interface_name))
    if not _INTERFACE_NAME.match(interface):
        raise ConfigError(
            "interface_name", f"{interface!r} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)"
        )
    kind = str(given("interface_type", base.interface_type))
    if kind not in INTERFACE_TYPES:
        raise ConfigError(
            "interface_type", f"expected one of {', '.join(INTERFACE_TYPES)}, got {kind!r}"
        )
    sync = float(given("sync_interval", base.sync_interval_s))  # type: ignore[arg-type]
    if sync <= 0:
        raise ConfigError("sync_interval", f"must be > 0, got {sync:g}")
    failures = int(given("guard_failures", base.guard_failures))  # type: ignore[call-overload]
    if failures < 1:
        raise ConfigError("guard_failures", f"must be at least 1, got {failures}")
    interval = float(given("guard_interval", base.guard_interval_s))  # type: ignore[arg-type]
    timeout = float(given("guard_timeout", base.guard_timeout_s))  # type: ignore[arg-type]
    if interval <= 0:
        raise ConfigError("guard_interval", f"must be > 0, got {interval:g}")
    if not 0 < timeout <= interval:
        raise ConfigError(
            "guard_timeout", f"must be > 0 and at most --guard-interval, got {timeout:g}"
        )
    probe_text = getattr(args, "guard_probe", None)
    probe = parse_listen(probe_text, "guard_probe") if probe_text else None
    listen_text = getattr(args, "guard_listen", None)
    listen = None
    if listen_text and listen_text != "none":
        listen = parse_listen(listen_text, "guard_listen")
    stall = float(given("guard_stall", base.guard_stall_s))  # type: ignore[arg-type]
    if stall <= interval:
        # A healthy loop beats once per --guard-interval: a bound under it fails a healthy guard.
        raise ConfigError(
            "guard_stall", f"must be more than --guard-interval ({interval:g}), got {stall:g}"
        )
    return NodeSettings(
        setup_interface=bool(given("setup_interface", base.setup_interface)),
        interface_name=interface,
        interface_type=kind,
        setup_iptables=bool(given("setup_iptables", base.setup_iptables)),
        sync_interval_s=sync,
        skip_teardown=bool(given("skip_teardown", base.skip_teardown)),
        guard_failures=failures,
        guard_interval_s=interval,
        guard_timeout_s=timeout,
        guard_probe=probe,
        guard_listen=listen,
        guard_stall_s=stall,
    )


def plumbing_for(config: Config, node: NodeSettings, run: Run) -> Plumbing:
    """The node plumbing for ``config``'s listen addresses: the same data in the cache and in
    the guard."""
    health_port = config.health_listen[1] if config.health_listen is not None else None
    return Plumbing(
        node_ips(config.listen),
        health_port,
        run,
        interface=node.interface_name,
        interface_type=node.interface_type,
        setup_interface=node.setup_interface,
        setup_iptables=node.setup_iptables,
    )


def probe_address(config: Config, node: NodeSettings | None) -> tuple[str, int]:
    """What the guard and the self-probe ask: ``--guard-probe``, else the first listener (a
    wildcard listener is asked on loopback)."""
    if node is not None and node.guard_probe is not None:
        return node.guard_probe
    host, port = config.listen[0]
    if host in ("0.0.0.0", "::"):
        host = "::1" if ":" in host else "127.0.0.1"
    return host, port


def probe_note(config: Config, node: NodeSettings) -> str | None:
    """A warning when the probe address may be a Service IP: until our rules are in, a query to
    a Service IP is DNATed to the cluster DNS, whose answer is not ours, so the rules would
    never go in. Link-local (169.254/16, fe80::/10), ULA (fc00::/7) and loopback are safe."""
    host, _port = probe_address(config, node)
    address = ipaddress.ip_address(host)
    if address.is_loopback or address.is_link_local:
        return None
    if address.version == 6 and address in ipaddress.ip_network("fc00::/7"):
        return None
    if not node_ips(config.listen) or not (node.setup_iptables or node.setup_interface):
        return None
    return (
        f"guard_probe: {host} is not a link-local address; if it is a Service IP (kube-dns), "
        "queries to it are DNATed to the cluster DNS until our rules are in, and the rules never "
        "go in: list the link-local --listen first or give --guard-probe"
    )


def _no_commands(argv: Sequence[str], stdin: str | None = None) -> Result:
    raise AssertionError(f"nodecache check runs no commands, not {argv[0]}")


def describe_node(config: Config, node: NodeSettings) -> str:
    """``nodecache check``'s lines for the node plumbing: the interface and every rule."""
    plumbing = plumbing_for(config, node, _no_commands)
    if not plumbing.active:
        return "node plumbing: none (no non-loopback listen IP, or both turned off)\n"
    lines = []
    if plumbing.setup_interface:
        lines.append(
            f"interface: {node.interface_name} ({node.interface_type}) holding "
            + ", ".join(plumbing.ips)
        )
    if plumbing.setup_iptables:
        lines.append(
            f"iptables: {len(plumbing.rules)} rules once the listener answers, re-ensured every "
            f"{node.sync_interval_s:g} s; teardown on exit: {'off' if node.skip_teardown else 'on'}"
        )
        lines += [f"  {rule}" for rule in plumbing.rules]
    host, port = probe_address(config, node)
    note = probe_note(config, node)
    if note is not None:
        lines.append(f"warning: {note}")
    lines.append(
        f"guard: probes {host}:{port} every {node.guard_interval_s:g} s; "
        f"{node.guard_failures} failures remove the plumbing"
    )
    if node.guard_listen is not None:
        lines.append(
            f"guard liveness: /health on {node.guard_listen[0]}:{node.guard_listen[1]}, failing "
            f"after {node.guard_stall_s:g} s without a probe step"
        )
    return "\n".join(lines) + "\n"
