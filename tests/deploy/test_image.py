"""The container image recipe, proven without a Docker engine: the Dockerfile's build-stage
inputs are copied as its COPY lines say (minus what .dockerignore drops), built and installed
by the same deploy/image/install.sh the build stage runs (the wheel, its runtime dependencies
only, a fresh venv), and then the runtime stage's CMD serves the embedded demo snapshot from
that venv, with nodecache from the same venv in front of it, answering real queries on
loopback.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

import kdns.cli
from tests.deploy.manifests import ROOT
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Stage:
    name: str | None
    instructions: list[tuple[str, str]]  # (INSTRUCTION, rest of the line)

    def all(self, instruction: str) -> list[str]:
        return [rest for name, rest in self.instructions if name == instruction]


def stages() -> list[Stage]:
    """The Dockerfile's stages, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    result: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            result.append(Stage(name, []))
        elif result:
            result[-1].instructions.append((instruction, rest.strip()))
    return result


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not ``--from``)."""
    found = []
    for rest in stage.all("COPY"):
        words = shlex.split(rest)
        if any(word.startswith("--from") for word in words):
            continue
        found.append((words[:-1], words[-1]))
    return found


def dockerignore() -> tuple[set[str], list[str]]:
    """(paths re-included with ``!``, ``**/`` patterns excluded again inside them)."""
    included, excluded = set(), []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line.startswith("!"):
            included.add(line[1:].rstrip("/"))
        elif line.startswith("**/"):
            excluded.append(line[3:])
    return included, excluded


def _ignored(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def build_context_copy(stage: Stage, root: Path) -> dict[str, Path]:
    """Lay the stage's COPY inputs out under ``root`` (its filesystem), as the build would."""
    included, excluded = dockerignore()
    workdir = Path("/")
    placed: dict[str, Path] = {}
    for instruction, rest in stage.instructions:
        if instruction == "WORKDIR":
            workdir = workdir / rest
        if instruction != "COPY" or "--from" in rest:
            continue
        *sources, destination = shlex.split(rest)
        target_dir = workdir / destination
        for source in sources:
            assert source in included, f"COPY {source}: excluded by .dockerignore"
            origin = ROOT / source
            if destination.endswith("/") or len(sources) > 1:
                target = target_dir / origin.name
            else:
                target = target_dir
            local = root / target.relative_to("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(
                    origin,
                    local,
                    ignore=lambda _, names: [n for n in names if _ignored(n, excluded)],
                )
            else:
                shutil.copy2(origin, local)
            placed[str(target)] = local
    return placed


