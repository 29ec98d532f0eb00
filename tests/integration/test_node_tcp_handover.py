"""TCP across an upgrade, with the kernel's help: in a network namespace of our own with
``net.ipv4.tcp_migrate_req=1`` (Linux >= 5.14; per namespace), connections queued to the old
nodecache's listener when it closes move to the new one's instead of being reset, so TCP
clients that open one connection per query lose none across a replacement.

Everything runs in the namespace: kdns on 127.0.0.1:5300 as the cluster upstream, two
nodecache processes on 127.0.0.1:53 (SO_REUSEPORT), and the clients
(tests/support/tcp_stream.py). The old nodecache gets SIGTERM once the new one serves, as the
DaemonSet controller does once the new pod is Ready.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.netns import Netns, netns_missing_reason, network_namespace
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
STREAM_S = 4.0
CLIENTS = 4


def start_nodecache(netns: Netns, log: Path) -> None:
    netns.start(
        [PYTHON, "-m", "nodecache", "serve", "--listen", "127.0.0.1:53",
         "--cluster-upstream", "127.0.0.1:5300", "--upstream", "none", "--health-listen", "none"],
        log=log,
    )  # fmt: skip


def serving_count(log: Path) -> int:
    return log.read_text().count("serving on 127.0.0.1:53") if log.exists() else 0


def test_tcp_connections_survive_a_replacement(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    reason = netns_missing_reason()
    if reason:
        pytest.skip(reason)
    with network_namespace("kdnstcp") as netns:
        # /proc/sys/net is the namespace's own: this changes nothing outside it.
        migrate = netns.run(
            ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/tcp_migrate_req"], check=False
        )
        if migrate.returncode != 0:
            pytest.skip(f"no net.ipv4.tcp_migrate_req here (Linux < 5.14?): {migrate.stderr}")
        netns.start(
            [PYTHON, "-m", "kdns", "serve", "--manifests", str(ROOT / "examples/demo-cluster.yaml"),
             "--listen", "127.0.0.1:5300", "--upstream", "none", "--health-listen", "none"],
            log=tmp_path / "kdns.log",
        )  # fmt: skip
        old_log, new_log = tmp_path / "old.log", tmp_path / "new.log"
        start_nodecache(netns, old_log)
        old = netns.processes[-1]
        wait_until(lambda: serving_count(old_log), 15, message="the old nodecache did not start")
        wait_until(
            lambda: netns.run([PYTHON, "-c", "import socket; socket.create_connection("
                               "('127.0.0.1', 5300), timeout=1).close()"], check=False)
            .returncode == 0,
            15, interval=0.1, message="kdns did not start",
        )  # fmt: skip
        clients = netns.start(
            [PYTHON, str(ROOT / "tests/support/tcp_stream.py"), "127.0.0.1", "53", str(STREAM_S),
             str(CLIENTS)],
            log=tmp_path / "clients.json",
        )  # fmt: skip
        time.sleep(1.0)  # the stream is under way
        start_nodecache(netns, new_log)
        wait_until(lambda: serving_count(new_log), 15, message="the new nodecache did not start")
        sigterm = time.monotonic()
        old.send_signal(signal.SIGTERM)
        assert old.wait(timeout=15) == 0
        exited = time.monotonic()
        assert clients.wait(timeout=STREAM_S + 15) == 0
        summary = json.loads((tmp_path / "clients.json").read_text().splitlines()[-1])
    during = [t for t in summary["started"] if sigterm <= t <= exited]
    after = [t for t in summary["started"] if t > exited]
    record_property("tcp_queries", summary["ok"] + summary["failed"])
    record_property("tcp_failed", summary["failed"])
    sys.stdout.write(
        f"\ntcp handover (tcp_migrate_req=1): {summary['ok'] + summary['failed']} queries, "
        f"{summary['failed']} failed; {len(during)} during the handover "
        f"({exited - sigterm:.2f} s), {len(after)} after\n"
    )
    assert "handing over" in old_log.read_text()
    assert during, "no query was made while the old process handed over"
    assert after, "the stream ended before the replacement did"
    assert summary["failures"] == []
