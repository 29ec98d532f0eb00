"""nodecache.node.guard: the state machine, with scripted probes and an injected clock."""

from __future__ import annotations

import threading

import pytest

from nodecache.node.guard import Guard, State, run_guard


class Recorder:
    """An installer that records what it was asked to do; ``ok`` decides the outcome."""

    def __init__(self, ok: bool = True) -> None:
        self.actions: list[str] = []
        self.ok = ok

    def install(self) -> bool:
        self.actions.append("install")
        return self.ok

    def bypass(self) -> bool:
        self.actions.append("bypass")
        return self.ok


def run_script(probes: str, failures: int = 3) -> tuple[list[str | None], Recorder, Guard]:
    """``probes``: ``+`` answered, ``-`` failed; returns what each step did."""
    answers = iter(probes)
    recorder = Recorder()
    guard = Guard(recorder, lambda: next(answers) == "+", failures)
    return [guard.step() for _ in probes], recorder, guard


CASES = [
    pytest.param("+++", ["installed", None, None], State.INSTALLED, id="healthy-installs-once"),
    pytest.param("+--+--+", ["installed", *[None] * 6], State.INSTALLED, id="slow-under-n-keeps"),
    pytest.param(
        "+---", ["installed", None, None, "removed"], State.REMOVED, id="n-failures-remove"
    ),
    pytest.param(
        "+------", ["installed", None, None, "removed", None, None, None], State.REMOVED,
        id="removes-once-not-every-tick",
    ),
    pytest.param(
        "+---+", ["installed", None, None, "removed", "installed"], State.INSTALLED,
        id="answers-again-reinstall",
    ),
    pytest.param("---", [None, None, "removed"], State.REMOVED, id="cache-never-up"),
    pytest.param(
        "+--+--", ["installed", *[None] * 5], State.INSTALLED, id="success-resets-count"
    ),
]  # fmt: skip


@pytest.mark.parametrize(("probes", "expected", "state"), CASES)
def test_state_machine(probes: str, expected: list[str | None], state: State) -> None:
    steps, recorder, guard = run_script(probes)
    assert steps == expected
    assert guard.state is state
    verbs = {"installed": "install", "removed": "bypass"}
    assert recorder.actions == [verbs[step] for step in steps if step]


@pytest.mark.parametrize("failures", [1, 2, 5])
def test_failures_setting(failures: int) -> None:
    steps, _, _ = run_script("+" + "-" * failures, failures)
    assert steps[-1] == "removed"
    assert "removed" not in steps[:-1]


def test_failed_install_is_retried_at_the_next_answer() -> None:
    recorder = Recorder(ok=False)
    guard = Guard(recorder, lambda: True, 3)
    assert guard.step() is None
    assert guard.step() is None
    recorder.ok = True
    assert guard.step() == "installed"
    assert recorder.actions == ["install"] * 3


def test_run_guard_paces_steps_by_the_clock_and_stops() -> None:
    now = [0.0]
    waits: list[float] = []

    class Stopper(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            assert timeout is not None
            waits.append(round(timeout, 3))
            now[0] += timeout
            if len(waits) == 4:
                self.set()
            return self.is_set()

    stop = Stopper()
    durations = iter([0.2, 0.0, 1.5, 0.1])  # the third step overruns its period

    def answers() -> bool:
        now[0] += next(durations)
        return True

    run_guard(Guard(Recorder(), answers, 3), 1.0, stop, lambda: now[0])
    assert waits == [0.8, 1.0, 0.0, 0.9]
