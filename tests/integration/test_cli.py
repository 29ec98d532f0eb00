"""The kdns command line as users run it: exit codes, messages that name the field, the
snapshot commands, and ``serve`` picking up edits to its manifests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.zone
import pytest

from kdns.cli import load_settings, make_parser
from kdns.serve.tcplimits import TCPLimits
from tests.fakeapi import FakeKube
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-cluster.yaml"


def no_cluster_env(home: Path) -> dict[str, str]:
    """The environment with every way to find a cluster removed."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")
    }
    env["HOME"] = str(home)
    return env


def kdns(
    *args: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdns", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


@dataclass(frozen=True)
class UsageCase:
    id: str
    args: tuple[str, ...]
    message: str


BAD_SNAPSHOT = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Namespace
    metadata: {name: shop}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: cart, namespace: shop}
    spec:
      clusterIP: 10.96.0.5
      ports: [{name: http, port: eighty}]
    """
)

USAGE = [
    UsageCase("check-needs-manifests", ("check",), "check needs --manifests PATH"),
    UsageCase("ttl-range", ("check", "--manifests", str(DEMO), "--ttl", "-1"), "ttl: must be between 0 and 3600"),
    UsageCase("pods-choice", ("check", "--manifests", str(DEMO), "--pods", "bogus"), "--pods"),
    UsageCase("loadbalance-choice", ("check", "--manifests", str(DEMO), "--loadbalance", "random"),
              "--loadbalance"),
    UsageCase("listen-shape", ("serve", "--manifests", str(DEMO), "--listen", "nope"), "listen: expected HOST:PORT"),
    UsageCase("listen-host", ("serve", "--manifests", str(DEMO), "--listen", "example.com:53"),
              "listen: 'example.com' is not an IP address"),
    UsageCase("max-udp-size", ("serve", "--manifests", str(DEMO), "--max-udp-size", "100"), "max_udp_size"),
    UsageCase("zone-invalid", ("check", "--manifests", str(DEMO), "--zone", "bad zone!"), "zone:"),
    UsageCase("tcp-per-client-over-cap", ("serve", "--manifests", str(DEMO), "--tcp-max-connections", "8",
              "--tcp-max-per-client", "9"), "tcp_max_per_client: must be 1-max_connections (8)"),
    UsageCase("tcp-max-connections", ("serve", "--manifests", str(DEMO), "--tcp-max-connections", "0"),
              "tcp_max_connections: must be"),
    UsageCase("tcp-write-timeout", ("serve", "--manifests", str(DEMO), "--tcp-write-timeout", "0"),
              "tcp_write_timeout: must be > 0"),
    UsageCase("tcp-idle-timeout", ("serve", "--manifests", str(DEMO), "--tcp-idle-timeout", "-1"),
              "tcp_idle_timeout: must be > 0"),
    UsageCase("tcp-max-queued-bytes", ("serve", "--manifests", str(DEMO), "--tcp-max-queued-bytes", "10"),
              "tcp_max_queued_bytes: must be 1024-16777216"),
    UsageCase("tcp-max-buffer-bytes", ("serve", "--manifests", str(DEMO), "--tcp-max-buffer-bytes", "1000"),
              "tcp_max_buffer_bytes: must be at least one connection's bound"),
    UsageCase("tcp-socket-buffer-bytes", ("serve", "--manifests", str(DEMO), "--tcp-socket-buffer-bytes",
              "100"), "tcp_socket_buffer_bytes: must be 4096-4194304"),
    UsageCase("missing-file", ("check", "--manifests", "/nonexistent/x.yaml"), "/nonexistent/x.yaml"),
    UsageCase("unknown-flag", ("serve", "--bogus"), "--bogus"),
    UsageCase("metrics-listen", ("serve", "--manifests", str(DEMO), "--metrics-listen", "9153"),
              "metrics_listen: expected HOST:PORT"),
    UsageCase("log-format", ("serve", "--manifests", str(DEMO), "--log-format", "xml"), "--log-format"),
    UsageCase("forward-workers", ("serve", "--manifests", str(DEMO), "--forward-workers", "0"),
              "forward_workers: must be between 1 and 4096"),
    UsageCase("forward-max-queue-wait",
              ("serve", "--manifests", str(DEMO), "--forward-max-queue-wait", "0"),
              "forward_max_queue_wait: expected a positive number"),
]  # fmt: skip


@pytest.mark.parametrize("case", USAGE, ids=lambda c: c.id)
def test_usage_errors_exit_2_naming_the_field(case: UsageCase) -> None:
    result = kdns(*case.args)
    assert result.returncode == 2, result.stderr
    assert case.message in result.stderr


def test_no_source_exits_2_saying_how_to_point_at_a_cluster(tmp_path: Path) -> None:
    result = kdns("serve", "--listen", "127.0.0.1:0", env=no_cluster_env(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "no cluster configuration found" in result.stderr
    assert "--kubeconfig" in result.stderr
    assert "--manifests" in result.stderr


def test_invalid_object_names_file_document_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_SNAPSHOT)
    result = kdns("serve", "--manifests", str(path), "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert "bad.yaml" in result.stderr
    assert "document 2" in result.stderr
    assert "spec.ports[0].port" in result.stderr


def test_config_file_errors_name_the_field(tmp_path: Path) -> None:
    config = tmp_path / "kdns.yaml"
    config.write_text("ttl: 5\nbogus: 1\n")
    result = kdns("check", "--manifests", str(DEMO), "--config", str(config))
    assert result.returncode == 2
    assert "bogus: unknown setting" in result.stderr
    config.write_text("tcp_max_per_client: many\n")
    result = kdns("check", "--manifests", str(DEMO), "--config", str(config))
    assert result.returncode == 2
    assert "tcp_max_per_client: expected an integer" in result.stderr
    config.write_text("ttl: five\n")
    result = kdns("check", "--manifests", str(DEMO), "--config", str(config))
    assert result.returncode == 2
    assert "ttl: expected an integer" in result.stderr
    config.write_text("loadbalance: random\n")
    result = kdns("check", "--manifests", str(DEMO), "--config", str(config))
    assert result.returncode == 2
    assert "loadbalance: must be one of round_robin, off" in result.stderr


FLAG_TO_FIELD = [
    (["--ttl", "30"], lambda c: c.zone.ttl_s, 30),
    (["--pods", "verified"], lambda c: c.zone.pods, "verified"),
    (["--endpoint-pod-names"], lambda c: c.zone.endpoint_pod_names, True),
    (
        ["--namespaces", "a", "--namespaces", "b"],
        lambda c: c.zone.namespaces,
        frozenset({"a", "b"}),
    ),
    (["--zone", "example.org"], lambda c: c.zone.zones, (("example", "org"),)),
    (["--listen", "127.0.0.1:5353"], lambda c: c.listen, (("127.0.0.1", 5353),)),
    (["--max-udp-size", "4096"], lambda c: c.max_udp_size, 4096),
    (["--log-level", "debug"], lambda c: c.log_level, "DEBUG"),
    ([], lambda c: c.metrics_listen, ("0.0.0.0", 9153)),  # CoreDNS's prometheus port
    (["--metrics-listen", "127.0.0.1:9300"], lambda c: c.metrics_listen, ("127.0.0.1", 9300)),
    (["--metrics-listen", "none"], lambda c: c.metrics_listen, None),
    (["--health-listen", "0.0.0.0:9153"], lambda c: c.metrics_listen, None),  # one listener
    ([], lambda c: c.log_format, "text"),
    (["--log-format", "json"], lambda c: c.log_format, "json"),
    ([], lambda c: c.tcp, TCPLimits()),
    (["--tcp-idle-timeout", "3"], lambda c: c.tcp.idle_timeout_s, 3.0),
    (["--tcp-write-timeout", "2.5"], lambda c: c.tcp.write_timeout_s, 2.5),
    (["--tcp-max-connections", "256"], lambda c: c.tcp.max_connections, 256),
    (["--tcp-max-per-client", "8"], lambda c: c.tcp.max_per_client, 8),
    (["--tcp-max-queued-bytes", "32768"], lambda c: c.tcp.max_queued_bytes, 32768),
    (["--tcp-max-buffer-bytes", "8388608"], lambda c: c.tcp.max_buffer_bytes, 8388608),
    (["--tcp-socket-buffer-bytes", "65536"], lambda c: c.tcp.socket_buffer_bytes, 65536),
    (["--forward-workers", "8"], lambda c: c.forward_workers, 8),
    (["--forward-max-pending", "100"], lambda c: c.forward_max_pending, 100),
    (["--forward-max-queue-wait", "0.5"], lambda c: c.forward_max_queue_wait_s, 0.5),
    (["--forward-max-refreshes", "0"], lambda c: c.forward_max_refreshes, 0),
]


@pytest.mark.parametrize(("flags", "read", "value"), FLAG_TO_FIELD, ids=lambda v: str(v))
def test_flag_sets_field(flags: list[str], read, value) -> None:  # type: ignore[no-untyped-def]
    config = load_settings(make_parser().parse_args(["serve", "--manifests", "x", *flags]))
    assert read(config) == value


def test_flags_win_over_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "kdns.yaml"
    config_file.write_text("ttl: 10\npods: disabled\nlisten: [127.0.0.1:1053]\n")
    config = load_settings(make_parser().parse_args(
        ["serve", "--manifests", "x", "--config", str(config_file), "--ttl", "20"]))  # fmt: skip
    assert (config.zone.ttl_s, config.zone.pods, config.listen) == (
        20,
        "disabled",
        (("127.0.0.1", 1053),),
    )


def test_check_summarizes_the_demo() -> None:
    result = kdns("check", "--manifests", str(DEMO))
    assert result.returncode == 0, result.stderr
    assert "namespaces: 4" in result.stdout
    assert "services: 10 (ClusterIP=6, ExternalName=2, headless=2)" in result.stdout
    assert re.search(
        r"records: A=\d+, AAAA=\d+, CNAME=2, NS=1, PTR=\d+, SOA=1, SRV=\d+, TXT=1", result.stdout
    )
    assert "skipped: ConfigMap=1" in result.stdout


def test_zonefile_is_a_valid_master_file() -> None:
    result = kdns("zonefile", "--manifests", str(DEMO))
    assert result.returncode == 0, result.stderr
    zone = dns.zone.from_text(result.stdout, origin="cluster.local.", relativize=False)
    assert zone.find_rdataset("cart.shop.svc.cluster.local.", "A")[0].address == "10.96.10.11"
    assert zone.find_rdataset("cluster.local.", "SOA")


# -- serve ------------------------------------------------------------------------------------------

SNAPSHOT = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Namespace
    metadata: {name: shop}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: cart, namespace: shop}
    spec:
      clusterIP: 10.96.0.5
      ports: [{name: http, port: 80}]
    """
)
EXTRA_SERVICE = textwrap.dedent(
    """\
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: pay, namespace: shop}
    spec:
      clusterIP: 10.96.0.6
      ports: [{name: http, port: 80}]
    """
)


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int
    log: list[str]

    def ask(self, name: str) -> dns.message.Message:
        return dns.query.udp(
            dns.message.make_query(name, "A"), "127.0.0.1", port=self.port, timeout=1
        )


