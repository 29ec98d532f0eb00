"""What the nodecache DaemonSet's surge update does on one node, with the real binaries: the
new pod's nodecache starts beside the old one on the same DNS address *and the same health
port* (hostNetwork: one port space per node), the old one gets SIGTERM and hands over, and the
new one keeps answering DNS and its probes. Loopback only; no plumbing (its flags off).

Without SO_REUSEPORT on the health listener the new process logged "cannot bind the health
endpoint" and, once the old one exited, answered no probe: the kubelet would restart it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.deploy.manifests import DEPLOY, ROOT, one, render
from tests.support.cluster import fixture_objects
from tests.support.servers import RunningServer, running_server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_the_daemonset_updates_by_surge() -> None:
    daemonset = one(render(DEPLOY / "nodecache"), "DaemonSet", "nodecache")
    rolling = daemonset["spec"]["updateStrategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0
    assert str(rolling["maxSurge"]) not in ("0", "0%")


class Cache:
    def __init__(self, dns_port: int, health_port: int, upstream: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nodecache", "serve",
             "--listen", f"127.0.0.1:{dns_port}", "--health-listen", f"127.0.0.1:{health_port}",
             "--cluster-upstream", f"127.0.0.1:{upstream}", "--upstream", "none",
             "--no-setup-interface", "--no-setup-iptables", "--autopath", "off"],
            cwd=ROOT, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.log: list[str] = []
        stream = self.process.stderr
        assert stream is not None
        threading.Thread(
            target=lambda: self.log.extend(iter(stream.readline, "")), daemon=True
        ).start()

    def logged(self, pattern: str) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            assert self.process.poll() is None, "".join(self.log)
            return next((m for line in list(self.log) if (m := re.search(pattern, line))), None)

        match = wait_until(found, timeout=20, message=f"no {pattern!r} in the log")
        assert match is not None
        return match

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=15)


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.fixture
def upstream() -> Iterator[RunningServer]:
    with running_server(fixture_objects()) as server:
        yield server


def test_the_surge_pod_shares_the_health_port_and_keeps_it(upstream: RunningServer) -> None:
    old = Cache(0, 0, upstream.port)
    new: Cache | None = None
    try:
        dns_port = int(old.logged(r"serving on 127\.0\.0\.1:(\d+)").group(1))
        health_port = int(old.logged(r"health on 127\.0\.0\.1:(\d+)").group(1))
        new = Cache(dns_port, health_port, upstream.port)
        new.logged(rf"health on 127\.0\.0\.1:{health_port}")
        assert not any("cannot bind" in line for line in new.log), "".join(new.log)
        assert old.stop() == 0
        # Every probe and query now reaches the new process: the old one is gone.
        for path in ("/health", "/ready"):
            assert _status(health_port, path) == 200
        query = dns.message.make_query("kube-dns.kube-system.svc.cluster.local", "A")
        reply = dns.query.udp(query, "127.0.0.1", port=dns_port, timeout=3)
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer
    finally:
        codes = [old.stop(), new.stop() if new else 0]
    assert codes == [0, 0]
