"""Install and remove the node plumbing (the dummy interface, the iptables rules), idempotently.

Every operation is a reconcile from data: the desired rules come from ``rules.node_rules`` (the
same config gives the same rules, in the cache and in the guard), the current ones from
``iptables-save`` (never ``iptables -C``, which flaked with iptables-nft: kubernetes/dns#568).
The changes to a table go in as one ``iptables-restore --noflush`` commit, as kube-proxy does
its own: atomic (no half-installed state for a query to meet), one xtables-lock hold, one
process per table instead of one per rule.
So running ``install`` twice, or the cache and the guard both running it, changes nothing the
second time; a rule found twice is deleted down to one; a rule carrying our comment that the
config no longer asks for (an old listen IP) is deleted. ``remove`` deletes every rule with our
comment, then the interface (NodeLocal's order since its commit 307d5615: rules first, so no
NOTRACK rule is left pointing at an address that is gone), and keeps the interface when a rule
could not be deleted: a NOTRACK rule for an address that is not local any more skips kube-proxy's
DNAT and routes the node's DNS queries off the node, a blackhole. ``remove_rules_within`` retries
a failed deletion (the xtables lock held by kube-proxy) for a bounded time, for the shutdown.
``bypass`` is the guard's removal: the rules, then every address but the probe's, never the
interface (the guard's probe, and the cache's own /health, ask that address).

Failures are logged and counted by kind (``errors``, NodeLocal's ``setup_errors_total``
error types); they never raise: a node whose iptables is broken still serves DNS on the
addresses it has, and the next sync tries again.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import logging
import shlex
import time
from collections.abc import Callable, Iterable, Sequence

from nodecache.node.commands import Result, Run
from nodecache.node.lock import plumbing_lock
from nodecache.node.rules import COMMENTS, LOCK_WAIT, TABLES, Rule, node_rules

logger = logging.getLogger(__name__)

ERROR_TYPES = ("iptables", "iptables_lock", "interface_add", "interface_check")

Saved = list[tuple[str, tuple[str, ...]]]
"""Our rules in one table as iptables-save lists them: (chain, args), in order."""


def ours(args: Sequence[str]) -> bool:
    """Whether a rule's arguments carry one of our comments."""
    for index, token in enumerate(args[:-1]):
        if token == "--comment" and args[index + 1] in COMMENTS:
            return True
    return False


