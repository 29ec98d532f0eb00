"""The edge that runs ``iptables``/``ip6tables``/``ip``: the only place that starts them.

Everything above it (``plumbing``, ``guard``) takes a ``Run`` (argv and optional stdin in,
``Result`` out), so unit tests pass a fake and need no root; ``run_command`` is the real one.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

COMMAND_TIMEOUT_S: Final = 30.0
"""Bound on one command (``iptables -w 5`` waits at most 5 s for the lock itself)."""


@dataclass(frozen=True, slots=True)
class Result:
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Run(Protocol):
    """Runs ``argv`` (with ``stdin`` as its input, for ``iptables-restore``)."""

    def __call__(self, argv: Sequence[str], stdin: str | None = None) -> Result: ...


def run_command(argv: Sequence[str], stdin: str | None = None) -> Result:
    """Run ``argv``, capturing its output; a missing binary or a hang is a failed Result."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        return Result(127, "", f"{argv[0]}: not installed")
    except subprocess.TimeoutExpired:
        return Result(124, "", f"{argv[0]}: no answer after {COMMAND_TIMEOUT_S:g} s")
    return Result(done.returncode, done.stdout, done.stderr)
