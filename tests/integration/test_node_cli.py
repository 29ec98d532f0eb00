"""``nodecache guard`` and the node flags as a process: exit codes, messages, signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
BASE = ["--cluster-upstream", "127.0.0.1:10", "--upstream", "none", "--health-listen", "none"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["guard", "--listen", "127.0.0.1:0"], "guard_probe: the first --listen has port 0",
                     id="guard-needs-a-port"),
        pytest.param(["serve", "--listen", "127.0.0.1:0", "--interface-name", "bad/name"],
                     "nodecache: error: interface_name: 'bad/name' is not an interface name",
                     id="bad-interface-name"),
        pytest.param(["guard", "--listen", "127.0.0.1:53", "--guard-failures", "0"],
                     "nodecache: error: guard_failures: must be at least 1", id="bad-failures"),
        pytest.param(["check", "--listen", "127.0.0.1:53", "--interface-type", "veth"],
                     "nodecache: error: interface_type: expected one of dummy, ifb, bridge",
                     id="bad-interface-type"),
    ],
)  # fmt: skip
def test_bad_settings_exit_2_naming_the_field(argv: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nodecache", *argv, *BASE],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr


def test_guard_without_plumbing_probes_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """On loopback there is nothing to install or remove: the guard still runs its loop (the
    probe fails: nothing listens on 127.0.0.1:9) and stops cleanly on SIGTERM."""
    log = tmp_path / "guard.log"
    with log.open("w") as out:
        guard = subprocess.Popen(
            [sys.executable, "-m", "nodecache", "guard", "--listen", "127.0.0.1:9", *BASE,
             "--guard-interval", "0.2", "--guard-timeout", "0.1", "--guard-failures", "2"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(lambda: "failed 2 probes in a row" in log.read_text(), 10)
        guard.send_signal(signal.SIGHUP)  # the cache's reload signal: the guard keeps going
        time.sleep(0.3)
        assert guard.poll() is None
        guard.send_signal(signal.SIGTERM)
        assert guard.wait(timeout=10) == 0
    finally:
        if guard.poll() is None:
            guard.kill()
            guard.wait(timeout=5)
    text = log.read_text()
    assert "no node plumbing to guard" in text
    assert "guard stopped (1 removals, 0 installs)" in text
