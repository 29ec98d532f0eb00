"""/metrics of the real programs: promtool accepts both, and a real Prometheus scraping kdns and
nodecache on loopback sees the requests, the SERVFAIL ratio and the latency the test caused.

kdns serves the demo snapshot and forwards other names to an upstream that answers SERVFAIL;
nodecache's cluster route goes to a scripted upstream that knows the demo name, and its default
route to the same SERVFAIL upstream. The test sends a known number of queries of each kind and
reads the counters back with PromQL over Prometheus's HTTP API (values, not rates, so scrape
timing cannot blur them). Prometheus and promtool come from Debian's ``prometheus`` package
(``./dev`` installs it as root); without them these tests skip, saying so.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.fault_upstream import FaultUpstream
from tests.support.programs import DEMO, Program, program
from tests.support.waiting import stop_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
GOOD = "cart.shop.svc.cluster.local."
GOOD_QUERIES = 40
FAILING_QUERIES = 10
P99_BOUND_S = 2.0
"""Generous: loopback answers take well under 10 ms, but this machine is shared."""


@dataclass
class Pair:
    kdns: Program
    nodecache: Program


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """kdns and nodecache, each asked GOOD_QUERIES good and FAILING_QUERIES failing names
    (over UDP and TCP), before any test reads a counter."""
    failing = FaultUpstream(default="servfail")
    cluster = FaultUpstream(
        [
            f"{GOOD} 30 IN A 10.96.10.11",
            "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 "
            "1800 86400 30",
        ]
    )
    with failing, cluster:
        upstream = f"127.0.0.1:{failing.port}"
        config = tmp_path_factory.mktemp("nodecache") / "nodecache.yaml"
        config.write_text("upstream_options: {try_timeout_s: 0.5, overall_timeout_s: 1}\n")
        with (
            program("kdns", "--manifests", str(DEMO), "--upstream", upstream) as kdns,
            program(
                "nodecache", "--cluster-upstream", f"127.0.0.1:{cluster.port}",
                "--upstream", upstream, "--config", str(config),
            ) as nodecache,
        ):  # fmt: skip
            for server in (kdns, nodecache):
                for index in range(GOOD_QUERIES):
                    reply = server.query(GOOD, "tcp" if index % 4 == 0 else "udp")
                    assert reply.rcode() == dns.rcode.NOERROR, server.name
                for index in range(FAILING_QUERIES):
                    reply = server.query(f"fail{index}.example.test.")
                    assert reply.rcode() == dns.rcode.SERVFAIL, server.name
            yield Pair(kdns, nodecache)


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (Debian package prometheus; ./dev installs it)")
    return tool


@pytest.mark.parametrize("which", ["kdns", "nodecache"])
def test_promtool_accepts_the_metrics(pair: Pair, which: str) -> None:
    text = getattr(pair, which).metrics()
    result = subprocess.run(
        [_promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == "", "promtool lint findings"
    for family in ("coredns_build_info", "coredns_dns_requests_total", "process_cpu_seconds_total"):
        assert f"\n{family}" in text, family
    # Exact integers: no count is printed with a rounded mantissa. prometheus-client's own
    # process_* gauges are left out: it writes large floats Go-style with trailing zeros cut
    # (35123200 as 3.51232e+07, exact), which this pattern cannot tell from a rounded one.
    assert not re.search(r"^(?!process_)\w+(\{[^}]*\})? \d\.\d{1,5}e\+0[6-9]$", text, re.M)


# --- a real Prometheus -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def prometheus(directory: Path, targets: dict[str, int]) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (Debian package prometheus; ./dev installs it)")
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        for job, port in targets.items()
    )
    config = directory / "prometheus.yml"
    config.write_text(
        f"global: {{scrape_interval: 500ms, evaluation_interval: 1s}}\nscrape_configs:\n{jobs}"
    )
    port = _free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_until(ready, timeout=20, interval=0.1, message="prometheus ready")
        yield url
    finally:
        stop_process(process)


def promql(url: str, expression: str) -> float | None:
    """The value of a PromQL expression with one result (None while there is none yet)."""
    query = urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result = body["data"]["result"]
    if not result:
        return None
    assert len(result) == 1, result
    return float(result[0]["value"][1])


@pytest.mark.e2e
def test_prometheus_sees_what_was_sent(pair: Pair, tmp_path: Path) -> None:
    total = GOOD_QUERIES + FAILING_QUERIES
    with prometheus(
        tmp_path, {"kdns": pair.kdns.metrics_port, "nodecache": pair.nodecache.metrics_port}
    ) as url:
        for job in ("kdns", "nodecache"):
            requests = f'sum(coredns_dns_requests_total{{job="{job}"}})'
            wait_until(lambda q=requests: promql(url, q) == total, timeout=15, interval=0.2,
                       message=f"{job}: {total} requests in Prometheus")  # fmt: skip
            assert promql(url, f'up{{job="{job}"}}') == 1
            servfail = promql(
                url,
                f'sum(coredns_dns_responses_total{{job="{job}",rcode="SERVFAIL"}}) / '
                f'sum(coredns_dns_responses_total{{job="{job}"}})',
            )
            assert servfail == pytest.approx(FAILING_QUERIES / total)
            tcp = promql(url, f'sum(coredns_dns_requests_total{{job="{job}",proto="tcp"}})')
            assert tcp == GOOD_QUERIES / 4
            p99 = promql(
                url,
                "histogram_quantile(0.99, sum by (le) "
                f'(coredns_dns_request_duration_seconds_bucket{{job="{job}"}}))',
            )
            assert p99 is not None
            assert 0 < p99 < P99_BOUND_S
            count = promql(url, f'sum(coredns_dns_request_duration_seconds_count{{job="{job}"}})')
            assert count == total
        # Who answered, as CoreDNS names it: kdns's records, nodecache's cache, forwarding.
        assert (
            promql(url, 'sum(coredns_dns_responses_total{job="kdns",plugin="kubernetes"})')
            == GOOD_QUERIES
        )
        assert (
            promql(url, 'sum(coredns_dns_responses_total{job="kdns",plugin="forward"})')
            == FAILING_QUERIES
        )
        assert (
            promql(url, 'sum(coredns_dns_responses_total{job="nodecache",plugin="cache"})')
            == GOOD_QUERIES - 1
        )
        assert (
            promql(url, 'sum(coredns_cache_hits_total{job="nodecache",type="success"})')
            == GOOD_QUERIES - 1
        )
        assert promql(url, 'count(coredns_build_info{job="kdns"})') == 1


# --- --log-format json -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("kdns", ("--manifests", str(DEMO), "--upstream", "none", "--log-format", "json")),
        ("nodecache", ("--cluster-upstream", "127.0.0.1:1", "--upstream", "none",
                       "--log-format", "json")),
    ],
    ids=["kdns", "nodecache"],
)  # fmt: skip
def test_json_logs_have_the_same_fields_in_both_programs(name: str, args: tuple[str, ...]) -> None:
    with program(name, *args) as running:
        lines = [line for line in list(running.log) if line.strip()]
    assert lines
    for line in lines:
        fields = json.loads(line)
        assert {"ts", "time", "level", "logger", "program", "msg"} <= set(fields), line
        assert fields["program"] == name
    assert any(json.loads(line)["msg"].startswith("serving on 127.0.0.1:") for line in lines)
