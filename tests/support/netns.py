"""Network namespaces a test makes for itself: its own loopback, addresses and resolv.conf.

``network_namespace(prefix)`` creates a namespace with a unique name, brings its loopback up,
and removes it (and ``/etc/netns/NAME``) afterwards, whatever the test did. Everything a test
sends goes to addresses inside that namespace, so nothing leaves the machine.

``Netns`` runs commands inside (``ip netns exec``), starts long-running processes there, adds
addresses and dummy interfaces, and writes ``/etc/netns/NAME/resolv.conf``, which
``ip netns exec`` bind-mounts over ``/etc/resolv.conf`` for the commands it runs (iproute2's
documented per-namespace /etc), so glibc and musl clients read the resolv.conf we wrote.

``netns_missing_reason(*tools)`` says why such a test cannot run here (not root, no ``ip``,
a missing tool), for ``pytest.skip``: CI runs as root, so there they run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.waiting import reap

NETNS_ETC = Path("/etc/netns")


def netns_missing_reason(*tools: str) -> str | None:
    """Why network-namespace tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs as root)"
    for tool in ("ip", *tools):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (./dev test installs it when run as root)"
    probe = f"kdnsprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class Netns:
    """One namespace; see the module docstring."""

    name: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside and wait (bounded by ``timeout``); output captured as text."""
        result = subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode} in {self.name}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def start(
        self, argv: Sequence[str], *, log: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process inside; it is killed when the namespace goes."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            process = subprocess.Popen(
                self.command(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self.processes.append(process)
        return process

    def add_address(self, address: str, device: str = "lo") -> None:
        """Give ``device`` the address (a /32 or /128)."""
        prefix = "128" if ":" in address else "32"
        self.run(["ip", "addr", "add", f"{address}/{prefix}", "dev", device])

    def add_dummy(self, device: str, *addresses: str) -> None:
        """A dummy interface, up, holding ``addresses``."""
        self.run(["ip", "link", "add", device, "type", "dummy"])
        self.run(["ip", "link", "set", device, "up"])
        for address in addresses:
            self.add_address(address, device)

    def write_resolv_conf(
        self, nameserver: str, search: Sequence[str], options: Sequence[str] = ("ndots:5",)
    ) -> Path:
        """``/etc/netns/NAME/resolv.conf``, as the kubelet writes a ClusterFirst pod's."""
        directory = NETNS_ETC / self.name
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "resolv.conf"
        lines = [f"nameserver {nameserver}", f"search {' '.join(search)}"]
        if options:
            lines.append(f"options {' '.join(options)}")
        path.write_text("\n".join(lines) + "\n")
        return path

    def stop_processes(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            reap(process, 5)
        self.processes.clear()


@contextlib.contextmanager
def network_namespace(prefix: str = "kdns") -> Iterator[Netns]:
    """A fresh namespace with loopback up; removed (with its /etc/netns dir) afterwards."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    netns = Netns(name)
    try:
        netns.run(["ip", "link", "set", "lo", "up"])
        yield netns
    finally:
        netns.stop_processes()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
