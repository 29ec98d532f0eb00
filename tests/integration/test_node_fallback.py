"""Rules that cannot outlive the cache: SIGKILL nodecache in a network namespace with real
iptables, and the guard hands the kube-dns IP back to kdns (the Service path) within 5 s;
restart nodecache and it takes the IP over again; SIGSTOP it past the guard's three probes and
SIGCONT it, and with the default 60 s sync it has the IP back within a few seconds (the guard
keeps the interface and its probe address, so its probe sees the cache answer). Also: the rules
through the real iptables and ip6tables binaries, installed twice (one copy each) and removed.

The namespace is a small node: kdns on 10.53.0.10 (a dummy ``kdns0``, which also carries the
route for the Service range 10.96.0.0/12, so the kernel has a route before nat OUTPUT); the
"Service" as kube-proxy programs it, ``nat OUTPUT/PREROUTING -d 10.96.0.10 --dport 53 -j DNAT
--to-destination 10.53.0.10:53``; nodecache on 169.254.20.10 and 10.96.0.10 (its dummy
``nodelocaldns`` and its NOTRACK rules), its guard beside it with the same flags. Queries come
from a process in the namespace (tests/support/who_answers.py), so they take nat OUTPUT, as a
hostNetwork pod's do; who answered is told by the reply (nodecache answers its probe name
NXDOMAIN itself, kdns with ``--upstream none`` REFUSED).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nodecache.node.rules import node_rules
from nodecache.node.settings import INTERFACE_TYPES
from tests.support.netns import Netns, netns_missing_reason, network_namespace
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
KUBE_DNS = "10.96.0.10"
LINK_LOCAL = "169.254.20.10"
KDNS = "10.53.0.10"
FALLBACK_BUDGET_S = 5.0
RESUME_BUDGET_S = 4.0
"""SIGCONT to nodecache answering the kube-dns IP again: a guard probe or two, one install."""

NODE_FLAGS = [
    "--listen", f"{LINK_LOCAL}:53", "--listen", f"{KUBE_DNS}:53",
    "--cluster-upstream", f"{KDNS}:53", "--upstream", "none",
    "--health-listen", f"{LINK_LOCAL}:8080", "--log-level", "DEBUG",
]  # fmt: skip


def link_type(netns: Netns) -> str:
    """``dummy``, as on a node; else ``ifb`` or ``bridge`` where the kernel has no dummy driver
    (some microVMs): they hold local addresses the same way (nodecache --interface-type)."""
    for kind in INTERFACE_TYPES:
        made = netns.run(["ip", "link", "add", "probe0", "type", kind], check=False)
        if made.returncode == 0:
            netns.run(["ip", "link", "del", "probe0"])
            return kind
    pytest.skip(f"this kernel creates none of {', '.join(INTERFACE_TYPES)} links")


def add_link(netns: Netns, device: str, kind: str, address: str) -> None:
    netns.run(["ip", "link", "add", device, "type", kind])
    netns.run(["ip", "link", "set", device, "up"])
    netns.add_address(address, device)


def our_rules(netns: Netns) -> list[str]:
    rules = []
    for table in ("raw", "filter"):
        out = netns.run(["iptables-save", "-t", table]).stdout
        rules += [line for line in out.splitlines() if "nodecache:" in line]
    return rules


def has_interface(netns: Netns) -> bool:
    return netns.run(["ip", "link", "show", "nodelocaldns"], check=False).returncode == 0


def interface_ips(netns: Netns) -> list[str]:
    out = netns.run(["ip", "-br", "addr", "show", "dev", "nodelocaldns"], check=False).stdout
    words = [word.split("/")[0] for word in out.split()[2:]]
    return [ip for ip in words if not ip.startswith("fe80:")]  # the kernel's own link-local


def answers_since(log: Path, since: float, who: str) -> float | None:
    """The time of the first query at or after ``since`` that ``who`` answered."""
    for line in log.read_text().splitlines():
        stamp, _, answered = line.partition(" ")
        if float(stamp) >= since and answered == who:
            return float(stamp)
    return None


def start(
    netns: Netns, command: str, kind: str, log: Path, sync: str | None = "1"
) -> subprocess.Popen[bytes]:
    """``sync``: --sync-interval (1 so the re-ensure is seen within the test; None: the
    default 60 s)."""
    argv = [PYTHON, "-m", "nodecache", command, *NODE_FLAGS, "--interface-type", kind]
    if sync is not None:
        argv += ["--sync-interval", sync]
    return netns.start(argv, log=log)


def small_node(netns: Netns, tmp_path: Path) -> tuple[str, Path]:
    """kdns behind the kube-proxy-style DNAT, and the query loop: (link type, query log)."""
    kind = link_type(netns)
    add_link(netns, "kdns0", kind, KDNS)
    netns.run(["ip", "route", "add", "10.96.0.0/12", "dev", "kdns0"])
    for chain in ("OUTPUT", "PREROUTING"):
        for proto in ("udp", "tcp"):
            netns.run(["iptables", "-w", "-t", "nat", "-A", chain, "-d", f"{KUBE_DNS}/32",
                       "-p", proto, "--dport", "53", "-j", "DNAT",
                       "--to-destination", f"{KDNS}:53"])  # fmt: skip
    netns.start(
        [PYTHON, "-m", "kdns", "serve", "--manifests", str(ROOT / "examples/demo-cluster.yaml"),
         "--listen", f"{KDNS}:53", "--upstream", "none", "--health-listen", "none"],
        log=tmp_path / "kdns.log",
    )  # fmt: skip
    queries = tmp_path / "queries.log"
    netns.start([PYTHON, str(ROOT / "tests/support/who_answers.py"), KUBE_DNS, "53", "50"],
                log=queries)  # fmt: skip

    # The Service path alone: before nodecache, kdns answers on the kube-dns IP.
    started = time.monotonic()
    wait_until(lambda: answers_since(queries, started, "kdns"), 15, interval=0.05,
               message="kdns never answered through the DNAT")  # fmt: skip
    return kind, queries


def test_sigkill_falls_back_to_kdns_and_back(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    reason = netns_missing_reason("iptables", "iptables-save")
    if reason:
        pytest.skip(reason)
    with network_namespace("kdnsfb") as netns:
        kind, queries = small_node(netns, tmp_path)

        cache_log = tmp_path / "nodecache.log"
        cache = start(netns, "serve", kind, cache_log)
        guard = start(netns, "guard", kind, tmp_path / "guard.log")
        up_since = time.monotonic()
        wait_until(lambda: answers_since(queries, up_since, "nodecache"), 15, interval=0.05,
                   message="nodecache never took the kube-dns IP over")  # fmt: skip
        # 12 rules for each of the two IPs (queries may reach us before the last is in)
        wait_until(lambda: len(our_rules(netns)) == 24, 5, interval=0.05)
        assert has_interface(netns)

        # The periodic sync: a deleted rule comes back, a piled-up copy goes.
        wanted = sorted(our_rules(netns))
        rules = node_rules([(LINK_LOCAL, 53), (KUBE_DNS, 53)], 8080)
        gone = next(r for r in rules if r.table == "raw" and r.chain == "PREROUTING")
        twice = next(r for r in rules if r.table == "filter" and r.chain == "INPUT")
        # No count check between the two edits and the wait: the sync may run between them
        # (25 rules, not 24), and both edits raise if iptables refuses them.
        netns.run(gone.delete())
        netns.run(twice.insert())
        wait_until(lambda: sorted(our_rules(netns)) == wanted, 5, interval=0.1,
                   message="the sync did not restore exactly one copy of each rule")  # fmt: skip

        os.kill(cache.pid, signal.SIGKILL)
        killed = time.monotonic()
        cache.wait(timeout=5)
        back_to_kdns = wait_until(
            lambda: answers_since(queries, killed, "kdns"), FALLBACK_BUDGET_S, interval=0.05,
            message="kdns did not get the kube-dns IP back within 5 s of the SIGKILL",
        )  # fmt: skip
        # The guard leaves the interface with its probe address only: the kube-dns IP is no
        # local address, and kdns answered it above through the DNAT.
        wait_until(lambda: our_rules(netns) == [] and interface_ips(netns) == [LINK_LOCAL], 3)

        restarted = time.monotonic()
        cache = start(netns, "serve", kind, cache_log)
        cache_again = wait_until(
            lambda: answers_since(queries, restarted, "nodecache"), 15, interval=0.05,
            message="the restarted nodecache did not take the kube-dns IP over",
        )  # fmt: skip
        wait_until(lambda: len(our_rules(netns)) == 24, 5)  # the guard's install added no copy
        time.sleep(1.5)  # a guard tick or two after the restart: still exactly one copy each
        assert len(our_rules(netns)) == 24

        assert back_to_kdns is not None
        assert cache_again is not None
        fallback_s, recovery_s = back_to_kdns - killed, cache_again - restarted
        record_property("sigkill_to_kdns_s", round(fallback_s, 2))
        record_property("restart_to_nodecache_s", round(recovery_s, 2))
        sys.stdout.write(
            f"\n[{kind} interface] SIGKILL -> kdns answers the kube-dns IP: {fallback_s:.2f} s; "
            f"restart -> nodecache answers again: {recovery_s:.2f} s\n"
        )
        assert back_to_kdns - killed < FALLBACK_BUDGET_S

        # SIGTERM (the guard gone first, so only the cache acts): it removes the rules, drains,
        # removes the interface, and kdns has the kube-dns IP again.
        guard.terminate()
        assert guard.wait(timeout=5) == 0
        cache.terminate()
        assert cache.wait(timeout=10) == 0
        assert our_rules(netns) == []
        assert not has_interface(netns)
        stopped = time.monotonic()
        wait_until(lambda: answers_since(queries, stopped, "kdns"), 3, interval=0.05)


def test_sigstop_past_the_guard_then_sigcont_takes_the_ip_back_at_once(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """A hang longer than the guard's three probes, with the default 60 s sync: the guard
    bypasses the cache, and reinstalls within a probe or two of SIGCONT, not at the next sync."""
    reason = netns_missing_reason("iptables", "iptables-save")
    if reason:
        pytest.skip(reason)
    with network_namespace("kdnsst") as netns:
        kind, queries = small_node(netns, tmp_path)
        cache = start(netns, "serve", kind, tmp_path / "nodecache.log", sync=None)
        start(netns, "guard", kind, tmp_path / "guard.log", sync=None)
        up_since = time.monotonic()
        wait_until(lambda: answers_since(queries, up_since, "nodecache"), 15, interval=0.05,
                   message="nodecache never took the kube-dns IP over")  # fmt: skip
        wait_until(lambda: len(our_rules(netns)) == 24, 5, interval=0.05)

        os.kill(cache.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            bypassed = wait_until(
                lambda: answers_since(queries, stopped, "kdns"), FALLBACK_BUDGET_S,
                interval=0.05, message="kdns did not get the kube-dns IP while nodecache hung",
            )  # fmt: skip
            time.sleep(max(0.0, stopped + 4.5 - time.monotonic()))
            assert our_rules(netns) == []
            assert interface_ips(netns) == [LINK_LOCAL]
        finally:
            os.kill(cache.pid, signal.SIGCONT)
        resumed = time.monotonic()
        back = wait_until(
            lambda: answers_since(queries, resumed, "nodecache"), RESUME_BUDGET_S + 2,
            interval=0.05, message="nodecache did not get the kube-dns IP back after SIGCONT",
        )  # fmt: skip
        wait_until(lambda: len(our_rules(netns)) == 24, 3, interval=0.05)
        assert sorted(interface_ips(netns)) == sorted([LINK_LOCAL, KUBE_DNS])

        hang_s, resume_s = bypassed - stopped, back - resumed
        record_property("sigstop_to_kdns_s", round(hang_s, 2))
        record_property("sigcont_to_nodecache_s", round(resume_s, 2))
        sys.stdout.write(
            f"\n[{kind} interface] SIGSTOP -> kdns answers the kube-dns IP: {hang_s:.2f} s; "
            f"SIGCONT -> nodecache answers it again: {resume_s:.2f} s (sync interval 60 s)\n"
        )
        assert resume_s < RESUME_BUDGET_S


PLUMB_SCRIPT = """
import json, subprocess, sys
from nodecache.node.commands import run_command
from nodecache.node.plumbing import Plumbing
node = Plumbing([("fd00::a", 53), ("169.254.20.10", 53)], 8080, run_command,
                interface_type=sys.argv[1])
