"""The admin tools' worked examples in nodecache/README.md are real output: each offline
``$ nodecache explain``, ``$ kdns explain`` and ``$ nodecache tune`` block is run again and must
print what the README shows (a block that starts its output with ``...`` shows the end only;
tune's plot goes to a temporary file). The live example needs running servers: not re-run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from kdns import cli as kdns_cli
from nodecache import cli as nodecache_cli

REPO = Path(__file__).resolve().parents[2]
README = REPO / "nodecache" / "README.md"
BLOCK = re.compile(r"```\n\$ ((?:nodecache|kdns) (?:explain|tune) .*?)\n```", re.S)


def examples() -> list[tuple[str, str]]:
    found = []
    for block in BLOCK.findall(README.read_text()):
        lines = block.split("\n")
        command = lines[0]
        while command.endswith("\\"):
            lines.pop(0)
            command = command[:-1] + lines[0].strip()
        if "--server" in command:
            continue
        found.append((command, "\n".join(lines[1:])))
    return found


EXAMPLES = [pytest.param(command, output, id=command.split()[1] + f"-{n}")
            for n, (command, output) in enumerate(examples())]  # fmt: skip


def test_the_readme_has_the_examples() -> None:
    commands = [command for command, _ in examples()]
    assert sum(c.startswith("nodecache explain") for c in commands) == 2
    assert sum(c.startswith("kdns explain") for c in commands) == 1
    assert sum(c.startswith("nodecache tune") for c in commands) == 1


@pytest.mark.parametrize(("command", "shown"), EXAMPLES)
def test_readme_example_is_real_output(
    command: str,
    shown: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    argv = shlex.split(command)
    if "--plot" in argv:
        argv[argv.index("--plot") + 1] = str(tmp_path / "plot.png")
    main = kdns_cli.main if argv[0] == "kdns" else nodecache_cli.main
    assert main(argv[1:]) == 0
    out = capsys.readouterr().out.rstrip("\n")
    if "--plot" in argv:
        out = "\n".join(line for line in out.split("\n") if not line.startswith("plot: "))
        shown = "\n".join(line for line in shown.split("\n") if not line.startswith("plot: "))
    if shown.startswith("...\n"):
        assert out.endswith(shown.removeprefix("...\n"))
    else:
        assert out == shown