@pytest.fixture(name="served")
def _served(tmp_path: Path) -> Iterator[Served]:
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(SNAPSHOT)
    process, log = _start(
        ["--manifests", str(manifest), "--listen", "127.0.0.1:0", "--upstream", "none",
         "--health-listen", "none"]
    )  # fmt: skip

    def reported_port() -> int:
        return _logged(log, r"serving on 127\.0\.0\.1:(\d+)")

    port = wait_until(reported_port, timeout=20, message="kdns did not report its port")
    try:
        yield Served(process, port, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=5)


def test_serve_picks_up_edits_within_2s_and_keeps_last_good(served: Served, tmp_path: Path) -> None:
    manifest = tmp_path / "cluster.yaml"
    assert served.ask("cart.shop.svc.cluster.local").answer
    assert served.ask("pay.shop.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN

    manifest.write_text(SNAPSHOT + EXTRA_SERVICE)
    started = time.monotonic()
    wait_until(lambda: bool(served.ask("pay.shop.svc.cluster.local").answer), timeout=5)
    assert time.monotonic() - started <= 2.0

    manifest.write_text(
        SNAPSHOT + EXTRA_SERVICE + "---\nkind: Service\napiVersion: v1\nmetadata: {}\n"
    )
    wait_until(lambda: any("keeping last good snapshot" in line for line in served.log), timeout=5)
    assert served.ask("pay.shop.svc.cluster.local").answer
    assert served.ask("cart.shop.svc.cluster.local").answer


def test_serve_exits_0_on_sigterm(served: Served) -> None:
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=10) == 0


