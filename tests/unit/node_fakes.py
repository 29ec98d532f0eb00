"""A fake of the commands nodecache.node runs (iptables, ip6tables, their -save, ip): their
state in memory, their output in their real formats, and failures on demand."""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nodecache.node.commands import Result


def _quote(token: str) -> str:
    return f'"{token}"' if " " in token else token


@dataclass
class FakeNode:
    """``tables[(ipv6, table)]`` holds ``(chain, args)`` in rule order; ``links`` maps an
    interface to (up, addresses)."""

    tables: dict[tuple[bool, str], list[tuple[str, tuple[str, ...]]]] = field(default_factory=dict)
    links: dict[str, tuple[bool, list[str]]] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    rule_ops: list[tuple[str, str, str]] = field(default_factory=list)
    """Every rule change applied: (op, table, chain)."""
    fail: Callable[[list[str]], Result | None] = lambda argv: None
    _commit: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def mutations(self) -> list[list[str]]:
        """The calls that change something (not the -save and show reads)."""
        return [c for c in self.calls if not c[0].endswith("-save") and "show" not in c]

    def rules(self, ipv6: bool = False) -> list[tuple[str, str, tuple[str, ...]]]:
        return [
            (table, chain, args)
            for (v6, table), rows in sorted(self.tables.items())
            if v6 == ipv6
            for chain, args in rows
        ]

    def __call__(self, argv: Sequence[str], stdin: str | None = None) -> Result:
        argv = list(argv)
        self.calls.append(argv)
        failure = self.fail(argv)
        if failure is not None:
            return failure
        name = argv[0]
        if name in ("iptables-save", "ip6tables-save"):
            ipv6 = name.startswith("ip6")
            table = argv[argv.index("-t") + 1]
            lines = [f"*{table}"]
            lines += [
                f"-A {chain} " + " ".join(_quote(t) for t in args)
                for chain, args in self.tables.get((ipv6, table), [])
            ]
            return Result(0, "\n".join([*lines, "COMMIT"]) + "\n")
        if name in ("iptables-restore", "ip6tables-restore"):
            assert argv[1:] == ["-w", "5", "--noflush"]
            assert stdin is not None
            return self._restore(name.startswith("ip6"), stdin)
        if name in ("iptables", "ip6tables"):
            return self._iptables(name == "ip6tables", argv[1:])
        if name == "ip":
            return self._ip(argv[1:])
        return Result(127, "", f"{name}: not installed")

    def _restore(self, ipv6: bool, text: str) -> Result:
        """One table's commit, all or nothing, as iptables-restore --noflush."""
        with self._commit:  # one commit at a time, as the kernel applies them
            return self._apply(ipv6, text)

    def _apply(self, ipv6: bool, text: str) -> Result:
        lines = text.splitlines()
        assert lines[0].startswith("*"), text
        assert lines[-1] == "COMMIT", text
        table = lines[0][1:]
        rows = list(self.tables.get((ipv6, table), []))
        ops = []
        for number, line in enumerate(lines[1:-1], start=2):
            op, chain, *spec = shlex.split(line)
            if op == "-I":
                rows.insert(0, (chain, tuple(spec)))
            elif op == "-D" and (chain, tuple(spec)) in rows:
                rows.remove((chain, tuple(spec)))
            else:
                return Result(1, "", f"iptables-restore: line {number} failed: Bad rule")
            ops.append((op, table, chain))
        self.tables[(ipv6, table)] = rows
        self.rule_ops += ops
        return Result(0)

    def _iptables(self, ipv6: bool, args: list[str]) -> Result:
        assert args[:2] == ["-w", "5"], "every iptables call waits for the xtables lock"
        table = args[args.index("-t") + 1]
        rest = args[args.index("-t") + 2 :]
        op, chain, spec = rest[0], rest[1], tuple(rest[2:])
        rows = self.tables.setdefault((ipv6, table), [])
        if op == "-I":
            rows.insert(0, (chain, spec))
            return Result(0)
        if op == "-D":
            if (chain, spec) not in rows:
                return Result(
                    1, "", "iptables: Bad rule (does a matching rule exist in that chain?)."
                )
            rows.remove((chain, spec))
            return Result(0)
        raise AssertionError(f"unexpected iptables call {args}")

    def _ip(self, args: list[str]) -> Result:
        if args[:4] == ["-j", "addr", "show", "dev"]:
            link = self.links.get(args[4])
            if link is None:
                return Result(1, "", f'Device "{args[4]}" does not exist.')
            up, addresses = link
            info = [{"family": "inet6" if ":" in a else "inet", "local": a} for a in addresses]
            flags = ["BROADCAST", "NOARP", *(["UP", "LOWER_UP"] if up else [])]
            return Result(0, json.dumps([{"ifname": args[4], "flags": flags, "addr_info": info}]))
        if args[:2] == ["link", "add"]:
            self.links[args[2]] = (False, [])
            return Result(0)
        if args[:2] == ["link", "set"]:
            up, addresses = self.links[args[2]]
            self.links[args[2]] = (args[3] == "up", addresses)
            return Result(0)
        if args[:2] == ["link", "del"]:
            if args[2] not in self.links:
                return Result(1, "", "Cannot find device")
            del self.links[args[2]]
            return Result(0)
        if args[:2] == ["addr", "add"]:
            device = args[args.index("dev") + 1]
            up, addresses = self.links[device]
            addresses.append(args[2].split("/")[0])
            return Result(0)
        if args[:2] == ["addr", "del"]:
            device = args[args.index("dev") + 1]
            up, addresses = self.links[device]
            address = args[2].split("/")[0]
            if address not in addresses:
                return Result(2, "", "RTNETLINK answers: Cannot assign requested address")
            addresses.remove(address)
            return Result(0)
        raise AssertionError(f"unexpected ip call {args}")