def parse_save(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """``(chain, args)`` for every ``-A CHAIN ARGS`` line of one table's ``iptables-save``."""
    found = []
    for line in text.splitlines():
        if not line.startswith("-A "):
            continue
        tokens = shlex.split(line)
        if len(tokens) >= 2:
            found.append((tokens[1], tuple(tokens[2:])))
    return found


class Plumbing:
    """The interface and rules for ``addresses`` (``(ip, port)``, already filtered by
    ``rules.node_ips``) and ``health_port``."""

    def __init__(
        self,
        addresses: Sequence[tuple[str, int]],
        health_port: int | None,
        run: Run,
        *,
        interface: str = "nodelocaldns",
        interface_type: str = "dummy",
        setup_interface: bool = True,
        setup_iptables: bool = True,
        lock: Callable[[], contextlib.AbstractContextManager[bool]] = plumbing_lock,
    ) -> None:
        self.lock = lock
        """Makes each read-then-write of the rules one critical section across processes
        (``nodecache.node.lock``)."""
        self.addresses = list(addresses)
        self.ips = list(dict.fromkeys(ip for ip, _port in self.addresses))
        self.rules = node_rules(self.addresses, health_port)
        self.run = run
        self.interface = interface
        self.interface_type = interface_type
        self.setup_interface = setup_interface and bool(self.ips)
        self.setup_iptables = setup_iptables and bool(self.rules)
        self.errors: collections.Counter[str] = collections.Counter(dict.fromkeys(ERROR_TYPES, 0))

    @property
    def active(self) -> bool:
        """Whether there is anything to manage at all."""
        return self.setup_interface or self.setup_iptables

    # --- the whole ---------------------------------------------------------------------------

    def install(self) -> bool:
        """Interface, then rules. True if both are as desired now."""
        return self.ensure_interface() & self.ensure_rules()

    def remove(self) -> bool:
        """Rules, then interface. True if both are gone now. A rule left in keeps the
        interface (module docstring)."""
        return self.remove_rules() and self.remove_interface()

    def bypass(self, keep: str | None) -> bool:
        """The guard's removal: the rules, then every interface address but ``keep`` (the probe
        address). The kube-dns IP then is no local address and takes the Service path exactly
        as on a node without nodecache, while the probe address stays, so the probe (and the
        cache's /health) reach a recovering cache at once and the guard reinstalls. True if
        the rules are gone; the addresses stay while any rule does."""
        if not self.remove_rules():
            return False
        self.remove_addresses(keep)
        return True

    # --- rules -------------------------------------------------------------------------------

    def _families(self) -> list[bool]:
        return sorted({rule.ipv6 for rule in self.rules})

    def _save(self, ipv6: bool, table: str) -> Saved | None:
        command = "ip6tables-save" if ipv6 else "iptables-save"
        result = self.run([command, "-t", table])
        if not result.ok:
            self._failed("iptables", [command, "-t", table], result)
            return None
        return [(chain, args) for chain, args in parse_save(result.stdout) if ours(args)]

    def _restore(self, ipv6: bool, table: str, lines: list[str]) -> bool:
        """Apply ``lines`` (``-I``/``-D`` rules) to one table in a single ``iptables-restore
        --noflush`` commit: all of them or, if one fails (the table changed under us), none;
        the next sync starts again from iptables-save."""
        if not lines:
            return True
        argv = ["ip6tables-restore" if ipv6 else "iptables-restore", *LOCK_WAIT, "--noflush"]
        result = self.run(argv, "\n".join([f"*{table}", *lines, "COMMIT", ""]))
        if result.ok:
            return True
        lock = result.returncode == 4 or "xtables lock" in result.stderr
        self._failed("iptables_lock" if lock else "iptables", [*argv, f"({table})"], result)
        return False

    def ensure_rules(self) -> bool:
        """Make our rules exactly the desired ones: add the missing, delete duplicates and
        stale ones, one atomic commit per table. Reads iptables-save first, so it is safe to
        run any number of times."""
        if not self.setup_iptables:
            return True
        with self.lock():
            return self._ensure_rules()

    def _ensure_rules(self) -> bool:
        def changes(ipv6: bool, table: str, current: Saved) -> list[str]:
            want = [r for r in self.rules if r.ipv6 == ipv6 and r.table == table]
            have = collections.Counter(current)
            wanted = {(r.chain, r.args) for r in want}
            lines = []
            for (chain, args), count in have.items():
                # Duplicates (a piled-up -C failure) and rules for addresses we no longer
                # serve both go; one copy of each wanted rule stays.
                extra = count - 1 if (chain, args) in wanted else count
                lines += [Rule(ipv6, table, chain, args).restore_line("-D")] * extra
            # -I prepends: inserting in reverse keeps our listed order at the top.
            lines += [
                rule.restore_line("-I")
                for rule in reversed(want)
                if have[(rule.chain, rule.args)] == 0
            ]
            return lines

        ok, changed = self._reconcile(changes)
        if changed:
            logger.info("iptables: %d rule changes (%d rules wanted)", changed, len(self.rules))
        return ok

    def remove_rules(self) -> bool:
        """Delete every rule with our comment (however many copies), in every table we use."""
        if not self.setup_iptables:
            return True
        with self.lock():
            ok, removed = self._reconcile(
                lambda ipv6, table, current: [
                    Rule(ipv6, table, chain, args).restore_line("-D") for chain, args in current
                ]
            )
        if removed:
            logger.info("iptables: removed %d rules", removed)
        return ok

    def _reconcile(self, changes: Callable[[bool, str, Saved], list[str]]) -> tuple[bool, int]:
        """For every family and table we use: read our rules (iptables-save), commit
        ``changes(ipv6, table, current)`` in one iptables-restore. (ok, lines committed)."""
        ok = True
        committed = 0
        for ipv6 in self._families():
            for table in TABLES:
                current = self._save(ipv6, table)
                if current is None:
                    ok = False
                    continue
                lines = changes(ipv6, table, current)
                if self._restore(ipv6, table, lines):
                    committed += len(lines)
                else:
                    ok = False
        return ok, committed

    def remove_rules_within(
        self,
        budget_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> bool:
        """``remove_rules``, retried with backoff (0.1 s doubling, at most 1 s) until it
        succeeds or ``budget_s`` has passed: at shutdown the xtables lock may be held longer
        than one attempt's 5 s wait, and a rule left behind must not outlive us unnoticed."""
        deadline = clock() + budget_s
        delay = 0.1
        attempts = 1
        while not self.remove_rules():
            left = deadline - clock()
            if left <= 0:
                logger.error(
                    "iptables: our rules could not be removed in %d attempts (%.1f s)",
                    attempts,
                    budget_s,
                )
                return False
            sleep(min(delay, left))
            delay = min(delay * 2, 1.0)
            attempts += 1
        return True

    # --- interface ---------------------------------------------------------------------------

    def _addresses(self) -> list[str] | None:
        """The interface's addresses, or None when it does not exist."""
        result = self.run(["ip", "-j", "addr", "show", "dev", self.interface])
        if not result.ok:
            return None
        try:
            links = json.loads(result.stdout or "[]")
        except ValueError:
            self._failed("interface_check", ["ip", "-j", "addr"], result)
            return None
        found = []
        for link in links:
            for info in link.get("addr_info", []):
                if "local" in info:
                    found.append(str(ipaddress.ip_address(info["local"])))
            if "UP" not in link.get("flags", []):
                found.append("<down>")
        return found

    def ensure_interface(self) -> bool:
        """The interface exists (a dummy, or ``interface_type``), is up and holds every listen
        IP (as /32 or /128)."""
        if not self.setup_interface:
            return True
        present = self._addresses()
        ok = True
        if present is None:
            result = self.run(["ip", "link", "add", self.interface, "type", self.interface_type])
            if not result.ok:
                self._failed("interface_add", ["ip", "link", "add", self.interface], result)
                return False
            logger.info("interface %s added", self.interface)
            present = ["<down>"]
        if "<down>" in present:
            argv = ["ip", "link", "set", self.interface, "up"]
            result = self.run(argv)
            if not result.ok:
                self._failed("interface_add", argv, result)
                ok = False
        for ip in self.ips:
            if ip in present:
                continue
            prefix = 128 if ":" in ip else 32
            argv = ["ip", "addr", "add", f"{ip}/{prefix}", "dev", self.interface]
            result = self.run(argv)
            if not result.ok:
                self._failed("interface_add", argv, result)
                ok = False
            else:
                logger.info("interface %s: added %s", self.interface, ip)
        return ok

    def remove_addresses(self, keep: str | None) -> bool:
        """Delete our listen IPs but ``keep`` from the interface, which stays. Sockets bound to
        a deleted IP stay bound and receive again once ``ensure_interface`` re-adds it."""
        if not self.setup_interface:
            return True
        present = self._addresses()
        if present is None:
            return True
        kept = str(ipaddress.ip_address(keep)) if keep is not None else None
        ok = True
        for ip in self.ips:
            normal = str(ipaddress.ip_address(ip))
            if normal == kept or normal not in present:
                continue
            prefix = 128 if ":" in ip else 32
            argv = ["ip", "addr", "del", f"{ip}/{prefix}", "dev", self.interface]
            result = self.run(argv)
            if not result.ok:
                self._failed("interface_check", argv, result)
                ok = False
            else:
                logger.info("interface %s: removed %s", self.interface, ip)
        return ok

    def remove_interface(self) -> bool:
        if not self.setup_interface:
            return True
        if self._addresses() is None:
            return True
        argv = ["ip", "link", "del", self.interface]
        result = self.run(argv)
        if not result.ok:
            self._failed("interface_check", argv, result)
            return False
        logger.info("interface %s removed", self.interface)
        return True

    def render(self, metric: Callable[[str, str, str, Iterable[tuple[str, float]]], None]) -> None:
        """``/metrics`` series (nodecache.metrics' ``Metric`` writer)."""
        metric(
            "nodecache_node_setup_errors_total",
            "counter",
            "Node plumbing commands that failed, by kind (NodeLocal's setup_errors_total).",
            [(f'{{errortype="{kind}"}}', self.errors[kind]) for kind in ERROR_TYPES],
        )
        metric(
            "nodecache_node_rules",
            "gauge",
            "iptables rules nodecache wants on this node (12 per listen IP with a health port).",
            [("", len(self.rules) if self.setup_iptables else 0)],
        )

    def _failed(self, kind: str, argv: Sequence[str], result: Result) -> None:
        self.errors[kind] += 1
        logger.error(
            "%s failed (exit %d): %s",
            " ".join(argv),
            result.returncode,
            (result.stderr or result.stdout).strip(),
        )