# -- serve from a (fake) cluster ---------------------------------------------------------------


def _start(
    args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "kdns", "serve", *args],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    log: list[str] = []
    threading.Thread(
        target=lambda: log.extend(iter(process.stderr.readline, "")), daemon=True
    ).start()  # type: ignore[union-attr]
    return process, log


def _logged(log: list[str], pattern: str) -> int:
    for line in list(log):
        if match := re.search(pattern, line):
            return int(match.group(1))
    return 0


def _http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_serve_live_cluster_readiness_and_health(tmp_path: Path) -> None:
    fake = FakeKube().start()
    try:
        fake.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        fake.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cart", "namespace": "shop"},
                    "spec": {"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"],
                             "ports": [{"name": "http", "port": 80}]}})  # fmt: skip
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        stall = fake.stall_next(1, verb="list", resource="services")
        process, log = _start(
            ["--kubeconfig", str(kubeconfig), "--listen", "127.0.0.1:0", "--health-listen",
             "127.0.0.1:0", "--upstream", "none", "--startup-timeout", "0.2"],
            env=no_cluster_env(tmp_path),
        )  # fmt: skip
        try:
            port = wait_until(lambda: _logged(log, r"serving on 127\.0\.0\.1:(\d+)"), timeout=20)
            health = wait_until(
                lambda: _logged(log, r"health on http://127\.0\.0\.1:(\d+)"), timeout=5
            )
            ask = lambda name: dns.query.udp(  # noqa: E731
                dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2
            )
            # The services list is stalled: not synced, so not ready, and no false NXDOMAIN.
            assert _http(health, "/ready")[0] == 503
            assert ask("cart.shop.svc.cluster.local").rcode() == dns.rcode.SERVFAIL
            assert _http(health, "/health")[0] == 200
            stall.release()
            wait_until(lambda: _http(health, "/ready")[0] == 200, timeout=10)
            assert ask("cart.shop.svc.cluster.local").answer[0][0].address == "10.96.0.5"
            assert ask("nope.shop.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
            status, metrics = _http(health, "/metrics")
            assert status == 200
            assert 'kdns_watch_staleness_seconds{resource="services"}' in metrics
            fake.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pay", "namespace": "shop"},
                        "spec": {"clusterIP": "10.96.0.6", "ports": [{"name": "http", "port": 80}]}})  # fmt: skip
            wait_until(lambda: bool(ask("pay.shop.svc.cluster.local").answer), timeout=5)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=5)
    finally:
        fake.stop()
