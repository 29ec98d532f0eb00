"""nodecache.node.liveness: the guard's heartbeat fails when its probe loop stalls (injected
clock), and its endpoint answers /health and /metrics from it."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from nodecache.node.guard import Guard, run_guard
from nodecache.node.liveness import Heartbeat, health, render_metrics, start_endpoint
from tests.unit.test_node_guard import Recorder


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("since_beat", "alive"),
    [
        pytest.param(0.0, True, id="just-beat"),
        pytest.param(9.9, True, id="under-the-bound"),
        pytest.param(10.0, True, id="at-the-bound"),
        pytest.param(10.1, False, id="stalled"),
        pytest.param(3600.0, False, id="long-dead"),
    ],
)
def test_heartbeat_fails_only_past_the_stall_bound(since_beat: float, alive: bool) -> None:
    clock = Clock()
    heartbeat = Heartbeat(10.0, clock)
    clock.now += 50.0
    heartbeat.beat()
    clock.now += since_beat
    assert heartbeat.alive() is alive
    ok, body = health(heartbeat)
    assert ok is alive
    assert ("stalled" in body) is not alive


def scripted_loop(
    step_durations: list[float], stall_s: float
) -> tuple[list[bool], Callable[[], None]]:
    """Runs run_guard on an injected clock, each step taking the given time; records, at
    every wait, whether /health would pass then; returns (verdicts, the check)."""
    clock = Clock()
    heartbeat = Heartbeat(stall_s, clock)
    durations = iter(step_durations)
    verdicts: list[bool] = []

    def answers() -> bool:
        duration = next(durations)
        # Mid-step, as the kubelet would see it while the step runs.
        clock.now += duration / 2
        verdicts.append(heartbeat.alive())
        clock.now += duration / 2
        return True

    class Stopper(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            assert timeout is not None
            clock.now += timeout
            verdicts.append(heartbeat.alive())
            if len(verdicts) >= 2 * len(step_durations):
                self.set()
            return self.is_set()

    run_guard(Guard(Recorder(), answers, 3), 1.0, Stopper(), clock, heartbeat.beat)
    return verdicts, heartbeat.beat


@pytest.mark.parametrize(
    ("durations", "expected"),
    [
        pytest.param([0.1, 0.1, 0.1], [True] * 6, id="healthy-loop"),
        pytest.param([0.1, 8.0, 0.1], [True] * 6, id="slow-step-within-bound"),
        # A step that hangs 30 s: seen mid-step (15 s after the last beat) it is stalled.
        pytest.param([0.1, 30.0, 0.1], [True, True, False, True, True, True], id="hung-step"),
    ],
)
def test_the_loop_beats_around_every_step(durations: list[float], expected: list[bool]) -> None:
    verdicts, _ = scripted_loop(durations, stall_s=10.0)
    assert verdicts == expected


def test_a_loop_that_stopped_fails_its_liveness() -> None:
    # run_guard returns (the loop is gone): no beat afterwards, and the check fails once
    # --guard-stall has passed.
    clock = Clock()
    heartbeat = Heartbeat(10.0, clock)
    stop = threading.Event()
    stop.set()
    run_guard(Guard(Recorder(), lambda: True, 3), 1.0, stop, clock, heartbeat.beat)
    assert heartbeat.alive()
    clock.now += 11.0
    assert not heartbeat.alive()


def test_metrics_report_the_fallback_and_the_heartbeat() -> None:
    clock = Clock()
    heartbeat = Heartbeat(10.0, clock)
    answers = iter([True, False, False, False])
    guard = Guard(Recorder(), lambda: next(answers), 3)
    for _ in range(4):
        guard.step()
    clock.now += 2.5
    lines = render_metrics(guard, heartbeat).splitlines()
    assert "nodecache_guard_fallback_active 1" in lines
    assert "nodecache_guard_consecutive_failures 3" in lines
    assert 'nodecache_guard_probes_total{result="answered"} 1' in lines
    assert 'nodecache_guard_probes_total{result="failed"} 3' in lines
    assert "nodecache_guard_removals_total 1" in lines
    assert "nodecache_guard_installs_total 1" in lines
    assert "nodecache_guard_last_step_age_seconds 2.500" in lines


@pytest.mark.integration
def test_the_endpoint_answers_from_the_heartbeat() -> None:
    clock = Clock()
    heartbeat = Heartbeat(10.0, clock)
    guard = Guard(Recorder(), lambda: True, 3)
    server = start_endpoint(("127.0.0.1", 0), guard, heartbeat)
    assert server is not None
    try:
        base = "http://{}:{}".format(*server.address)
        with urllib.request.urlopen(base + "/health", timeout=5) as reply:
            assert reply.status == 200
        with urllib.request.urlopen(base + "/metrics", timeout=5) as reply:
            assert b"nodecache_guard_fallback_active 0" in reply.read()
        clock.now += 11.0
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(base + "/health", timeout=5)
        assert caught.value.code == 503
    finally:
        server.stop()


def test_a_busy_port_is_not_fatal() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        heartbeat = Heartbeat(10.0, Clock())
        assert (
            start_endpoint(("127.0.0.1", port), Guard(Recorder(), lambda: True, 3), heartbeat)
            is None
        )


def test_promtool_accepts_the_metrics() -> None:
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package)")
    guard = Guard(Recorder(), lambda: True, 3)
    guard.step()
    text = render_metrics(guard, Heartbeat(10.0, Clock()))
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