counts = lambda: {cmd: subprocess.run([cmd], capture_output=True, text=True).stdout.count(
    "nodecache:") for cmd in ("iptables-save", "ip6tables-save")}
first = node.install()
after_first = counts()
second = node.install()
after_second = counts()
addresses = subprocess.run(["ip", "-br", "addr", "show", "dev", "nodelocaldns"],
                           capture_output=True, text=True).stdout.split()
removed = node.remove()
print(json.dumps({"install": [first, second], "counts": [after_first, after_second],
                  "addresses": addresses, "removed": removed, "left": counts(),
                  "errors": dict(node.errors)}))
"""


def test_real_iptables_and_ip6tables_install_once_and_remove(tmp_path: Path) -> None:
    """The rules as ``iptables``/``ip6tables`` take them (real binaries, nf_tables), twice (no
    second copy), then gone; the interface holds the IPv4 /32 and the IPv6 /128."""
    reason = netns_missing_reason("iptables", "ip6tables-save")
    if reason:
        pytest.skip(reason)
    with network_namespace("kdnsv6") as netns:
        kind = link_type(netns)
        out = netns.run([PYTHON, "-c", PLUMB_SCRIPT, kind]).stdout
    result = json.loads(out.splitlines()[-1])
    assert result["install"] == [True, True]
    assert result["counts"] == [{"iptables-save": 12, "ip6tables-save": 12}] * 2
    assert "169.254.20.10/32" in result["addresses"]
    assert "fd00::a/128" in result["addresses"]
    assert result["removed"] is True
    assert result["left"] == {"iptables-save": 0, "ip6tables-save": 0}
    assert set(result["errors"].values()) == {0}
