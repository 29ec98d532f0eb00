"""The query log on the real programs: switched on and off at runtime over HTTP, lines in both
formats, the C loop handing over and taking back the socket (every query still counted once),
and the rate limit holding under a burst. Bounded: a few hundred queries, a few seconds each."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from kdns.serve.reply import Reply
from kdns.serve.udp import UDPServer, bind_udp
from tests.support.programs import DEMO, Program, program
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GOOD = "cart.shop.svc.cluster.local."
MISSING = "nope.shop.svc.cluster.local."
TEXT_LINE = re.compile(
    r'^\[INFO\] 127\.0\.0\.1:\d+ - \d+ "A IN (\S+) (udp|tcp) \d+ (true|false) \d+" '
    r"(NOERROR|NXDOMAIN) [a-z,]+ \d+ \d+\.\d+s$"
)


def config_naming(output: Path) -> str:
    """A config file naming the log's file: over HTTP only such a file (or stderr) can be
    chosen."""
    path = output.with_suffix(".yaml")
    path.write_text(f"query_log: {{output: {output}}}\n")
    return str(path)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def requests(server: Program) -> int:
    text = server.metrics()
    return sum(
        int(float(value))
        for value in re.findall(r"^coredns_dns_requests_total\{[^}]*\} (\S+)$", text, re.M)
    )


def test_kdns_switches_the_log_at_runtime_in_both_formats(tmp_path: Path) -> None:
    output = tmp_path / "queries.log"
    with program(
        "kdns", "--manifests", str(DEMO), "--upstream", "none", "--config", config_naming(output)
    ) as kdns:
        assert kdns.query_log()["enabled"] is False
        kdns.query(GOOD)  # off: not logged (the C loop, where it is built, answers it)
        status = kdns.query_log(enabled="true", output=str(output))
        assert status["enabled"] is True
        kdns.query(GOOD)
        kdns.query(MISSING, "tcp")
        wait_until(lambda: len(lines(output)) == 2, timeout=5, message="two text lines")
        for line in lines(output):
            assert TEXT_LINE.match(line), line
        kdns.query_log(format="json", rcode="denial")
        kdns.query(GOOD)  # filtered: a success
        kdns.query(MISSING)
        wait_until(lambda: len(lines(output)) == 3, timeout=5, message="one JSON line")
        fields = json.loads(lines(output)[-1])
        assert fields["server"] == "kdns"
        assert fields["qname"] == MISSING
        assert fields["rcode"] == "NXDOMAIN"
        assert fields["ttl"] == 5  # the demo's SOA negative TTL
        assert fields["cache_hit"] is False
        kdns.query_log(enabled="false")
        kdns.query(MISSING)
        kdns.query(MISSING)  # the C loop again, if built
        assert requests(kdns) == 7  # every query counted once, whichever loop answered
        time.sleep(0.2)  # the writer's interval: nothing more may appear
        assert len(lines(output)) == 3
        status = kdns.query_log()
        assert status["stats"]["written"] == 3
        assert status["stats"]["filtered"] == 1


def test_nodecache_logs_cache_hits(tmp_path: Path) -> None:
    output = tmp_path / "queries.log"
    with (
        program("kdns", "--manifests", str(DEMO), "--upstream", "none") as kdns,
        program("nodecache", "--cluster-upstream", f"127.0.0.1:{kdns.dns_port}", "--upstream",
                "none", "--config", config_naming(output)) as nodecache,
    ):  # fmt: skip
        nodecache.query_log(enabled="true", format="json", output=str(output))
        for _ in range(3):
            assert nodecache.query(GOOD).rcode() == dns.rcode.NOERROR
        wait_until(lambda: len(lines(output)) == 3, timeout=5, message="three JSON lines")
        hits = [json.loads(line)["cache_hit"] for line in lines(output)]
        assert hits == [False, True, True]  # the miss went to kdns, then the cache answered
        assert {json.loads(line)["server"] for line in lines(output)} == {"nodecache"}


def test_the_rate_limit_holds_under_a_burst(tmp_path: Path) -> None:
    output = tmp_path / "queries.log"
    rate = 20
    with program(
        "kdns", "--manifests", str(DEMO), "--upstream", "none", "--config", config_naming(output)
    ) as kdns:
        kdns.query_log(enabled="true", rate=str(rate), output=str(output))
        started = time.monotonic()
        query = dns.message.make_query(GOOD, "A").to_wire()
        sent = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            while sent < 400 and time.monotonic() - started < 5:
                sock.sendto(query, ("127.0.0.1", kdns.dns_port))
                sock.recv(4096)
                sent += 1
        elapsed = time.monotonic() - started
        kdns.query_log(enabled="false")

        def settled() -> dict[str, int] | None:
            stats: dict[str, int] = kdns.query_log()["stats"]
            return stats if stats["written"] + stats["rate_limited"] == sent else None

        stats = wait_until(settled, timeout=5, interval=0.05, message="the writer drained")
        assert len(lines(output)) == stats["written"]
        # A full bucket (rate) at the start, then rate per second.
        assert stats["written"] <= rate + rate * elapsed + 1
        assert stats["written"] >= rate
        assert stats["rate_limited"] == sent - stats["written"]


def test_nodecache_reload_switches_the_log(tmp_path: Path) -> None:
    output = tmp_path / "queries.log"
    config = tmp_path / "nodecache.yaml"
    config.write_text("query_log: {enabled: false}\n")
    with (
        program("kdns", "--manifests", str(DEMO), "--upstream", "none") as kdns,
        program("nodecache", "--cluster-upstream", f"127.0.0.1:{kdns.dns_port}", "--upstream",
                "none", "--config", str(config)) as nodecache,
    ):  # fmt: skip
        nodecache.query(GOOD)
        config.write_text(f"query_log: {{enabled: true, format: json, output: {output}}}\n")
        nodecache.process.send_signal(signal.SIGHUP)
        wait_until(lambda: nodecache.query_log()["enabled"], timeout=10, message="reloaded")
        nodecache.query(GOOD)
        wait_until(lambda: len(lines(output)) == 1, timeout=5, message="one line")
        assert json.loads(lines(output)[0])["cache_hit"] is True
        config.write_text("query_log: {enabled: true, output: /nonexistent/dir/q.log}\n")
        nodecache.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: any("query_log.output" in line for line in list(nodecache.log)), timeout=10
        )
        assert nodecache.query_log()["output"] == str(output)  # rejected: the old one stays


class _OrderLog:
    """A query log that notes, at each offer, whether the client already had the reply."""

    enabled = True

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.client_had_it: list[bool] = []
        self.offered = threading.Event()

    def offer(self, *_line: object) -> None:
        try:
            self.client.recv(4096, socket.MSG_DONTWAIT)
            self.client_had_it.append(True)
        except BlockingIOError:
            self.client_had_it.append(False)
        self.offered.set()


@pytest.mark.parametrize("deferred", [False, True], ids=["at-once", "deferred"])
def test_a_udp_reply_is_logged_before_it_leaves(deferred: bool) -> None:
    """So a client's next query can never be logged before the one it follows (the deferred
    reply is sent from another thread than the loop that answers the next query)."""
    reply = b"\x12\x34" + b"\x81\x80" + b"\x00" * 8

    def answer(_packet: bytes) -> Reply:
        if not deferred:
            return reply

        def later(send: Callable[[bytes], None]) -> None:
            threading.Thread(target=send, args=(reply,), daemon=True).start()

        return later

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        log = _OrderLog(client)
        server = UDPServer(bind_udp("127.0.0.1", 0), answer=answer, query_log=log)  # type: ignore[arg-type]
        server.start()
        try:
            client.sendto(b"\x12\x34\x01\x00" + b"\x00" * 8, server.address)
            assert log.offered.wait(5)
            client.settimeout(5)
            assert client.recv(4096) == reply
        finally:
            server.stop()
    assert log.client_had_it == [False]