@dataclass(frozen=True)
class Image:
    root: Path
    venv: Path
    install_log: str
    cmd: list[str]

    def local(self, path: str) -> Path:
        return self.root / Path(path).relative_to("/")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(PATH=f"{self.venv / 'bin'}:{os.environ['PATH']}", PYTHONUNBUFFERED="1")
        return env


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    build, runtime = stages()
    assert build.name == "build"
    assert runtime.name is None
    root = tmp_path_factory.mktemp("image")
    placed = build_context_copy(build, root)
    # The build stage's one RUN after its apt-get: the install script, on container paths.
    (run,) = [r for r in build.all("RUN") if not r.startswith("apt-get")]
    script, source, venv = shlex.split(run)
    installer = next(p for target, p in placed.items() if Path(target).name == script)
    assert installer.read_bytes() == (ROOT / "deploy" / "image" / "install.sh").read_bytes()
    result = subprocess.run(
        ["sh", str(installer), str(root / source.lstrip("/")), str(root / venv.lstrip("/"))],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The runtime stage copies the venv at the same path and adds the demo snapshot.
    assert f"--from=build {venv} {venv}" in runtime.all("COPY")
    build_context_copy(runtime, root)
    (cmd,) = runtime.all("CMD")
    return Image(root, root / venv.lstrip("/"), result.stdout, json.loads(cmd))


def test_the_install_reports_both_entry_points_and_the_accelerator(image: Image) -> None:
    assert "kdns 0.1.0" in image.install_log
    assert "nodecache 0.1.0" in image.install_log
    if shutil.which("gcc") or shutil.which("cc"):
        # Built into the wheel and imported from the venv, not from the source tree.
        assert f"C extension {image.venv}" in image.install_log, image.install_log


def test_only_runtime_dependencies_are_installed(image: Image) -> None:
    listed = subprocess.run(
        [str(image.venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=image.env(),
        check=True,
    )
    names = {entry["name"].lower() for entry in json.loads(listed.stdout)}
    assert {"kdns", "dnslib", "kubernetes", "cachetools", "pyyaml"} <= names
    dev_only = {"pytest", "hypothesis", "dnspython", "ruff", "mypy", "kubernetes-validate"}
    assert not names & dev_only


def _debian_package(binary: str) -> str:
    """The Debian package that ships ``binary`` on this machine (usrmerge moves paths, so
    each of the usual directories is asked)."""
    found = shutil.which(binary)
    if found is None or shutil.which("dpkg") is None:
        pytest.skip(f"{binary} or dpkg is not installed: cannot tell which package ships it")
    candidates = [found, os.path.realpath(found)]
    candidates += [f"{d}/{binary}" for d in ("/bin", "/sbin", "/usr/bin", "/usr/sbin")]
    for path in candidates:
        result = subprocess.run(
            ["dpkg", "-S", path], capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode == 0:
            return result.stdout.split(":", 1)[0]
    raise AssertionError(f"no Debian package ships {binary}")


def test_the_runtime_stage_installs_what_the_node_plumbing_runs() -> None:
    # The commands come from nodecache's own plumbing, installing and removing the rules and
    # the interface for both address families, against a recording fake of the node.
    from nodecache.node.plumbing import Plumbing
    from tests.unit.node_fakes import FakeNode

    node = FakeNode()
    plumbing = Plumbing([("169.254.20.10", 53), ("fd00::a", 53)], 9253, node)
    plumbing.install()
    plumbing.remove()
    binaries = {call[0] for call in node.calls}
    # Rules go in as iptables-restore commits, read back with iptables-save (nodecache.node).
    assert {"iptables-restore", "ip6tables-restore", "iptables-save", "ip"} <= binaries
    packages = {_debian_package(binary) for binary in binaries}
    _, runtime = stages()
    installed = {
        word
        for run in runtime.all("RUN")
        if "apt-get install" in run
        for word in run.split("apt-get install", 1)[1].split("&&")[0].split()
        if not word.startswith("-")
    }
    assert packages <= installed, f"the runtime stage lacks {packages - installed}"


@pytest.mark.parametrize("program", ["kdns", "nodecache"])
def test_entry_point_runs_from_the_venv(image: Image, program: str) -> None:
    result = subprocess.run(
        [program, "--help"], capture_output=True, text=True, timeout=30, env=image.env(),
        cwd=image.root, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout


class Process:
    """A server started from the venv; its stderr is collected for the port it logs."""

    def __init__(self, argv: list[str], image: Image) -> None:
        self.process = subprocess.Popen(
            argv, cwd=image.root, env=image.env(), stderr=subprocess.PIPE, text=True
        )
        self.log: list[str] = []
        stream = self.process.stderr
        assert stream is not None
        threading.Thread(
            target=lambda: self.log.extend(iter(stream.readline, "")), daemon=True
        ).start()

    def logged(self, pattern: str) -> int:
        def found() -> int:
            assert self.process.poll() is None, "".join(self.log)
            for line in list(self.log):
                if match := re.search(pattern, line):
                    return int(match.group(1))
            return 0

        return wait_until(found, timeout=20, message=f"no {pattern!r} in the log")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            raise


@dataclass(frozen=True)
class Servers:
    kdns: int
    nodecache: int
    health: int


def _loopback(cmd: list[str], image: Image) -> list[str]:
    """The image's CMD, with its file paths inside our root and every address on loopback:
    tests bind 127.0.0.1:0 only."""
    args = list(cmd)
    for i, arg in enumerate(args):
        if arg in ("--listen", "--health-listen"):
            args[i + 1] = "127.0.0.1:0"
        elif arg == "--manifests":
            args[i + 1] = str(image.local(args[i + 1]))
    return [*args, "--upstream", "none"]


@pytest.fixture(scope="module")
def servers(image: Image) -> Iterator[Servers]:
    # The CMD parses with kdns's own parser before it is run.
    assert image.cmd[0] == "kdns"
    kdns.cli.make_parser().parse_args(image.cmd[1:])
    cluster = Process(_loopback(image.cmd, image), image)
    cache: Process | None = None
    try:
        port = cluster.logged(r"serving on 127\.0\.0\.1:(\d+)")
        health = cluster.logged(r"health on http://127\.0\.0\.1:(\d+)")
        cache = Process(
            ["nodecache", "serve", "--listen", "127.0.0.1:0", "--cluster-upstream",
             f"127.0.0.1:{port}", "--upstream", "none", "--health-listen", "none"],
            image,
        )  # fmt: skip
        cache_port = cache.logged(r"serving on 127\.0\.0\.1:(\d+)")
        yield Servers(port, cache_port, health)
    finally:
        codes = [cluster.stop(), cache.stop() if cache else 0]
    assert codes == [0, 0], "a server did not exit cleanly on SIGTERM"


def test_kdns_from_the_venv_is_ready(servers: Servers) -> None:
    def ready() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{servers.health}/ready", timeout=2) as r:
            return bool(r.status == 200)

    assert wait_until(ready, timeout=10)


QUERIES = [
    pytest.param("cart.shop.svc.cluster.local", "A", "10.96.10.11", id="clusterip"),
    pytest.param("api.shop.svc.cluster.local", "AAAA", "fd00:10:96::20", id="aaaa"),
    pytest.param("db-0.db.data.svc.cluster.local", "A", "10.244.1.30", id="statefulset-pod"),
    pytest.param("nope.shop.svc.cluster.local", "A", None, id="nxdomain"),
]


@pytest.mark.parametrize("via", ["kdns", "nodecache"])
@pytest.mark.parametrize(("name", "qtype", "address"), QUERIES)
def test_the_installed_wheel_answers(
    servers: Servers, via: str, name: str, qtype: str, address: str | None
) -> None:
    port = servers.kdns if via == "kdns" else servers.nodecache
    reply = dns.query.udp(dns.message.make_query(name, qtype), "127.0.0.1", port=port, timeout=3)
    if address is None:
        assert reply.rcode() == dns.rcode.NXDOMAIN
        return
    assert reply.rcode() == dns.rcode.NOERROR
    answers = {item.to_text() for rrset in reply.answer for item in rrset}
    assert answers == {address}
